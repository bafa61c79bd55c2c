package cursor

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// A negative wait (a tick due before the wait's start was read) once
// panicked the counter and with it the tailer that waited, which ended
// pdsmux (bench H, a replica sending 4.9 MB frames, a loaded machine).
func TestBudgetWaited_NegativeAddsNothing(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	require.NotPanics(t, func() { m.budgetWaited(-3 * time.Millisecond) })
	m.budgetWaited(2 * time.Second)
	require.Equal(t, 2.0, promtest.ToFloat64(m.budgetWait))
}

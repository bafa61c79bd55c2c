package cursor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
)

// Processes that archive to one database share the log; one with another
// archive is refused while a claim naming the first lives, and gets the
// log once every such claim was released or lapsed.
func TestClaimArchive_OneArchivePerLog(t *testing.T) {
	l, srv := newLog(t, cursor.Config{})
	ctx := context.Background()
	claim := func(archive, process string, ttl time.Duration) string {
		other, err := l.ClaimArchive(ctx, archive, process, ttl)
		require.NoError(t, err)
		return other
	}
	require.Empty(t, claim("A", "p1", time.Minute))
	require.Empty(t, claim("A", "p2", time.Minute), "an HA pair on one archive")
	require.Empty(t, claim("A", "p1", time.Minute), "claiming again extends the claim")
	require.Equal(t, "A", claim("B", "p3", time.Minute), "another archive is refused")
	n, err := srv.Client().ZCard(ctx, "{pdsmux}:users").Result()
	require.NoError(t, err)
	require.EqualValues(t, 2, n, "the refused claim wrote nothing")

	require.NoError(t, l.ReleaseArchive(ctx, "A", "p1"))
	require.Equal(t, "A", claim("B", "p3", time.Minute), "p2 still archives to A")
	require.NoError(t, l.ReleaseArchive(ctx, "A", "p2"))
	require.Empty(t, claim("B", "p3", time.Minute), "nobody archives to A any more")

	// a killed process (no release) stops counting once its claim lapses
	require.NoError(t, l.ReleaseArchive(ctx, "B", "p3"))
	require.Empty(t, claim("C", "p4", 300*time.Millisecond))
	require.Equal(t, "C", claim("D", "p5", time.Minute))
	require.Eventually(t, func() bool { return claim("D", "p5", time.Minute) == "" }, 10*time.Second, 20*time.Millisecond,
		"the killed process's claim lapses")

	_, err = l.ClaimArchive(ctx, "D E", "p6", time.Minute)
	require.ErrorContains(t, err, "free of spaces")
}

package pdsmuxd_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil/proc"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// pdsmux status against a running setup prints the right figures, as a
// table and as JSON.
func TestStatus_ReportsARunningSetup(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 2, redisserver.Options{})
	run := e.start(e.config(), "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(4)
	e.writeCommits(200, 81)
	_, total := e.expected()
	waitLog(t, e.reader(), int64(total), 30*time.Second)
	// the tailers' cursors reach the replicas' last live seq
	require.Eventually(t, func() bool {
		st, err := pdsmuxd.ReadStatus(context.Background(), e.redis.URL(), "", "http://"+run.rt.MetricsAddr())
		return err == nil && len(st.Replicas) == 2 && st.Replicas[0].Cursor == e.replicas[0].LastLive() && st.Replicas[1].Cursor == e.replicas[1].LastLive()
	}, 10*time.Second, 50*time.Millisecond)

	out, err := exec.Command(proc.Pdsmux(t), "status", "--json", "--redis-url", e.redis.URL(), "--metrics-url", "http://"+run.rt.MetricsAddr()).Output()
	require.NoError(t, err)
	var st pdsmuxd.Status
	require.NoError(t, json.Unmarshal(out, &st))
	entries := allEntries(t, e.reader())
	require.EqualValues(t, total, st.Log.Events)
	require.Equal(t, entries[0].Seq, st.Log.OldestSeq)
	require.Equal(t, entries[len(entries)-1].Seq, st.Log.HeadSeq)
	require.EqualValues(t, 72*3600, st.Log.RetentionSeconds)
	require.Zero(t, st.Log.HeldRepos)
	require.Empty(t, st.MetricsError)
	require.Len(t, st.Replicas, 2)
	for i, r := range st.Replicas {
		require.Equal(t, e.replicas[i].Name, r.Name)
		require.NotNil(t, r.Connected)
		require.True(t, *r.Connected)
		require.NotNil(t, r.Healthy)
		require.True(t, *r.Healthy)
		require.Equal(t, e.replicas[i].LastLive(), r.Cursor)
		require.NotNil(t, r.LagSeconds)
		require.Less(t, *r.LagSeconds, 5.0)
		require.NotNil(t, r.LastEvent)
		require.WithinDuration(t, time.Now(), *r.LastEvent, time.Minute)
	}

	text, err := exec.Command(proc.Pdsmux(t), "status", "--redis-url", e.redis.URL(), "--metrics-url", "http://"+run.rt.MetricsAddr()).Output()
	require.NoError(t, err)
	require.Contains(t, string(text), "log:         "+itoa(total)+" events kept")
	for _, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, "r1 ") {
			require.Contains(t, line, " yes ")
			require.Contains(t, line, itoa(int(e.replicas[0].LastLive())))
		}
	}
	t.Logf("pdsmux status:\n%s", text)
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

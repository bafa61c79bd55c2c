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
	t.Parallel()
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
	require.Len(t, st.Processes, 1, "the running pdsmux, by its claim on the log")
	require.Contains(t, st.Processes[0].Info, "listen "+run.rt.Addr())
	require.Regexp(t, `^[0-9a-f]{32}$`, st.Processes[0].Archive)
	require.WithinDuration(t, time.Now(), st.Processes[0].Since, time.Minute)
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
	require.Contains(t, string(text), "pdsmux:      host ")
	require.Contains(t, string(text), "archive "+st.Processes[0].Archive)
	// the replica table: a row per replica, read by its header's columns
	var header []string
	rows := map[string][]string{}
	for _, line := range strings.Split(string(text), "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) > 0 && fields[0] == "REPLICA":
			header = fields
		case header != nil && len(fields) >= 4:
			rows[fields[0]] = fields
		}
	}
	require.NotNil(t, header, "a replica table header")
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	for _, h := range []string{"REPLICA", "CONNECTED", "HEALTHY", "CURSOR"} {
		require.Contains(t, col, h, "column %s in %q", h, header)
	}
	require.Len(t, rows, len(e.replicas), "one row per replica")
	for _, r := range e.replicas {
		row, ok := rows[r.Name]
		require.True(t, ok, "a row for %s", r.Name)
		require.Equal(t, "yes", row[col["CONNECTED"]], "%s connected", r.Name)
		require.Equal(t, "yes", row[col["HEALTHY"]], "%s healthy", r.Name)
		require.Equal(t, itoa(int(r.LastLive())), row[col["CURSOR"]], "%s cursor", r.Name)
	}
	t.Logf("pdsmux status:\n%s", text)
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

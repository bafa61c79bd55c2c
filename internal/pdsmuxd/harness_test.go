package pdsmuxd_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// env is a real redis-server plus fake replicas sharing one store.
type env struct {
	t        *testing.T
	dir      string // holds the libsql file
	redis    *redisserver.Server
	store    *fakepds.Store
	replicas []*fakepds.Replica
	accounts []*fakepds.Account
	bigN     int // posts bigPosts wrote so far (their rkeys go on from here)
}

func newEnv(t *testing.T, mode fakepds.Mode, n int, ro redisserver.Options) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), redis: redisserver.Start(t, ro), store: fakepds.NewStore(mode, 42)}
	for i := range n {
		r := e.store.NewReplica(fmt.Sprintf("r%d", i+1))
		require.NoError(t, r.Start(testutil.Listen(t)))
		t.Cleanup(r.Stop)
		e.replicas = append(e.replicas, r)
	}
	return e
}

// mergeConfig is config for the loss-free merge and fault suites, which
// push tens of thousands of events: the door's signature check is not
// their subject (TestDoor_*, TestCocoon_* and the repair tests keep it on,
// as production does) and under -race one k256 verify costs about 1 ms.
// The subprocess suites pass --verify-commit-signatures=false likewise.
func (e *env) mergeConfig() pdsmuxd.Config {
	cfg := e.config()
	cfg.NoSignatureCheck = true
	return cfg
}

func (e *env) config() pdsmuxd.Config {
	var reps []string
	for _, r := range e.replicas {
		reps = append(reps, r.Name+"="+r.URL())
	}
	// Loss-free merge tests must see every upstream (did, rev): repair
	// would legitimately cover some revs with one synthesized commit, so it
	// is kept out of the way here; repair tests shorten these.
	cfg := pdsmuxd.DefaultConfig()
	cfg.Replicas = reps
	cfg.RedisURL = e.redis.URL()
	cfg.ReplicaReadTimeout = 5 * time.Second
	cfg.HealthInterval = time.Second
	cfg.HoldTimeout = time.Minute
	cfg.ScanInterval = time.Hour
	cfg.DBURL = "file:" + filepath.Join(e.dir, "pdsmux.db")
	cfg.LogFormat = "text"
	cfg.PLCURL = "http://127.0.0.1:1" // never the real PLC; Options carry the store's directory and ages
	return cfg
}

// args turns the config into pdsmux serve flags.
func (e *env) args(listen, metrics string) []string {
	a := []string{"serve", "--redis-url", e.redis.URL(), "--listen", listen, "--metrics-listen", metrics,
		"--db-url", "file:" + filepath.Join(e.dir, "pdsmux.db"),
		"--replica-read-timeout", "5s", "--log-format", "text", "--hold-timeout", "1m", "--scan-interval", "1h",
		"--verify-commit-signatures=false",
		// never the real PLC from a test: a closed loopback port (tests
		// that need PLC pass their own --plc-url after these)
		"--plc-url", "http://127.0.0.1:1"}
	for _, r := range e.replicas {
		a = append(a, "--replica", r.Name+"="+r.URL())
	}
	return a
}

// logPaths maps test/name to an in-process pdsmux's log file (tests run
// in parallel).
var logPaths sync.Map

// running is an in-process pdsmux.
type running struct {
	rt     *pdsmuxd.Runtime
	cancel context.CancelFunc
	done   chan error
}

// start runs pdsmux in-process; opts adjust its Options (e.g. a shorter
// reconnect backoff cap).
func (e *env) start(cfg pdsmuxd.Config, name string, opts ...func(*pdsmuxd.Options)) *running {
	e.t.Helper()
	logPath := filepath.Join(e.t.TempDir(), name+".log")
	logPaths.Store(e.t.Name()+"/"+name, logPath)
	f, err := os.Create(logPath)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { f.Close() })
	testutil.DumpOnFailure(e.t, name, logPath)
	o := pdsmuxd.Options{
		Logger:          slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Listener:        testutil.Listen(e.t),
		MetricsListener: testutil.Listen(e.t),
		Directory:       e.store.Directory(),
		Age:             e.store,
		// the claim's start-up wait is TestStart_TwoDatabasesOnOneLog's
		// subject, not these suites'
		ClaimSettle: -1,
	}
	for _, opt := range opts {
		opt(&o)
	}
	rt, err := pdsmuxd.Build(context.Background(), cfg, o)
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{rt: rt, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- rt.Run(ctx) }()
	e.t.Cleanup(r.stop)
	return r
}

// stopped waits up to within for Run to return on its own, closes the
// runtime and returns Run's error; the test fails with msg if Run does
// not return.
func (r *running) stopped(t *testing.T, within time.Duration, msg string) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.cancel = nil // Run is over: stop has nothing left to do
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.rt.Close(ctx)
		return err
	case <-time.After(within):
		t.Fatal(msg)
		return nil
	}
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	<-r.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.rt.Close(ctx)
}

// reader is a Log for checking what Redis holds.
func (e *env) reader() *cursor.Log {
	l, err := cursor.New(e.redis.Client(), cursor.Config{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(e.t, err)
	return l
}

func (e *env) createAccounts(n int) {
	for i := range n {
		r := e.replicas[i%len(e.replicas)]
		a, err := r.CreateAccount(fmt.Sprintf("user%03d.test", i))
		require.NoError(e.t, err)
		e.accounts = append(e.accounts, a)
	}
}

// writeCommits makes n single-record commits, spread over the accounts and
// replicas at random.
func (e *env) writeCommits(n int, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, 1))
	for i := range n {
		a := e.accounts[rnd.IntN(len(e.accounts))]
		r := e.replicas[rnd.IntN(len(e.replicas))]
		_, _, err := r.Write(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post",
			Rkey: fmt.Sprintf("s%d-%06d", seed, i), Record: fakepds.Post("post", time.Now())})
		require.NoError(e.t, err)
	}
}

// chaos kicks random replicas' subscribers until stop is closed.
func (e *env) chaos(stop <-chan struct{}, seed uint64) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rnd := rand.New(rand.NewPCG(seed, 2))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(20+rnd.IntN(80)) * time.Millisecond):
				e.replicas[rnd.IntN(len(e.replicas))].Kick()
			}
		}
	}()
	return &wg
}

type key struct{ did, rev string }

// expected lists what the store emitted (what a loss-free merge must hold).
func (e *env) expected() (commits map[key]bool, total int) {
	commits = map[key]bool{}
	for _, b := range e.store.Events() {
		in, err := frame.Parse(b, 0)
		require.NoError(e.t, err)
		if in.Kind == frame.KindCommit || in.Kind == frame.KindSync {
			commits[key{in.DID, in.Rev}] = true
		}
		total++
	}
	return commits, total
}

func allEntries(t *testing.T, l *cursor.Log) []cursor.Entry {
	t.Helper()
	var out []cursor.Entry
	after := int64(0)
	for {
		es, err := l.Range(context.Background(), after, 2000)
		require.NoError(t, err)
		if len(es) == 0 {
			return out
		}
		out = append(out, es...)
		after = es[len(es)-1].Seq
	}
}

// waitLog waits until the log holds n entries.
func waitLog(t *testing.T, l *cursor.Log, n int64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var got int64
	for time.Now().Before(deadline) {
		b, err := l.Bounds(context.Background())
		if err == nil {
			got = b.Length
			if got >= n {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	held, _ := l.HeldRepos(context.Background())
	t.Errorf("log holds %d entries after %s, want %d; %d repos have held commits", got, within, n, held)
	dids, _ := l.DueHolds(context.Background(), time.Now().Add(time.Hour), 10)
	for _, d := range dids {
		hs, _ := l.Holds(context.Background(), d)
		st, _ := l.RepoStates(context.Background(), d)
		t.Logf("held for %s (log at %+v): %+v", d, st, hs)
	}
}

// checkLog asserts the merge invariants over everything in the log: every
// wanted (did, rev) exactly once, nothing else, seq strictly increasing,
// each repo's revs in order.
func checkLog(t *testing.T, entries []cursor.Entry, want map[key]bool) {
	t.Helper()
	seen := map[key]int{}
	lastRev := map[string]string{}
	var prev int64
	for _, e := range entries {
		require.Greater(t, e.Seq, prev, "seq strictly increasing")
		prev = e.Seq
		in, err := frame.Parse(e.Frame, 0)
		require.NoError(t, err)
		require.EqualValues(t, e.Seq, in.Seq, "stored frame carries its seq")
		if e.Kind != "c" && e.Kind != "s" {
			continue
		}
		k := key{e.DID, e.Rev}
		seen[k]++
		require.Greater(t, e.Rev, lastRev[e.DID], "revs of %s in order", e.DID)
		lastRev[e.DID] = e.Rev
	}
	var missing, doubled, extra []key
	for k := range want {
		switch seen[k] {
		case 0:
			missing = append(missing, k)
		case 1:
		default:
			doubled = append(doubled, k)
		}
	}
	for k := range seen {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i].rev < missing[j].rev })
	require.Empty(t, missing, "lost (did, rev)")
	require.Empty(t, doubled, "doubled (did, rev)")
	require.Empty(t, extra, "unexpected (did, rev)")
	t.Logf("log: %d entries, %d distinct (did, rev), each once", len(entries), len(seen))
}

// waitConnected waits until every tailer of rt has a firehose session.
func waitConnected(t *testing.T, rt *pdsmuxd.Runtime) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		h, _ := rt.CheckHealth(context.Background())
		all := len(h.Replicas) > 0
		for _, s := range h.Replicas {
			all = all && s == "connected"
		}
		if all {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h, _ := rt.CheckHealth(context.Background())
	t.Fatalf("replicas not all connected: %+v", h)
}

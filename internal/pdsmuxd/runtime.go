package pdsmuxd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/pdsmux/pdsmux/internal/crawl"
	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fanout"
	"github.com/pdsmux/pdsmux/internal/pool"
	"github.com/pdsmux/pdsmux/internal/proxy"
	"github.com/pdsmux/pdsmux/internal/repair"
	"github.com/pdsmux/pdsmux/internal/route"
	"github.com/pdsmux/pdsmux/internal/store"
	"github.com/pdsmux/pdsmux/internal/tail"
	"github.com/pdsmux/pdsmux/internal/verify"
	"github.com/pdsmux/pdsmux/internal/xrpcerr"
)

// Options are test seams, kept out of the operator's Config.
type Options struct {
	Logger          *slog.Logger
	Listener        net.Listener // instead of binding Config.Listen
	MetricsListener net.Listener // instead of binding Config.MetricsListen
	// Directory resolves DIDs for commit signature checks, instead of
	// Config.PLCURL.
	Directory identity.Directory
	// Age dates DIDs to tell new repos from old ones, instead of
	// Config.PLCURL's audit log.
	Age repair.AccountAge
	// IdleTimeout replaces DefaultIdleTimeout on the main listener.
	IdleTimeout time.Duration
	// ReplicaBackoffMax caps the wait between reconnects to a replica
	// (tail.Config.BackoffMax; 0: tail.DefaultBackoffMax, 30 s). Fault
	// tests lower it so an outage reaches the cap in seconds.
	ReplicaBackoffMax time.Duration
	// ArchiveBufferBytes is the archiver's buffer budget, instead of the
	// one derived from the memory budget (an eighth of the log's).
	ArchiveBufferBytes int
	// ClaimSettle replaces claimSettle, the wait of a pdsmux starting on a
	// Redis without pdsmux's state before it claims the log again and
	// restores (claim.go); negative: no wait. Suites whose subject is not
	// the claim set it so that every first start is not 2 s longer.
	ClaimSettle time.Duration
	// RepairClock is the repair loop's clock (repair.Config.Now), instead
	// of time.Now: hold deadlines and back-off are then stepped by the test.
	RepairClock func() time.Time
}

// DefaultIdleTimeout closes a keep-alive connection idle this long on the
// main listener: longer than the 2 min Caddy keeps idle upstream
// connections, so Caddy closes first and never sends on a connection
// pdsmux is closing. Websockets (subscribeRepos) are hijacked connections,
// which net/http no longer times out.
const DefaultIdleTimeout = 150 * time.Second

// Runtime is a built pdsmux.
type Runtime struct {
	s   *settings
	log *slog.Logger
	reg *prometheus.Registry

	rdb     redis.UniversalClient
	events  *cursor.Log
	waited  *cursor.Replicated // nil without --redis-wait-replicas
	tailers []*tail.Tailer
	pool    *pool.Pool
	bc      *fanout.Broadcaster
	fan     *fanout.Server
	repair  *repair.Repairer
	crawl   *crawl.Requester
	db      *store.Store
	arch    *store.Archiver
	rec     *reconciler

	// the log's claim (claim.go)
	claimMu   sync.Mutex
	claim     cursor.Claim
	claimedAt time.Time // when the last claim that succeeded was sent
	// claimPaused makes every claim fail, as while the process is paused
	// or cut off from Redis (a test seam: export_test.go)
	claimPaused bool

	httpSrv    *http.Server
	metricsSrv *http.Server
	ln, mln    net.Listener

	// running is Run's cancel and end, so that Close stops Run and waits
	// for it (the archiver's last flush) before closing the stores.
	runMu     sync.Mutex
	stopRun   context.CancelFunc
	runDone   chan struct{}
	stopped   string // why Run returned, for Close's "stopped" line
	runFailed bool   // Run returned an error: the "stopped" line is a warning
}

// Build validates cfg and constructs every component. It binds the
// listeners (so a port in use fails here) but starts nothing.
func Build(ctx context.Context, cfg Config, opts Options) (_ *Runtime, err error) {
	s, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = NewLogger(os.Stderr, s.LogFormat, s.logLevel)
	}
	rt := &Runtime{s: s, log: logger, reg: newRegistry(s.mem.Budget)}
	defer func() { // a partial build releases what it opened
		if err != nil {
			rt.closeResources()
		}
	}()

	rt.rdb = s.newRedis()
	redisDown, err := checkRedis(ctx, rt.rdb, s.RedisURL, s.redisLog, logger)
	if err != nil {
		return nil, err
	}
	rt.events, err = cursor.New(rt.rdb, cursor.Config{
		Prefix: s.RedisPrefix, HoldTimeout: s.HoldTimeout, DedupTTL: s.DedupTTL,
		Retention: s.Retention, MaxEntries: s.MaxEntries, MaxBytes: s.mem.LogBytes,
	}, cursor.NewMetrics(rt.reg), logger)
	if err != nil {
		return nil, err
	}

	// One identity cache for the door and repair: signatures are checked
	// against the DID's current key.
	var dir identity.Directory
	switch {
	case s.NoSignatureCheck:
	case opts.Directory != nil:
		dir = opts.Directory
	default:
		dir = identity.NewCacheDirectory(&identity.BaseDirectory{
			PLCURL:                 s.PLCURL,
			HTTPClient:             http.Client{Timeout: 10 * time.Second, Transport: newTransport()},
			SkipHandleVerification: true,
			UserAgent:              s.UserAgent,
		}, 100_000, 10*time.Minute, time.Minute, time.Minute)
	}
	door := verify.New(dir, verify.NewMetrics(rt.reg), nil)

	tm := tail.NewMetrics(rt.reg)
	var eps []pool.Endpoint
	for _, r := range s.replicas {
		t, err := tail.New(tail.Config{
			Name: r.Name, URL: r.WS, MaxFrameBytes: s.MaxFrameBytes, QueueBytes: s.mem.ReplicaQueueBytes,
			ReadTimeout: s.ReplicaReadTimeout, BackoffMax: opts.ReplicaBackoffMax,
			UserAgent: s.UserAgent, Door: door,
			Regressed: func(ctx context.Context) error { return rt.rec.regressed(ctx) },
		}, rt.events, tm, logger)
		if err != nil {
			return nil, err
		}
		rt.tailers = append(rt.tailers, t)
		eps = append(eps, pool.Endpoint{Name: r.Name, URL: r.HTTP})
	}
	httpClient := &http.Client{Transport: newTransport()}
	rt.pool = pool.New(pool.Config{Interval: s.HealthInterval}, eps, httpClient, rt.reg, logger)
	px := proxy.New(rt.pool, httpClient.Transport, rt.reg, logger)

	if rt.db, err = store.Open(ctx, s.DBURL, s.DBAuthToken); err != nil {
		return nil, bad("db-url", s.DBURL, "%v", err)
	}
	archive, err := rt.db.ID(ctx)
	if err != nil {
		return nil, bad("db-url", s.DBURL, "%v", err)
	}
	sm := store.NewMetrics(rt.reg)
	// What the archive and subscribers read: with --redis-wait-replicas,
	// only entries that many Redis replicas hold, so a Sentinel failover
	// cannot take back what was archived or delivered.
	var reader interface {
		fanout.Source
		store.Log
	} = rt.events
	if s.RedisWaitReplicas > 0 {
		rt.waited = rt.events.Replicated(s.RedisWaitReplicas, s.RedisWaitTimeout)
		reader = rt.waited
	}
	archBytes := int(s.mem.ArchiveBytes)
	if opts.ArchiveBufferBytes > 0 {
		archBytes = opts.ArchiveBufferBytes
	}
	rt.arch = store.NewArchiver(rt.db, reader, store.ArchiverConfig{Retention: s.ArchiveRetention, BufferBytes: archBytes}, sm, logger)
	rt.rec = &reconciler{log: rt.events, st: rt.db, arch: rt.arch, m: sm, lg: logger.With("component", "reconcile"), claim: rt.claimLog, archive: archive, settle: settleOf(opts.ClaimSettle),
		dedupTTL: rt.events.Config().DedupTTL, ready: make(chan struct{}),
		resync: func() {
			for _, t := range rt.tailers {
				t.Resync()
			}
		}}

	fm := fanout.NewMetrics(rt.reg)
	// Subscribers get an entry only once the archive has read it (I7).
	rt.bc = fanout.NewBroadcaster(reader, rt.arch, fm, logger)
	rt.bc.SetMaxBatchBytes(s.mem.BatchBytes)
	rt.bc.SetStart(rt.events.Known)
	rt.fan = fanout.NewServer(fanout.Config{QueueLen: s.SubscriberQueue, QueueBytes: s.mem.SubscriberQueueBytes, MaxSubscribers: s.MaxSubscribers, PingInterval: s.PingInterval}, reader, rt.db, rt.bc,
		func(_ context.Context, b cursor.Bounds) int64 { return rt.events.Head(b) }, fm, logger)

	born, err := rt.db.Born(ctx, time.Now())
	if err != nil {
		return nil, bad("db-url", s.DBURL, "%v", err)
	}
	age := opts.Age
	if age == nil {
		age = repair.PLCAge{URL: s.PLCURL, HTTP: &http.Client{Timeout: 10 * time.Second, Transport: newTransport()}, UserAgent: s.UserAgent}
	}
	rt.repair = repair.New(repair.Config{ScanInterval: s.ScanInterval, Grace: s.RepairGrace, UserAgent: s.UserAgent,
		NewRepos: s.NewRepos, Born: born, Age: age, Now: opts.RepairClock},
		rt.events, rt.pool, httpClient, dir, repair.NewMetrics(rt.reg), logger)
	rt.crawl = crawl.New(crawl.Config{Relays: s.relays, Hostname: s.Hostname, Interval: s.CrawlInterval, Idle: s.CrawlIdle, UserAgent: s.UserAgent},
		httpClient, rt.fan.Subscribers, rt.reg, logger)

	mux := http.NewServeMux()
	mux.Handle("GET /xrpc/com.atproto.sync.subscribeRepos", rt.afterStartup(rt.fan))
	mux.HandleFunc("GET /xrpc/_health", rt.handleHealth)
	mux.HandleFunc("GET "+AlivePath, handleAlive)
	mux.Handle(route.Path, route.New(route.NewMetrics(rt.reg))) // Caddy's forward_auth: the account's DID
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/xrpc/com.atproto.sync.") {
			px.ServeHTTP(w, r)
			return
		}
		xrpcerr.Write(w, http.StatusNotFound, "MethodNotImplemented", "pdsmux serves com.atproto.sync.* only; route other paths to the replicas")
	})
	idle := opts.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	rt.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idle}

	mmux := http.NewServeMux()
	mmux.Handle("GET /metrics", promhttp.HandlerFor(rt.reg, promhttp.HandlerOpts{Registry: rt.reg}))
	mmux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mmux.HandleFunc("GET /debug/pprof/cmdline", redactedCmdline)
	mmux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mmux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mmux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	rt.metricsSrv = &http.Server{Handler: mmux, ReadHeaderTimeout: 10 * time.Second}

	if rt.ln = opts.Listener; rt.ln == nil {
		if rt.ln, err = net.Listen("tcp", s.Listen); err != nil {
			return nil, bad("listen", s.Listen, "%v", err)
		}
	}
	if rt.mln = opts.MetricsListener; rt.mln == nil {
		if rt.mln, err = net.Listen("tcp", s.MetricsListen); err != nil {
			return nil, bad("metrics-listen", s.MetricsListen, "%v", err)
		}
	}
	// Another pdsmux on this log with another archive stops this one here
	// when Redis answers; else the start-up reconcile claims first.
	rt.claim = newClaim(archive, rt.Addr(), s.DBURL)
	if !redisDown {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err = rt.claimLog(cctx)
		cancel()
		if errors.Is(err, ErrConfig) {
			return nil, err
		}
	}
	return rt, nil
}

// startupWait is how long a subscribeRepos request made before the
// start-up reconcile waits for it before it is answered 503.
const startupWait = 15 * time.Second

// afterStartup holds requests until the start-up reconcile is done (the
// log claimed, Redis restored from the archive if it lost its state):
// before, the log may be empty or another archive's, and a subscriber
// without a cursor would be served from a head that is not the log's.
// Past startupWait it answers 503, which relays retry.
func (rt *Runtime) afterStartup(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := time.NewTimer(startupWait)
		defer t.Stop()
		select {
		case <-rt.rec.Ready():
			h.ServeHTTP(w, r)
		case <-r.Context().Done():
		case <-t.C:
			xrpcerr.Write(w, http.StatusServiceUnavailable, "NotReady",
				"pdsmux is starting: it has not claimed the log and restored Redis from its archive yet (is Redis up? see /xrpc/_health); retry")
		}
	})
}

func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	t.ResponseHeaderTimeout = 60 * time.Second
	return t
}

// ShutdownTimeout is the validated Config.ShutdownTimeout (the default
// when it was zero): how long Close may take.
func (rt *Runtime) ShutdownTimeout() time.Duration { return rt.s.ShutdownTimeout }

// MemoryLimit is the Go heap's share of --memory-budget, for GOMEMLIMIT
// (runtime/debug.SetMemoryLimit): the process sets it, not Build, so
// several runtimes in one test binary leave the limit alone.
func (rt *Runtime) MemoryLimit() int64 { return rt.s.mem.GoLimit }

// Addr is the bound address of the main listener.
func (rt *Runtime) Addr() string { return rt.ln.Addr().String() }

// MetricsAddr is the bound address of the metrics listener.
func (rt *Runtime) MetricsAddr() string { return rt.mln.Addr().String() }

// Run runs every component until ctx ends or one fails. Cancellation is
// not an error.
func (rt *Runtime) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rt.runMu.Lock()
	if rt.runDone != nil {
		rt.runMu.Unlock()
		return errors.New("pdsmux: Run called twice")
	}
	rt.stopRun, rt.runDone = cancel, make(chan struct{})
	done := rt.runDone
	rt.runMu.Unlock()
	defer close(done)
	rt.log.Info("pdsmux starting", "version", Version, "listen", rt.Addr(), "metrics", rt.MetricsAddr(),
		"redis", rt.s.redisLog, "db", rt.db.Name(), "archive", rt.claim.Archive, "replicas", len(rt.tailers), "memory", rt.s.mem.String())
	g, gctx := errgroup.WithContext(ctx)
	run := func(name string, f func(context.Context) error) {
		g.Go(func() (err error) {
			defer func() {
				if p := recover(); p != nil {
					stack := debug.Stack()
					err = fmt.Errorf("%s panicked: %v\n%s", name, p, stack)
					rt.log.Error("component panicked", "component", name, "panic", fmt.Sprint(p), "stack", string(stack))
				}
			}()
			// After the stop, only an archive left unwritten is an
			// error; the rest is the cancellation itself.
			if err := f(gctx); err != nil && (gctx.Err() == nil || errors.Is(err, store.ErrUnwritten)) {
				if errors.Is(err, ErrConfig) {
					return err // names the setting: the component adds nothing
				}
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	// Nothing appends before the start-up reconcile: a Redis that lost its
	// state must get its repo revs and cursors back first.
	afterReconcile := func(f func(context.Context) error) func(context.Context) error {
		return func(ctx context.Context) error {
			select {
			case <-rt.rec.Ready():
				return f(ctx)
			case <-ctx.Done():
				return nil
			}
		}
	}
	run("reconcile", rt.rec.run)
	for _, t := range rt.tailers {
		run("tail "+t.Name(), afterReconcile(t.Run))
	}
	// The broadcaster starts after the start-up reconcile too: it starts
	// above what the archive holds (the floor the reconcile raises), so a
	// Redis that lost everything while pdsmux was stopped does not look
	// like entries lost before live subscribers had them (recall).
	run("broadcaster", afterReconcile(rt.bc.Run))
	run("archiver", rt.arch.Run)
	run("health checks", rt.pool.Run)
	run("replica names", rt.publishReplicas)
	// Nothing trims before the start-up reconcile either: it claims the
	// log first, and a pdsmux that another one's claim refuses must not
	// drop what that one's archive has not written.
	run("trimmer", afterReconcile(rt.trimLoop))
	// The byte budget never drops what live subscribers have not had nor
	// what the archive has not written (TrimBound), except while the
	// archive is more than its buffer behind (the database down): then
	// what the budget drops before the archive reads it is recorded as an
	// archive hole (pdsmux_archive_lost_total). At its budget it asks the
	// archive to write now. Appends wait while what the live stream has
	// not read (above the broadcaster's head) fills it.
	run("log byte budget", afterReconcile(func(ctx context.Context) error {
		return rt.events.RunBudget(ctx, func() int64 {
			h, b := rt.bc.Head(), rt.arch.TrimBound()
			if b < h {
				rt.arch.Kick()
			}
			return min(h, b)
		}, rt.bc.Head)
	}))
	run("repair", afterReconcile(rt.repair.Run))
	run("crawl", rt.crawl.Run)
	serve := func(name string, srv *http.Server, ln net.Listener) {
		run(name, func(ctx context.Context) error {
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			select {
			case err := <-errc:
				if errors.Is(err, http.ErrServerClosed) {
					return nil
				}
				return err
			case <-ctx.Done():
				return nil
			}
		})
	}
	serve("http server", rt.httpSrv, rt.ln)
	serve("metrics server", rt.metricsSrv, rt.mln)
	err := g.Wait()
	reason := "closed" // Close cancelled Run
	switch {
	case err != nil:
		reason = err.Error()
	case ctx.Err() != nil && context.Cause(ctx) != context.Canceled:
		reason = context.Cause(ctx).Error() // e.g. "terminated signal received"
	}
	rt.runMu.Lock()
	rt.stopped, rt.runFailed = reason, err != nil
	rt.runMu.Unlock()
	if ctx.Err() != nil && err == nil {
		return nil
	}
	return err
}

func (rt *Runtime) trimLoop(ctx context.Context) error {
	t := time.NewTicker(DefaultTrimInterval)
	defer t.Stop()
	var overWarned time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			// The age trim never passes what the archive has written, and
			// no trim what live subscribers have not had.
			n, over, err := rt.events.Trim(ctx, time.Now(), rt.arch.Durable(), rt.bc.Head())
			switch {
			case err != nil:
				rt.log.Warn("trimming the log failed", "component", "trim", "err", err)
			case n > 0:
				rt.log.Debug("trimmed the log", "component", "trim", "entries", n)
			}
			if over > rt.s.MaxEntries/10 && time.Since(overWarned) > time.Hour {
				overWarned = time.Now()
				rt.log.Warn("the log holds more entries than --max-entries because subscribers have not had them yet (delivery held back, e.g. for --redis-wait-replicas); they are kept (appends wait once a sixteenth of --log-max-bytes is undelivered)",
					"component", "trim", "over", over, "max_entries", rt.s.MaxEntries)
			}
		}
	}
}

// Close stops accepting, tells subscribers the server is going away, and
// releases every resource, within ctx.
func (rt *Runtime) Close(ctx context.Context) error {
	var errs []error
	if err := rt.fan.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("closing subscribers: %w", err))
	}
	rt.runMu.Lock()
	stop, done := rt.stopRun, rt.runDone
	rt.runMu.Unlock()
	if done != nil {
		stop()
		select {
		case <-done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("waiting for the components to stop: %w", ctx.Err()))
		}
	}
	if err := rt.httpSrv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http server shutdown: %w", err))
	}
	if err := rt.metricsSrv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("metrics server shutdown: %w", err))
	}
	rt.closeResources()
	rt.runMu.Lock()
	reason, runFailed := rt.stopped, rt.runFailed
	rt.runMu.Unlock()
	if reason == "" {
		reason = "closed"
	}
	err := errors.Join(errs...)
	if err != nil || runFailed {
		rt.log.Warn("stopped", "reason", reason, "err", err)
	} else {
		rt.log.Info("stopped", "reason", reason)
	}
	return err
}

func (rt *Runtime) closeResources() {
	if rt.ln != nil {
		rt.ln.Close()
	}
	if rt.mln != nil {
		rt.mln.Close()
	}
	if rt.rdb != nil {
		rt.releaseLog()
		rt.rdb.Close()
	}
	if rt.db != nil {
		rt.db.Close()
	}
}

// NewLogger builds the process logger.
func NewLogger(w *os.File, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

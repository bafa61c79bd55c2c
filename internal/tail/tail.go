package tail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/gorilla/websocket"
	"golang.org/x/sync/semaphore"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/verify"
)

// Defaults for Config.
const (
	DefaultMaxFrameBytes = 5_000_000 // what the indigo relay accepts
	DefaultReadTimeout   = 60 * time.Second
	DefaultBackoffMin    = 500 * time.Millisecond
	DefaultBackoffMax    = 30 * time.Second
	// DefaultQueueBytes bounds the bytes of frames read from one replica
	// but not yet appended (the batch being appended included).
	DefaultQueueBytes = 16 << 20
	// queueFrames also bounds them in number, for tiny frames: two full
	// batches (cursor.MaxBatch), so the reader stays a batch ahead of the
	// append. The queue's slots are allocated up front (about 440 bytes
	// each, whatever the frames' size), so more would only cost memory.
	queueFrames = 2 * cursor.MaxBatch
	// SubscribePath is the firehose endpoint.
	SubscribePath = "/xrpc/com.atproto.sync.subscribeRepos"
	// quietAfter: once no byte of a message has come from the replica for
	// this long and everything read is appended, pdsmux holds all the
	// replica sent and the lag gauge reads 0.
	quietAfter = 2 * time.Second
)

// Sink receives a replica's events in stream order. *cursor.Log is one.
type Sink interface {
	// Cursor returns where to resume the replica.
	Cursor(ctx context.Context, replica string) (cursor.ReplicaCursor, error)
	// Append records events in order and moves the replica's stored
	// cursor past them, never past an event not yet recorded (one or
	// more atomic steps); see cursor.Log.Append for expect and for what
	// an error leaves. It may wait for the log's readers (its byte
	// budget): this replica is then not read meanwhile.
	Append(ctx context.Context, replica string, expect int64, evs []cursor.Event) (cursor.Batch, error)
	// ResetCursor forgets the replica's cursor.
	ResetCursor(ctx context.Context, replica string) error
}

// Door checks an upstream event before it is offered to the log (a
// *verify.Verifier is one). An error refuses the event: it is not
// appended, and its repo is flagged for repair from the replica's signed
// head; verify.ReasonOf(err) labels the refusal.
type Door interface {
	Check(ctx context.Context, b []byte, in *frame.Info) error
}

// Config of one Tailer.
type Config struct {
	Name          string // replica name, used in logs and metric labels
	URL           string // ws:// or wss:// base URL of the replica (no path)
	MaxFrameBytes int
	// QueueBytes bounds the bytes of frames read but not yet appended
	// (at most queueFrames of them). When they are all taken the reader
	// stops reading this replica, and TCP pushes back on it alone; a
	// frame larger than QueueBytes is read when nothing else waits.
	QueueBytes  int64
	ReadTimeout time.Duration
	BackoffMin  time.Duration
	BackoffMax  time.Duration
	UserAgent   string
	Door        Door // nil: events are offered as they come
	// Regressed, if set, runs after a session ended because the log
	// found Redis had lost acknowledged writes (cursor.ErrCursorRegressed,
	// cursor.ErrLostWrites),
	// before the next session reads its cursor: the daemon restores Redis
	// from its durable checkpoint there. An error is logged, and the next
	// session goes ahead (the log's own checks stop it again if needed).
	Regressed func(context.Context) error
}

// Tailer follows one replica.
type Tailer struct {
	cfg    Config
	sink   Sink
	log    *slog.Logger
	m      *replicaMetrics
	dialer *websocket.Dialer

	connected atomic.Bool
	lastEvent atomic.Int64  // unix ms of the last appended event's arrival
	lastRead  atomic.Int64  // unix ns of the last message byte read from the replica
	drainedAt atomic.Int64  // unix ns of the last append that left nothing read and unappended; 0: it left some
	resync    chan struct{} // Resync's request to end the session

	limiter logLimiter
}

// New returns a Tailer; it does not connect until Run.
func New(cfg Config, sink Sink, m *Metrics, logger *slog.Logger) (*Tailer, error) {
	if cfg.Name == "" {
		return nil, errors.New("tail: replica name is empty")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return nil, fmt.Errorf("tail: replica %s: URL %q must be ws:// or wss:// with a host", cfg.Name, cfg.URL)
	}
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = DefaultQueueBytes
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.BackoffMin)
	}
	return &Tailer{
		cfg: cfg, sink: sink, m: m.forReplica(cfg.Name),
		log: logger.With("component", "tail", "replica", cfg.Name),
		dialer: &websocket.Dialer{
			HandshakeTimeout: 15 * time.Second,
			ReadBufferSize:   64 << 10,
			Proxy:            http.ProxyFromEnvironment,
		},
		limiter: logLimiter{every: time.Minute, last: map[string]time.Time{}, suppressed: map[string]int{}},
		resync:  make(chan struct{}, 1),
	}, nil
}

// Resync ends the open session, if any, so the next one re-reads the
// stored cursor: the daemon calls it after restoring Redis from the
// durable checkpoint, whose cursor may be below where this session is
// (below an event that was only held in Redis). It does not wait.
func (t *Tailer) Resync() {
	select {
	case t.resync <- struct{}{}:
	default:
	}
}

// errResync ends a session on Resync.
var errResync = errors.New("the log was restored from the durable checkpoint; re-reading the stored cursor")

// Name is the replica's name.
func (t *Tailer) Name() string { return t.cfg.Name }

// Connected reports whether a firehose session is open.
func (t *Tailer) Connected() bool { return t.connected.Load() }

// LastEvent is when the last event from the replica was appended.
func (t *Tailer) LastEvent() time.Time {
	ms := t.lastEvent.Load()
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// sessionError carries why a session ended, for logs and metrics.
type sessionError struct {
	reason string
	err    error
}

func (e *sessionError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *sessionError) Unwrap() error { return e.err }

func endSession(reason string, err error) error { return &sessionError{reason: reason, err: err} }

// Run follows the replica until ctx ends. It returns nil on cancellation
// and never returns for replica or Redis trouble: it retries.
func (t *Tailer) Run(ctx context.Context) error {
	go t.lagWhenQuiet(ctx)
	backoff := t.cfg.BackoffMin
	for {
		start := time.Now()
		progressed, err := t.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		reason := "closed"
		var se *sessionError
		if errors.As(err, &se) {
			reason = se.reason
		}
		t.m.reconnect(reason)
		if progressed || time.Since(start) > time.Minute {
			backoff = t.cfg.BackoffMin
		}
		if (errors.Is(err, cursor.ErrCursorRegressed) || errors.Is(err, cursor.ErrLostWrites)) && t.cfg.Regressed != nil {
			t.log.Warn("Redis lost writes acknowledged for this replica; restoring it before reconnecting", "err", err)
			if rerr := t.cfg.Regressed(ctx); rerr != nil {
				t.log.Error("restoring Redis after it lost writes failed", "err", rerr)
			}
		}
		if errors.Is(err, ErrFutureCursor) {
			t.log.Warn("replica refused our cursor as in the future (its event table was reset); resetting the stored cursor and resuming live", "err", err)
			if rerr := t.sink.ResetCursor(ctx, t.cfg.Name); rerr != nil {
				t.log.Error("reset replica cursor", "err", rerr)
			}
		} else {
			t.limiter.do("session:"+reason, func(n int) {
				t.log.Warn("replica firehose session ended; reconnecting", "reason", reason, "err", err, "backoff", backoff, "suppressed", n)
			})
		}
		// full jitter in [backoff/2, backoff)
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
		backoff = min(backoff*2, t.cfg.BackoffMax)
	}
}

func (t *Tailer) streamURL(rc cursor.ReplicaCursor) string {
	u := t.cfg.URL + SubscribePath
	if rc.OK {
		u += "?cursor=" + strconv.FormatInt(rc.Resume, 10)
	}
	return u
}

type item struct {
	ev   cursor.Event
	time string
	// size is what the item holds of the session's byte budget.
	size int64
	// the frame and its parse, for the door
	b  []byte
	in frame.Info
}

// session runs one connection. progressed reports whether any event was
// appended.
func (t *Tailer) session(ctx context.Context) (progressed bool, err error) {
	select { // a restore before this point is already in the cursor read below
	case <-t.resync:
	default:
	}
	rc, err := t.sink.Cursor(ctx, t.cfg.Name)
	if err != nil {
		return false, endSession("sink", err)
	}
	hdr := http.Header{}
	if t.cfg.UserAgent != "" {
		hdr.Set("User-Agent", t.cfg.UserAgent)
	}
	conn, resp, err := t.dialer.DialContext(ctx, t.streamURL(rc), hdr)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		return false, endSession("dial", err)
	}
	defer conn.Close()
	t.connected.Store(true)
	t.m.setConnected(true)
	defer func() { t.connected.Store(false); t.m.setConnected(false) }()
	if rc.OK {
		t.log.Info("connected to replica firehose", "cursor", rc.Resume)
	} else {
		t.log.Info("connected to replica firehose live (no stored cursor)")
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	queue := make(chan item, queueFrames)
	// room bounds the bytes of items read and not yet appended: the reader
	// takes an item's size before queueing it, the appender gives it back
	// once the item's batch is appended
	room := semaphore.NewWeighted(t.cfg.QueueBytes)
	var queued atomic.Int64
	defer t.m.setQueuedBytes(0)
	readErr := make(chan error, 1)
	var resynced atomic.Bool
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // cancellation unblocks a reader waiting for the replica
		defer wg.Done()
		select {
		case <-sctx.Done():
		case <-t.resync:
			resynced.Store(true)
		}
		conn.Close()
	}()
	go func() {
		defer wg.Done()
		err := t.readLoop(sctx, conn, queue, room, &queued)
		readErr <- err
		close(queue)
	}()
	go func() {
		defer wg.Done()
		t.pingLoop(sctx, conn)
	}()
	defer wg.Wait()
	defer cancel()

	expect := int64(-1)
	if rc.OK {
		expect = rc.Stored
	}
	// cur is the batch being appended, next the one read behind it: its
	// door runs while cur is appended (the door is CPU, the append
	// mostly a wait on Redis), so under load neither waits for the
	// other. A quiet replica's batch is checked in this goroutine as it
	// comes, with no hand-over.
	cur := make([]item, 0, cursor.MaxBatch)
	next := make([]item, 0, cursor.MaxBatch)
	evs := make([]cursor.Event, 0, cursor.MaxBatch)
	for {
		if len(cur) == 0 {
			it, ok := <-queue
			if !ok {
				err := <-readErr
				if resynced.Load() {
					err = endSession("resync", errResync)
				}
				return progressed, err
			}
			cur = drain(queue, append(cur, it))
			t.door(ctx, cur)
		}
		next = drain(queue, next)
		var checked chan struct{}
		if len(next) > 0 {
			checked = make(chan struct{})
			go func(batch []item) {
				defer close(checked)
				t.door(ctx, batch)
			}(next)
		}
		var size int64
		evs = evs[:0]
		for _, it := range cur {
			size += it.size
			evs = append(evs, it.ev)
		}
		lastTime := cur[len(cur)-1].time
		_, err := t.sink.Append(ctx, t.cfg.Name, expect, evs)
		if checked != nil {
			<-checked // next is not touched again until its door is done
		}
		clear(cur) // the frames go with their budget
		cur = cur[:0]
		appended := expect
		for _, ev := range evs {
			appended = max(appended, ev.UpstreamSeq)
		}
		clear(evs) // read above first: the next append's expect comes from them
		room.Release(size)
		t.m.setQueuedBytes(queued.Add(-size))
		if err != nil {
			return progressed, endSession("sink", err)
		}
		progressed = true
		expect = appended
		now := time.Now()
		t.lastEvent.Store(now.UnixMilli())
		t.setLag(now, lastTime, len(queue))
		cur, next = next, cur
	}
}

// drain appends to batch what the queue holds now, without waiting, up to
// cursor.MaxBatch items. A closed queue is left for the next blocking
// receive to find.
func drain(queue <-chan item, batch []item) []item {
	for len(batch) < cursor.MaxBatch {
		select {
		case it, ok := <-queue:
			if !ok {
				return batch
			}
			batch = append(batch, it)
		default:
			return batch
		}
	}
	return batch
}

// setLag sets the lag gauges after an append: lag_events to the frames
// read and waiting, lag_seconds to the age of the last appended event
// (now minus its `time`), whether pdsmux waits on Redis (frames queue up)
// or on the replica's link (the reader is the bottleneck, the queue is
// empty, and the events that trickle in are old). lagWhenQuiet brings it
// to 0 once the replica has nothing more to send.
func (t *Tailer) setLag(now time.Time, evTime string, pending int) {
	var drained int64
	if pending == 0 {
		drained = now.UnixNano()
	}
	t.drainedAt.Store(drained)
	if t.m == nil {
		return
	}
	t.m.lagEvents.Set(float64(pending))
	ts, err := syntax.ParseDatetimeLenient(evTime)
	if err != nil {
		return
	}
	t.m.lastEventTime.Set(float64(ts.Time().UnixMilli()) / 1000)
	t.m.lagSeconds.Set(max(now.Sub(ts.Time()).Seconds(), 0))
}

// lagWhenQuiet sets lag_seconds to 0 while the replica has sent nothing
// for quietAfter and everything read before the last append was appended
// by it: pdsmux then holds all the replica has, even if the last event
// appended was old (a replay after downtime). It runs until ctx ends.
func (t *Tailer) lagWhenQuiet(ctx context.Context) {
	if t.m == nil {
		return
	}
	tick := time.NewTicker(quietAfter / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			read, drained := t.lastRead.Load(), t.drainedAt.Load()
			if drained != 0 && drained >= read && now.Sub(time.Unix(0, read)) >= quietAfter {
				t.m.lagSeconds.Set(0)
			}
		}
	}
}

// marking is a replica message's reader that notes when bytes arrive, so
// a slow link that is still delivering is not taken for a quiet one.
type marking struct {
	r  io.Reader
	at *atomic.Int64
}

func (m marking) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if n > 0 {
		m.at.Store(time.Now().UnixNano())
	}
	return n, err
}

// door checks a batch's #commit and #sync events, on every core, before
// they are offered to the log. A refused one is never appended as it is:
// the log keeps a repair flag instead, in the same step that moves the
// cursor. The calling goroutine checks too, so a batch of one (the usual
// batch below saturation) waits for no other goroutine to be scheduled.
func (t *Tailer) door(ctx context.Context, batch []item) {
	if t.cfg.Door == nil {
		return
	}
	defer func(start time.Time) { t.m.door(time.Since(start)) }(time.Now())
	errs := make([]error, len(batch))
	var next atomic.Int64
	work := func() {
		for i := int(next.Add(1) - 1); i < len(batch); i = int(next.Add(1) - 1) {
			errs[i] = t.check(ctx, &batch[i])
		}
	}
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(batch)) - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	for i, err := range errs {
		it := &batch[i]
		it.b = nil
		if err == nil {
			continue
		}
		reason := verify.ReasonOf(err)
		if reason == "" {
			reason = verify.ReasonBadCommit
		}
		it.ev.Refused, it.ev.Pre, it.ev.Suf = reason, nil, nil
		t.m.badFrame(reason)
		t.limiter.do("refused:"+reason, func(n int) {
			t.log.Warn("refused an event a strict relay would refuse; its repo will be repaired from the replica's signed head",
				"reason", reason, "did", it.in.DID, "rev", it.in.Rev, "seq", it.in.Seq, "err", err, "suppressed", n)
		})
	}
}

// check runs the door on one item. A panic inside a decoder on hostile
// input refuses the event instead of ending the process (which would
// then read the same frame again after its restart); it is logged at
// error level with the panicking goroutine's stack, at most once a
// minute (the line counts the panics it swallowed).
func (t *Tailer) check(ctx context.Context, it *item) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: the check panicked: %v", errDoorPanic, p)
			stack := debug.Stack()
			t.limiter.do("door_panic", func(n int) {
				t.log.Error("the door panicked on an event; refusing it",
					"did", it.in.DID, "rev", it.in.Rev, "seq", it.in.Seq,
					"panic", fmt.Sprint(p), "stack", string(stack), "suppressed", n)
			})
		}
	}()
	return t.cfg.Door.Check(ctx, it.b, &it.in)
}

var errDoorPanic = errors.New("tail: refused")

// reasonIdentityRebuilt counts the #identity frames verify.CleanIdentity
// rebuilt (pdsmux_replica_bad_frames_total).
const reasonIdentityRebuilt = "identity_rebuilt"

// readLoop reads frames until the connection fails or an error frame ends
// the stream.
func (t *Tailer) readLoop(ctx context.Context, conn *websocket.Conn, queue chan<- item, room *semaphore.Weighted, queued *atomic.Int64) error {
	conn.SetPongHandler(func(string) error {
		return conn.SetReadDeadline(time.Now().Add(t.cfg.ReadTimeout))
	})
	var scratch bytes.Buffer
	for {
		if err := conn.SetReadDeadline(time.Now().Add(t.cfg.ReadTimeout)); err != nil {
			return endSession("read", err)
		}
		mt, r, err := conn.NextReader()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return endSession("stalled", fmt.Errorf("%w: nothing for %s", ErrStalled, t.cfg.ReadTimeout))
			}
			return endSession("read", err)
		}
		b, tooBig, err := readMessage(marking{r, &t.lastRead}, t.cfg.MaxFrameBytes, &scratch)
		if err != nil {
			return endSession("read", err)
		}
		if mt != websocket.BinaryMessage {
			t.bad("text_message", fmt.Errorf("websocket message type %d, want binary", mt))
			continue
		}
		if tooBig {
			t.bad("too_large", fmt.Errorf("%w: more than %d bytes", frame.ErrTooLarge, t.cfg.MaxFrameBytes))
			continue
		}
		in, err := frame.Parse(b, 0)
		if err != nil {
			t.bad(parseReason(err), err)
			continue
		}
		t.m.frame(in.Kind.String(), len(b))
		if t.m != nil && in.HasSeq {
			t.m.lastSeq.Set(float64(in.Seq))
		}
		switch in.Kind {
		case frame.KindInfo:
			t.m.infoFrame(in.Name)
			t.log.Warn("replica sent #info", "name", in.Name, "message", in.Message)
			continue
		case frame.KindError:
			t.m.errorFrame(in.Name)
			if in.Name == frame.ErrNameFutureCursor {
				return endSession("future_cursor", fmt.Errorf("%w: %s", ErrFutureCursor, in.Message))
			}
			return endSession("error_frame", fmt.Errorf("%w: %s: %s", errUpstreamError, in.Name, in.Message))
		case frame.KindUnknown:
			t.limiter.do("unknown:"+in.Type, func(n int) {
				t.log.Info("passing through an event type pdsmux does not know", "type", in.Type, "suppressed", n)
			})
		}
		if in.Kind == frame.KindIdentity {
			// what a relay would pass on, before it takes queue room
			nb, nin, rebuilt, err := verify.CleanIdentity(b, &in)
			if err != nil {
				t.bad(verify.ReasonBadIdentity, err)
				continue
			}
			if rebuilt {
				t.m.badFrame(reasonIdentityRebuilt)
				t.limiter.do(reasonIdentityRebuilt, func(n int) {
					t.log.Warn("rebuilt an #identity a relay would not pass on as it came (too large, undecodable, or a handle that is no handle): forwarded with its DID, seq, time and valid handle only",
						"did", in.DID, "seq", in.Seq, "bytes", len(b), "rebuilt_bytes", len(nb), "suppressed", n)
				})
				b, in = nb, nin
			}
		}
		ev, err := cursor.NewEvent(b, &in)
		if err != nil {
			t.bad("unsequenced", err)
			continue
		}
		// wait for room: a replica sending more than pdsmux appends is
		// no longer read (its TCP window closes), the others go on
		size := min(int64(len(b)), t.cfg.QueueBytes)
		if err := room.Acquire(ctx, size); err != nil {
			return nil // cancelled
		}
		t.m.setQueuedBytes(queued.Add(size))
		select {
		case queue <- item{ev: ev, time: in.Time, size: size, b: b, in: in}:
		case <-ctx.Done():
			return nil
		}
	}
}

// readMessage reads one websocket message of at most limit bytes into
// scratch (reused from message to message) and returns an exact-size copy:
// one allocation per frame instead of io.ReadAll's doublings. A longer
// message is read to its end and discarded, so the stream goes on. A
// scratch grown past scratchKeep by a large frame is let go afterwards.
func readMessage(r io.Reader, limit int, scratch *bytes.Buffer) ([]byte, bool, error) {
	scratch.Reset()
	defer func() {
		if scratch.Cap() > scratchKeep {
			*scratch = bytes.Buffer{}
		}
	}()
	if _, err := scratch.ReadFrom(io.LimitReader(r, int64(limit)+1)); err != nil {
		return nil, false, err
	}
	if scratch.Len() <= limit {
		return bytes.Clone(scratch.Bytes()), false, nil
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, false, err
	}
	return nil, true, nil
}

// scratchKeep is the largest read buffer a tailer keeps between frames
// (bytes): most frames are a few KB, a rare large commit a few hundred.
const scratchKeep = 1 << 20

func parseReason(err error) string {
	switch {
	case errors.Is(err, frame.ErrMalformed):
		return "malformed"
	case errors.Is(err, frame.ErrTrailing):
		return "trailing"
	case errors.Is(err, frame.ErrTooLarge):
		return "too_large"
	default:
		return "shape"
	}
}

func (t *Tailer) bad(reason string, err error) {
	t.m.badFrame(reason)
	t.limiter.do("bad:"+reason, func(n int) {
		t.log.Warn("skipped a bad frame from the replica", "reason", reason, "err", err, "suppressed", n)
	})
}

func (t *Tailer) pingLoop(ctx context.Context, conn *websocket.Conn) {
	tick := time.NewTicker(t.cfg.ReadTimeout / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(10*time.Second)); err != nil {
				return
			}
		}
	}
}

// logLimiter logs a key at most once per interval, reporting how many
// repeats it swallowed.
type logLimiter struct {
	mu         sync.Mutex
	every      time.Duration
	last       map[string]time.Time
	suppressed map[string]int
}

func (l *logLimiter) do(key string, log func(suppressed int)) {
	l.mu.Lock()
	now := time.Now()
	if last, ok := l.last[key]; ok && now.Sub(last) < l.every {
		l.suppressed[key]++
		l.mu.Unlock()
		return
	}
	n := l.suppressed[key]
	l.last[key] = now
	l.suppressed[key] = 0
	l.mu.Unlock()
	log(n)
}

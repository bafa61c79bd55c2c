package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/xrpcerr"
)

// Defaults for Config.
const (
	DefaultQueueLen       = 10_000
	DefaultQueueBytes     = 32 << 20
	DefaultMaxSubscribers = 2_000
	DefaultPingInterval   = 30 * time.Second
	replayBatch           = 500
)

// Config tunes the subscribeRepos server.
type Config struct {
	QueueLen       int           // frames a subscriber may fall behind before ConsumerTooSlow
	QueueBytes     int64         // bytes (websocket frames) it may fall behind before ConsumerTooSlow; the frames are shared by all subscribers
	MaxSubscribers int           // further subscribers get HTTP 503
	PingInterval   time.Duration // websocket ping period; it sets the liveness window (see subscriber.idle)
}

func (c *Config) setDefaults() {
	if c.QueueLen <= 0 {
		c.QueueLen = DefaultQueueLen
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	if c.MaxSubscribers <= 0 {
		c.MaxSubscribers = DefaultMaxSubscribers
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
}

// HeadFunc returns the newest seq the log has ever assigned, including
// what a lost Redis can no longer show (the durable high-water mark).
type HeadFunc func(ctx context.Context, b cursor.Bounds) int64

// Archive is durable history older than Redis keeps; pdsmuxd passes
// *store.Store.
//
// Errors: any error means the archive could not answer (the database
// unreachable, locked or slow past ctx, ctx ended); the fanout matches no
// particular error and retries nothing itself. What an error costs is
// given per method. When ctx ends (the subscriber left, the server is
// shutting down) a call must return promptly, with any error: the
// session then ends for that reason (a shutdown closes with 1001 going
// away).
type Archive interface {
	// Range returns up to count entries with seq > after, oldest first;
	// fewer (none) at the end of what it holds. It is read only when the
	// Broadcaster has no Keeper (Keeper.Recall is read instead). An error
	// ends the replay: the subscriber's socket is closed without an error
	// frame; reconnecting with the last seq it got as its cursor, it
	// misses and repeats nothing.
	Range(ctx context.Context, after, count int64) ([]cursor.Entry, error)
	// Trimmed is the highest seq retention (or a recorded hole) removed
	// from the archive, 0 when none. An error is logged and costs only
	// the OutdatedCursor notice: at the start of a replay Redis's own
	// trim mark is used instead, and a replay crossing seqs the archive
	// recorded as trimmed after it began crosses them without the notice
	// (see Server.crossing).
	Trimmed(ctx context.Context) (int64, error)
}

// Server serves subscribeRepos.
type Server struct {
	cfg   Config
	src   Source
	arch  Archive
	bc    *Broadcaster
	head  HeadFunc
	log   *slog.Logger
	m     *Metrics
	upg   websocket.Upgrader
	count atomic.Int64 // sessions holding a --max-subscribers slot
	// lingering counts sessions past their close frame that wait for the
	// peer's (closeSession): at most MaxSubscribers
	lingering atomic.Int64

	mu      sync.Mutex
	subs    map[*subscriber]struct{}
	closing chan struct{}
	wg      sync.WaitGroup
}

// NewServer returns the handler. arch and head may be nil (Redis alone).
func NewServer(cfg Config, src Source, arch Archive, bc *Broadcaster, head HeadFunc, m *Metrics, logger *slog.Logger) *Server {
	cfg.setDefaults()
	if head == nil {
		head = func(_ context.Context, b cursor.Bounds) int64 { return b.Last }
	}
	s := &Server{
		cfg: cfg, src: src, arch: arch, bc: bc, head: head, m: m,
		log: logger.With("component", "fanout"),
		upg: websocket.Upgrader{
			ReadBufferSize:  1024,
			WriteBufferPool: &sync.Pool{},
			CheckOrigin:     func(*http.Request) bool { return true },
		},
		subs:    map[*subscriber]struct{}{},
		closing: make(chan struct{}),
	}
	m.watchQueues(s.maxQueued)
	return s
}

// maxQueued is the largest backlog of any subscriber, in bytes.
func (s *Server) maxQueued() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var top int64
	for sub := range s.subs {
		top = max(top, sub.q.bytes.Load())
	}
	return top
}

// Subscribers is the number of subscribers holding a --max-subscribers
// slot: open sessions, but for those that only wait for the peer to answer
// their close.
func (s *Server) Subscribers() int { return int(s.count.Load()) }

type subscriber struct {
	conn  *websocket.Conn
	q     *queue
	after int64 // highest seq sent (replay) or joined at (live)
	// told is the highest trim mark the subscriber was told OutdatedCursor
	// for, 0 when none (see crossing).
	told int64
	done chan struct{}
	// left is closed when readLoop ends: the peer closed, went away, or
	// its socket was closed.
	left chan struct{}
	// pings carries the peer's pings to the writer goroutine: it alone
	// writes to the socket, so raw frame writes never interleave with a
	// pong.
	pings chan string
	// ping ticks from the upgrade on, in replay and live alike.
	ping *time.Ticker
	// idle is how long the peer may show no sign of life (no message, no
	// pong, nothing taken off its socket) before it is dropped, plus the
	// time it needs to read what we sent (see window).
	idle time.Duration
	// written counts bytes handed (or being handed) to the socket; read
	// is the count the peer's latest pong echoed (each ping carries the
	// count at its sending, between writes, so its pong proves the peer
	// read everything before it).
	written, read atomic.Int64
	// vec is the live writer's writev vector, reused.
	vec [][]byte
	// release ends the session's claim on the server once nothing more
	// will be sent but its error and close frames: it leaves the
	// broadcaster, drops its queue and gives back its --max-subscribers
	// slot, so a peer that does not answer the close (up to closeLinger
	// twice) holds none of them; Server.lingering bounds those sessions.
	// Safe to call more than once.
	release func()
}

// newSubscriber is the state of one upgraded connection; its ping ticker
// runs from now on (stop it when the subscriber leaves).
func (s *Server) newSubscriber(conn *websocket.Conn) *subscriber {
	return &subscriber{conn: conn, q: newQueue(s.cfg.QueueLen, s.cfg.QueueBytes), done: make(chan struct{}), left: make(chan struct{}), pings: make(chan string, 1),
		ping: time.NewTicker(s.cfg.PingInterval), idle: 2 * s.cfg.PingInterval}
}

// minReadRate is the slowest reading speed (bytes/s) at which a subscriber
// is still presumed alive: its pong queues behind every frame sent before
// the ping, in both kernels' socket buffers (megabytes on a fast link).
const minReadRate = 64 << 10

// maxInFlight caps the bytes a subscriber may still be reading when a pong
// is due: more than both kernels' socket buffers hold is not in flight
// but unread by a peer that stopped (whose writes then time out).
const maxInFlight = 32 << 20

// maxChunk bounds the bytes of one write of a live backlog (a larger
// frame goes alone): each write has its own deadline, whose window counts
// the write's own bytes as unread (see window), so a subscriber that
// stops reading is cut after at most 4 s (maxChunk at minReadRate) more
// than what is already in flight allows, however much is queued for it.
const maxChunk = 256 << 10

// pong records the peer's answer to a ping sent when written was data.
func (sub *subscriber) pong(data string) {
	if n, err := strconv.ParseInt(data, 10, 64); err == nil && n > sub.read.Load() {
		sub.read.Store(n)
	}
	sub.extend()
}

// sending records n bytes about to be handed to the socket, before the
// write: the read deadline then leaves the peer the time to read them,
// and a pong that arrives while the write is under way proves only what
// was sent before its ping.
func (sub *subscriber) sending(n int64) {
	sub.written.Add(n)
	sub.extend()
}

// pingData is what the next ping carries: the bytes written so far.
func (sub *subscriber) pingData() []byte {
	return strconv.AppendInt(nil, sub.written.Load(), 10)
}

// window is how long from now the peer may show no sign of life: idle,
// plus the time a reader at minReadRate needs for the bytes it has not
// shown it read (those being written included). The read deadline and
// every write's deadline are this far away, so one rule decides both: a
// peer busy with a long backlog answers pings late, and takes a write
// late, but is not dropped, however slow down to minReadRate; one that
// stops reading or answering is, once its window is over. A live backlog
// is written in chunks of maxChunk, so what the window allows for the
// write itself stays bounded.
func (sub *subscriber) window() time.Duration {
	// what can be in flight is bounded by both kernels' socket buffers
	unread := min(max(sub.written.Load()-sub.read.Load(), 0), maxInFlight)
	return sub.idle + time.Duration(unread)*time.Second/minReadRate
}

// extend moves the read deadline to the end of the peer's window.
func (sub *subscriber) extend() {
	_ = sub.conn.UnderlyingConn().SetReadDeadline(time.Now().Add(sub.window()))
}

// deadline is when a write starting now must be done (see window); one
// that times out ends the session with errStalled.
func (sub *subscriber) deadline() time.Time {
	return time.Now().Add(sub.window())
}

// stalled marks a write that timed out: the peer took nothing for its
// liveness window (see deadline).
func stalled(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %w", errStalled, err)
	}
	return err
}

// ServeHTTP handles GET /xrpc/com.atproto.sync.subscribeRepos.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cursorArg := int64(-1)
	if c := r.URL.Query().Get("cursor"); c != "" {
		v, err := strconv.ParseInt(c, 10, 64)
		if err != nil || v < 0 {
			s.m.request("bad_cursor")
			msg := fmt.Sprintf("cursor must be a non-negative integer, got %q", truncate(c, 64))
			if errors.Is(err, strconv.ErrRange) {
				msg = fmt.Sprintf("cursor %q is out of range (at most %d)", truncate(c, 64), int64(math.MaxInt64))
			}
			xrpcerr.Write(w, http.StatusBadRequest, "InvalidRequest", msg)
			return
		}
		cursorArg = v
	}
	select {
	case <-s.closing:
		xrpcerr.Write(w, http.StatusServiceUnavailable, "ServerShuttingDown", "pdsmux is shutting down; reconnect with your cursor")
		return
	default:
	}
	if n := s.count.Add(1); n > int64(s.cfg.MaxSubscribers) {
		s.count.Add(-1)
		s.m.request("too_many")
		xrpcerr.Write(w, http.StatusServiceUnavailable, "TooManySubscribers", fmt.Sprintf("pdsmux serves at most %d subscribers", s.cfg.MaxSubscribers))
		return
	}
	slot := sync.OnceFunc(func() { s.count.Add(-1) })
	defer slot()
	if !websocket.IsWebSocketUpgrade(r) {
		s.m.request("not_websocket")
		xrpcerr.Write(w, http.StatusBadRequest, "InvalidRequest", "subscribeRepos is a websocket endpoint")
		return
	}
	conn, err := s.upg.Upgrade(w, r, nil)
	if err != nil {
		s.m.request("upgrade_failed")
		return
	}
	s.log.Info("subscriber connected", "cursor", r.URL.Query().Get("cursor"), "user_agent", truncate(r.UserAgent(), 100))
	sub := s.newSubscriber(conn)
	defer sub.ping.Stop()
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.m.subscribed(1)
	sub.release = sync.OnceFunc(func() {
		s.bc.leave(sub)
		sub.q.clear()
		s.m.subscribed(-1)
		slot()
	})
	defer func() {
		sub.release()
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
		conn.Close()
		s.wg.Done()
	}()

	// The session ends when the peer leaves (readLoop) or the server
	// closes, whatever it waits on (the archive, Redis, the queue).
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	go s.readLoop(sub, cancel)
	go func() {
		select {
		case <-s.closing:
			cancel(errClosed)
		case <-ctx.Done():
		}
	}()
	err = s.serve(ctx, sub, cursorArg)
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, errStalled) {
		err = cause
	}
	switch {
	case errors.Is(err, errStalled):
		// nothing more is written: the socket may hold part of a frame
		s.m.stalled()
		s.log.Info("dropped a subscriber that took nothing off its socket for its liveness window (two ping intervals plus the time to read at 64 KiB/s what it had not shown it read); it may reconnect with its cursor",
			"after", sub.after, "sent_bytes", sub.written.Load(), "proved_read_bytes", sub.read.Load(), "idle", sub.idle,
			"user_agent", truncate(r.UserAgent(), 100))
	case errors.Is(err, ErrTooSlow):
		s.writeFinal(sub, frame.ErrorFrame(frame.ErrNameConsumerTooSlow, fmt.Sprintf("subscriber fell more than %d frames or %d bytes behind", s.cfg.QueueLen, s.cfg.QueueBytes)), websocket.ClosePolicyViolation)
	case errors.Is(err, errClosed) || context.Cause(ctx) == errClosed:
		s.closeSession(sub, websocket.CloseGoingAway, "pdsmux shutting down")
	case errors.Is(err, errRead):
		// a read of the log or the archive failed mid-session: say so, to
		// the operator and to the subscriber, who reconnects with its
		// cursor (nothing it was sent is lost)
		s.m.readFailed()
		s.log.Warn("ended a subscriber's session: a read it needed failed; it may reconnect with its cursor",
			"after", sub.after, "err", err, "user_agent", truncate(r.UserAgent(), 100))
		s.writeFinal(sub, frame.ErrorFrame("InternalError", "pdsmux could not read the events after your position; reconnect with your cursor"), websocket.CloseInternalServerErr)
	case err != nil:
		// the peer left (a reset, a write to a closed socket)
		s.log.Debug("a subscriber's session ended", "after", sub.after, "err", err)
	}
}

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// writeFinal sends an error frame and a close with code, after which the
// session ends.
func (s *Server) writeFinal(sub *subscriber, b []byte, code int) {
	sub.release()
	sub.sending(int64(len(b)))
	_ = sub.conn.SetWriteDeadline(sub.closeDeadline())
	if sub.conn.WriteMessage(websocket.BinaryMessage, b) == nil {
		s.closeSession(sub, code, "")
	}
}

// closeLinger bounds each of the two steps of a session's close: writing
// its close frame, then waiting for the peer's. Both fit in the default
// --shutdown-timeout (10 s).
const closeLinger = 4 * time.Second

// closeDeadline is when a write that ends the session (its error frame,
// its close) must be done: the peer's liveness window, at most
// closeLinger.
func (sub *subscriber) closeDeadline() time.Time {
	d, last := sub.deadline(), time.Now().Add(closeLinger)
	if last.Before(d) {
		return last
	}
	return d
}

// closeSession ends a session with the websocket close handshake: the
// close frame gets the peer's liveness window to be written, at most
// closeLinger (a slow reader has megabytes in the socket buffers before
// it), then the peer's answer (or its leaving) is awaited for up to
// closeLinger. Closing the socket at once would reset a connection whose
// peer still sends (its pongs, its close), and a reset discards what the
// peer has not read yet, the close frame with it. Server.Close's context
// bounds it all.
func (s *Server) closeSession(sub *subscriber, code int, text string) {
	sub.release()
	msg := websocket.FormatCloseMessage(code, text)
	sub.sending(int64(len(msg)))
	if sub.conn.WriteControl(websocket.CloseMessage, msg, sub.closeDeadline()) != nil {
		return
	}
	// at most --max-subscribers sessions wait for their peer's close;
	// beyond that the socket is closed at once, so clients that never
	// answer a close hold at most that many sockets for closeLinger
	// (besides sessions still writing their final frames, each bounded
	// by closeDeadline)
	if s.lingering.Add(1) > int64(s.cfg.MaxSubscribers) {
		s.lingering.Add(-1)
		return
	}
	defer s.lingering.Add(-1)
	t := time.NewTimer(closeLinger)
	defer t.Stop()
	select {
	case <-sub.left:
	case <-t.C:
	}
}

// readLoop consumes control frames until the peer leaves. It never
// writes: pings are handed to the writer, and a close ends the session.
func (s *Server) readLoop(sub *subscriber, cancel context.CancelCauseFunc) {
	defer close(sub.left)
	conn := sub.conn
	sub.extend()
	conn.SetPongHandler(func(data string) error {
		sub.pong(data)
		return nil
	})
	conn.SetPingHandler(func(data string) error {
		sub.extend()
		select {
		case sub.pings <- data:
		default: // a pong is already pending
		}
		return nil
	})
	conn.SetCloseHandler(func(int, string) error { return nil })
	for {
		if _, _, err := conn.NextReader(); err != nil {
			// the peer left, or its read deadline passed: it showed no
			// sign of life for its window (see window), which stalled
			// marks as a write timing out is marked
			cancel(stalled(err))
			return
		}
		sub.extend()
	}
}

func (s *Server) serve(ctx context.Context, sub *subscriber, cursorArg int64) error {
	select {
	case <-s.bc.ready:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closing:
		return errClosed
	}
	if cursorArg < 0 {
		s.m.request("live")
		var head int64
		if b, err := answering(ctx, s, sub, s.src.Bounds); err == nil {
			head = b.Last
		} else if errors.Is(err, errStopped) {
			return err
		}
		s.bc.joinLive(sub, head)
	} else {
		bounds, err := answering(ctx, s, sub, s.src.Bounds)
		if errors.Is(err, errStopped) {
			return err
		}
		if err != nil {
			s.m.request("log_unavailable")
			s.log.Warn("subscriber with cursor: cannot read the log", "err", err)
			s.writeFinal(sub, frame.ErrorFrame("InternalError", "event log unavailable; retry later"), websocket.CloseInternalServerErr)
			return nil
		}
		head, err := answering(ctx, s, sub, func(ctx context.Context) (int64, error) { return s.head(ctx, bounds), nil })
		if err != nil {
			return err
		}
		if cursorArg > head {
			s.m.request("future_cursor")
			s.writeFinal(sub, frame.ErrorFrame(frame.ErrNameFutureCursor, fmt.Sprintf("cursor %d is beyond the newest seq %d", cursorArg, head)), websocket.ClosePolicyViolation)
			return nil
		}
		trimmed := bounds.Trimmed
		if s.arch != nil {
			if trimmed, err = answering(ctx, s, sub, s.arch.Trimmed); errors.Is(err, errStopped) {
				return err
			} else if err != nil {
				s.log.Warn("subscriber with cursor: cannot read the archive", "err", err)
				trimmed = bounds.Trimmed
			}
		}
		if cursorArg < trimmed {
			s.m.request("outdated_cursor")
			sub.told = trimmed
			if err := s.send(sub, frame.InfoFrame(frame.InfoOutdatedCursor, fmt.Sprintf("events after cursor %d up to seq %d are no longer kept (trimmed, or lost before they were archived); replaying what is kept", cursorArg, trimmed))); err != nil {
				return err
			}
		} else {
			s.m.request("replay")
		}
		sub.after = cursorArg
		if s.arch != nil && (bounds.First == 0 || cursorArg < bounds.First-1) {
			if err := s.replayArchive(ctx, sub, bounds.First); err != nil {
				return err
			}
		}
		if err := s.replay(ctx, sub); err != nil {
			return err
		}
	}
	return s.live(ctx, sub)
}

// answering calls read in a goroutine of its own and, until it returns,
// keeps the socket alive as the writer does between frames: a ping when
// due, a pong for the peer's ping. The caller stays the socket's only
// writer; read must not write to it. It returns read's results, or an
// error wrapping errStopped when the session must end first: ctx ended
// (the subscriber left), the server is closing (errClosed), a ping or
// pong could not be written. read's ctx then ends, and what it returns is
// dropped.
func answering[T any](ctx context.Context, s *Server, sub *subscriber, read func(context.Context) (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		v, err := read(rctx)
		done <- result{v, err}
	}()
	for {
		var err error
		select {
		case r := <-done:
			if ctx.Err() != nil {
				// the session ended while read ran (its error may be the
				// cancellation's): not the read's failure
				var zero T
				return zero, fmt.Errorf("%w: %w", errStopped, context.Cause(ctx))
			}
			return r.v, r.err
		case <-sub.ping.C:
			err = s.ping(sub)
		case data := <-sub.pings:
			err = s.pong(sub, data)
		case <-ctx.Done():
			err = ctx.Err()
		case <-s.closing:
			err = errClosed
		}
		if err != nil {
			var zero T
			return zero, fmt.Errorf("%w: %w", errStopped, err)
		}
	}
}

// replay sends seq > sub.after from the log until it has caught up with
// the broadcaster, then joins it.
func (s *Server) replay(ctx context.Context, sub *subscriber) error {
	// Redis may hold entries the archive has not read yet: they wait for
	// it, like live ones (I7).
	await := func(ctx context.Context, seq int64) (int64, error) {
		return answering(ctx, s, sub, func(ctx context.Context) (int64, error) { return s.bc.keeper.Await(ctx, seq), nil })
	}
	z := s.bc.newSizer(replayBatch) // a read's bytes bounded, like the broadcaster's
	for {
		after, count := sub.after, z.Next()
		ep := s.bc.epoch()
		entries, err := answering(ctx, s, sub, func(ctx context.Context) ([]cursor.Entry, error) {
			return s.src.Range(ctx, after, count)
		})
		if err != nil {
			return readFailed(fmt.Sprintf("replay after %d", sub.after), err)
		}
		z.Observe(entries)
		if len(entries) > 0 && entries[0].Seq > sub.after+1 {
			// Redis trimmed entries this subscriber has not had yet (a
			// long replay, a trim under it): the archive has them, unless
			// it was more than its buffer behind (see crossing).
			if s.arch != nil {
				if err := s.replayArchive(ctx, sub, entries[0].Seq); err != nil {
					return err
				}
			}
			if entries[0].Seq > sub.after+1 {
				if err := s.crossing(ctx, sub, true); err != nil {
					return err
				}
			}
		}
		if err := s.bc.gated(ctx, entries, ep, await, func(e cursor.Entry) error {
			if e.Seq <= sub.after {
				return nil
			}
			if err := s.send(sub, e.Frame); err != nil {
				return err
			}
			s.m.sent("replay", len(e.Frame))
			sub.after = e.Seq
			return nil
		}); errors.Is(err, errStale) {
			continue // read again from what was sent
		} else if err != nil {
			return err
		}
		if int64(len(entries)) < count && s.bc.join(sub) {
			return nil
		}
		if err := s.interrupted(ctx); err != nil {
			return err
		}
	}
}

// replayArchive sends archived entries with seq > sub.after until it
// reaches what Redis holds (redisFirst; 0 = Redis holds nothing), from
// where replay continues with Redis. With a Keeper it reads what the
// archive has written and what it has read but not yet written (Recall);
// Redis drops neither before the archive wrote it, unless the archive was
// more than its buffer behind.
func (s *Server) replayArchive(ctx context.Context, sub *subscriber, redisFirst int64) error {
	before := redisFirst
	if before <= 0 {
		before = math.MaxInt64
	}
	z := s.bc.newSizer(replayBatch)
	for {
		after, count := sub.after, z.Next()
		entries, err := answering(ctx, s, sub, func(ctx context.Context) ([]cursor.Entry, error) {
			if s.bc.keeper != nil {
				return s.bc.keeper.Recall(ctx, after, before, int(count))
			}
			return s.arch.Range(ctx, after, count)
		})
		if err != nil {
			return readFailed(fmt.Sprintf("archive replay after %d", sub.after), err)
		}
		z.Observe(entries)
		for _, e := range entries {
			if redisFirst > 0 && e.Seq >= redisFirst {
				return nil
			}
			if e.Seq > sub.after+1 {
				if err := s.crossing(ctx, sub, false); err != nil {
					return err
				}
			}
			if err := s.send(sub, e.Frame); err != nil {
				return err
			}
			s.m.sent("archive", len(e.Frame))
			sub.after = e.Seq
		}
		if int64(len(entries)) < count {
			return nil
		}
		if err := s.interrupted(ctx); err != nil {
			return err
		}
	}
}

// crossing is called when a replay is about to skip seqs after sub.after
// that it found nowhere: neither the archive (nor the archiver's buffer)
// nor Redis holds them. fromRedis says the next entry comes from Redis,
// beyond everything the archive has read; otherwise it comes from the
// archive.
//
// Seqs may skip for good reason: the seq counter jumps to the clock after
// Redis is restored, and the seqs between never existed. They are a hole
// when a trim mark covers them (is above sub.after):
//   - the archive's: its retention, or a hole it recorded (Redis trimmed
//     entries before the archive read them);
//   - Redis's, when the next entry comes from Redis: the archive read
//     none of the skipped seqs, so Redis trimmed them unread (the archive
//     more than its buffer behind: the database down or slow), and the
//     archive records the hole only once it reads again. Between two
//     archived entries Redis's mark says nothing: the archiver read both
//     and recorded any hole between them, and a jump there may have been
//     trimmed from Redis since.
//
// The subscriber is told OutdatedCursor once per hole: when the mark is
// above the one it was last told (at the start or at a crossing before).
// A mark that cannot be read is logged and costs only the notice.
func (s *Server) crossing(ctx context.Context, sub *subscriber, fromRedis bool) error {
	var mark int64
	if s.arch != nil {
		t, err := answering(ctx, s, sub, s.arch.Trimmed)
		if errors.Is(err, errStopped) {
			return err
		}
		if err != nil {
			s.log.Warn("replay: cannot read the archive's trim mark", "err", err)
		} else {
			mark = t
		}
	}
	if fromRedis {
		b, err := answering(ctx, s, sub, s.src.Bounds)
		if errors.Is(err, errStopped) {
			return err
		}
		if err != nil {
			s.log.Warn("replay: cannot read the log's trim mark", "err", err)
		} else {
			mark = max(mark, b.Trimmed)
		}
	}
	if mark <= sub.after || mark <= sub.told {
		return nil
	}
	sub.told = mark
	s.m.gap("replay_crossed_trim")
	s.log.Warn("a replay crossed seqs trimmed before they were archived; told the subscriber OutdatedCursor",
		"after", sub.after, "trimmed", mark)
	return s.send(sub, frame.InfoFrame(frame.InfoOutdatedCursor, "events after your position were trimmed before they could be archived; replay continues after them"))
}

// readFailed wraps a read's error with errRead when the read itself
// failed; one saying the session ended during the read (errStopped) is
// wrapped without it.
func readFailed(what string, err error) error {
	if errors.Is(err, errStopped) {
		return fmt.Errorf("fanout: %s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %w", errRead, what, err)
}

// interrupted says why a replay loop must stop: the subscriber left or
// the server is shutting down.
func (s *Server) interrupted(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closing:
		return errClosed
	default:
		return nil
	}
}

// send writes one replayed frame, and between frames does what the live
// loop does: a ping when due, a pong for the peer's ping.
func (s *Server) send(sub *subscriber, b []byte) error {
	if err := s.control(sub); err != nil {
		return err
	}
	sub.sending(int64(len(b)))
	_ = sub.conn.SetWriteDeadline(sub.deadline())
	return stalled(sub.conn.WriteMessage(websocket.BinaryMessage, b))
}

// control sends a due ping or a pending pong, without waiting.
func (s *Server) control(sub *subscriber) error {
	select {
	case <-sub.ping.C:
		return s.ping(sub)
	case data := <-sub.pings:
		return s.pong(sub, data)
	default:
		return nil
	}
}

// ping sends a ping carrying the bytes written so far (see pong).
func (s *Server) ping(sub *subscriber) error {
	data := sub.pingData()
	return stalled(sub.conn.WriteControl(websocket.PingMessage, data, sub.deadline()))
}

// pong answers the peer's ping.
func (s *Server) pong(sub *subscriber, data string) error {
	return stalled(sub.conn.WriteControl(websocket.PongMessage, []byte(data), sub.deadline()))
}

// live sends the broadcaster's entries as they are queued. This goroutine
// is the socket's only writer (pings and pongs included).
func (s *Server) live(ctx context.Context, sub *subscriber) error {
	var batch []msg
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return errClosed
		case <-sub.ping.C:
			if err := s.ping(sub); err != nil {
				return err
			}
		case data := <-sub.pings:
			if err := s.pong(sub, data); err != nil {
				return err
			}
		case <-sub.q.notify:
			var over bool
			batch, over = sub.q.drain(batch[:0])
			if over {
				return ErrTooSlow
			}
			if err := s.writeLive(sub, batch); err != nil {
				return err
			}
			clear(batch)
		}
	}
}

// writeLive writes batch, pre-built frames, straight to the socket: one
// writev per chunk of at most maxChunk bytes, each with its own deadline,
// and a due ping or pending pong between chunks.
func (s *Server) writeLive(sub *subscriber, batch []msg) error {
	raw := sub.conn.UnderlyingConn()
	for len(batch) > 0 {
		if err := s.control(sub); err != nil {
			return err
		}
		k, n := 0, 0
		for k < len(batch) && (k == 0 || n+len(batch[k].wire) <= maxChunk) {
			sub.vec = append(sub.vec, batch[k].wire)
			n += len(batch[k].wire)
			k++
		}
		bufs := net.Buffers(sub.vec) // WriteTo consumes bufs, not sub.vec
		sub.sending(int64(n))
		_ = raw.SetWriteDeadline(sub.deadline())
		_, err := bufs.WriteTo(raw)
		clear(sub.vec)
		sub.vec = sub.vec[:0]
		if err != nil {
			return stalled(err)
		}
		s.m.sentLive(k, int64(n))
		batch = batch[k:]
	}
	return nil
}

// Close tells every subscriber the server is going away (close code 1001)
// and waits for them, at most until ctx ends.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	select {
	case <-s.closing:
	default:
		close(s.closing)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for sub := range s.subs {
			sub.conn.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

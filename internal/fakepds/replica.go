package fakepds

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/gorilla/websocket"
	"github.com/ipfs/go-cid"

	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/xrpcerr"
)

// Replica is one PDS process over a Store.
type Replica struct {
	Name  string
	store *Store

	// counter is the in-memory seq counter (ModeCocoon), seeded at Start.
	counter int64

	// SubscriberBuffer bounds each live subscriber's queue; when it is full
	// the subscriber gets ConsumerTooSlow (the reference PDS uses 500).
	SubscriberBuffer int

	// lastLive is the seq of the last event this replica streamed live
	// from its own writes.
	lastLive int64

	mu   sync.Mutex
	addr string
	srv  *http.Server
	subs map[*sub]struct{}
	up   bool
}

type sub struct {
	ch       chan []byte
	mu       sync.Mutex
	conn     *websocket.Conn // nil until the upgrade; guarded by mu
	once     sync.Once
	gone     chan struct{}
	slowOnce sync.Once
	slow     chan struct{}
}

func (s *sub) kill() {
	s.once.Do(func() {
		close(s.gone)
		s.mu.Lock()
		if s.conn != nil {
			s.conn.Close()
		}
		s.mu.Unlock()
	})
}

// setConn attaches the upgraded connection; it reports false (and closes
// conn) when the subscriber was killed before the upgrade finished.
func (s *sub) setConn(conn *websocket.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.gone:
		conn.Close()
		return false
	default:
		s.conn = conn
		return true
	}
}

func (s *sub) tooSlow() { s.slowOnce.Do(func() { close(s.slow) }) }

// NewReplica adds a replica to the store. Call Start to serve it.
func (s *Store) NewReplica(name string) *Replica {
	r := &Replica{Name: name, store: s, SubscriberBuffer: 10000, subs: map[*sub]struct{}{}}
	s.mu.Lock()
	s.replicas = append(s.replicas, r)
	s.mu.Unlock()
	return r
}

// Start serves the replica on l (or on its previous address when l is nil,
// after Stop). In ModeCocoon the seq counter is seeded now, as Cocoon does
// at process start: max(seq) of the table, or unix seconds when empty.
func (r *Replica) Start(l net.Listener) error {
	if l == nil {
		var err error
		for i := 0; i < 100; i++ {
			if l, err = net.Listen("tcp", r.addr); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			return err
		}
	}
	r.store.mu.Lock()
	if m := r.store.maxSeqLocked(); m > 0 {
		r.counter = m
	} else {
		r.counter = r.store.Now().Unix()
	}
	r.store.mu.Unlock()

	mux := http.NewServeMux()
	r.routes(mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	r.mu.Lock()
	r.addr, r.srv, r.up = l.Addr().String(), srv, true
	r.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
	return nil
}

// Stop closes the listener and every connection (a crashed process).
func (r *Replica) Stop() {
	r.mu.Lock()
	srv := r.srv
	r.srv, r.up = nil, false
	subs := r.subs
	r.subs = map[*sub]struct{}{}
	r.mu.Unlock()
	for s := range subs {
		s.kill()
	}
	if srv != nil {
		_ = srv.Close()
	}
}

// Store is the database the replica runs on.
func (r *Replica) Store() *Store { return r.store }

// URL is the replica's base URL.
func (r *Replica) URL() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return "http://" + r.addr
}

// Kick drops every live subscriber connection (a network blip).
func (r *Replica) Kick() {
	r.mu.Lock()
	subs := r.subs
	r.subs = map[*sub]struct{}{}
	r.mu.Unlock()
	for s := range subs {
		s.kill()
	}
}

// Subscribers is the number of live subscribers.
func (r *Replica) Subscribers() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.subs)
}

// InjectRaw sends b to every live subscriber as one binary message, as if
// the replica had streamed it (for bad-frame tests). It is not stored.
func (r *Replica) InjectRaw(b []byte) {
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	r.broadcast(b)
}

// RawIdentity is an #identity frame {did, seq, time, handle} (no handle
// when handle is ""), encoded whatever its strings' lengths: indigo's
// encoder refuses a string over 8,192 bytes, a broken or hostile replica
// has no such limit (for InjectRaw).
func RawIdentity(did string, seq int64, time, handle string) []byte {
	b := frame.AppendText(frame.AppendText([]byte{0xa2}, "t"), frame.TypeIdentity)
	b = append(frame.AppendText(b, "op"), 0x01)
	if handle == "" {
		b = append(b, 0xa3)
	} else {
		b = append(b, 0xa4)
	}
	b = frame.AppendText(frame.AppendText(b, "did"), did)
	b = frame.AppendUint(frame.AppendText(b, "seq"), uint64(seq))
	b = frame.AppendText(frame.AppendText(b, "time"), time)
	if handle != "" {
		b = frame.AppendText(frame.AppendText(b, "handle"), handle)
	}
	return b
}

// broadcast runs under store.mu, so a subscriber registered under the same
// lock sees every event after its replay exactly once.
func (r *Replica) broadcast(b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s := range r.subs {
		select {
		case s.ch <- b:
		default:
			delete(r.subs, s)
			s.tooSlow()
		}
	}
}

// CreateAccount makes an account through this replica at the store clock
// (Account.Created, first rev) and emits what Cocoon's createAccount
// emits (server/handle_server_create_account.go, handleCreateAccount):
// #identity with the handle, then #sync of the empty repo's signed
// commit; no #account and no #commit. Each goes through the sequencer on
// its own, so in ModeCocoon either or both can be lost to a seq
// collision (counted in Store.Lost) while the account exists all the
// same. The error is a duplicate handle (the DID derives from it) or a
// failure to build the repo.
func (r *Replica) CreateAccount(handle string) (*Account, error) {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	a, syncEv, err := NewAccount(handle, now)
	if err != nil {
		return nil, err
	}
	a.OmitUpdatePrev = s.OmitUpdatePrev
	if _, dup := s.accounts[a.DID]; dup {
		return nil, errors.New("fakepds: account exists: " + handle)
	}
	s.accounts[a.DID] = a
	s.order = append(s.order, a.DID)
	h := handle
	if _, err := s.emit(r, frame.TypeIdentity, identityBody{&comatproto.SyncSubscribeRepos_Identity{
		Did: a.DID, Handle: &h, Time: now.UTC().Format(syntax.AtprotoDatetimeLayout),
	}}); err != nil {
		return nil, err
	}
	if _, err := s.emit(r, frame.TypeSync, syncBody{syncEv}); err != nil {
		return nil, err
	}
	return a, nil
}

// Write applies ops to did's repo in one commit through this replica. The
// write succeeds even when its event is lost (ModeCocoon); emitted
// reports whether the event was stored and streamed.
func (r *Replica) Write(did string, ops ...Op) (rev string, emitted bool, err error) {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.lookup(did)
	if err != nil {
		return "", false, err
	}
	ev, err := a.Apply(ops, s.Now())
	if err != nil {
		return "", false, err
	}
	emitted, err = s.emit(r, frame.TypeCommit, commitBody{ev})
	return ev.Rev, emitted, err
}

// WriteSilently applies ops with no event at all (a repo that moved with
// nothing on any stream).
func (r *Replica) WriteSilently(did string, ops ...Op) (string, error) {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.lookup(did)
	if err != nil {
		return "", err
	}
	ev, err := a.Apply(ops, s.Now())
	if err != nil {
		return "", err
	}
	return ev.Rev, nil
}

// SetStatus changes an account's hosting status and emits #account unless
// silent.
func (r *Replica) SetStatus(did string, active bool, status string, silent bool) error {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.lookup(did)
	if err != nil {
		return err
	}
	a.Active, a.Status = active, status
	if silent {
		return nil
	}
	ev := &comatproto.SyncSubscribeRepos_Account{Did: did, Active: active, Time: s.Now().UTC().Format(syntax.AtprotoDatetimeLayout)}
	if status != "" {
		ev.Status = &status
	}
	_, err = s.emit(r, frame.TypeAccount, accountBody{ev})
	return err
}

// UpdateHandle changes a handle and emits #identity.
func (r *Replica) UpdateHandle(did, handle string) error {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.lookup(did)
	if err != nil {
		return err
	}
	a.Handle = handle
	_, err = s.emit(r, frame.TypeIdentity, identityBody{&comatproto.SyncSubscribeRepos_Identity{
		Did: did, Handle: &handle, Time: s.Now().UTC().Format(syntax.AtprotoDatetimeLayout),
	}})
	return err
}

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 64 << 10}

func (r *Replica) handleSubscribe(w http.ResponseWriter, req *http.Request) {
	var cursor int64 = -1
	if c := req.URL.Query().Get("cursor"); c != "" {
		v, err := strconv.ParseInt(c, 10, 64)
		if err != nil || v < 0 {
			xrpcerr.Write(w, http.StatusBadRequest, "InvalidRequest", "bad cursor")
			return
		}
		cursor = v
	}
	// Register before the upgrade: once the client has its handshake
	// answer it may be told "connected", and every event from then on must
	// reach it (a live subscription has no cursor to recover a gap with).
	s := &sub{ch: make(chan []byte, r.SubscriberBuffer), gone: make(chan struct{}), slow: make(chan struct{})}
	r.store.mu.Lock()
	future := cursor >= 0 && cursor > r.store.maxSeqLocked()
	var backlog [][]byte
	if cursor >= 0 && !future {
		backlog = r.store.replay(cursor)
	}
	r.mu.Lock()
	up := r.up
	if up && !future {
		r.subs[s] = struct{}{}
	}
	r.mu.Unlock()
	r.store.mu.Unlock()
	if !up {
		xrpcerr.Write(w, http.StatusServiceUnavailable, "Unavailable", "replica stopped")
		return
	}
	defer func() {
		r.mu.Lock()
		delete(r.subs, s)
		r.mu.Unlock()
	}()
	conn, err := upgrader.Upgrade(w, req, nil)
	if err != nil {
		return
	}
	if !s.setConn(conn) {
		return
	}
	defer s.kill()
	if future {
		_ = conn.WriteMessage(websocket.BinaryMessage, frame.ErrorFrame(frame.ErrNameFutureCursor, "cursor in the future"))
		return
	}

	go func() { // read side: notice the client going away
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				s.kill()
				return
			}
		}
	}()
	for _, b := range backlog {
		if conn.WriteMessage(websocket.BinaryMessage, b) != nil {
			return
		}
	}
	for {
		select {
		case b := <-s.ch:
			if conn.WriteMessage(websocket.BinaryMessage, b) != nil {
				return
			}
		case <-s.slow:
			_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
			_ = conn.WriteMessage(websocket.BinaryMessage, frame.ErrorFrame(frame.ErrNameConsumerTooSlow, "subscriber buffer full"))
			return
		case <-s.gone:
			return
		}
	}
}

func (r *Replica) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /xrpc/_health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": "fakepds"})
	})
	mux.HandleFunc("GET /xrpc/com.atproto.sync.subscribeRepos", r.handleSubscribe)
	r.syncRoutes(mux)
}

// Shutdown is Stop for use in t.Cleanup.
func (r *Replica) Shutdown(context.Context) error { r.Stop(); return nil }

// ForkWrite models two replicas writing to one account at the same moment
// (Cocoon's repo lock is per process): both commits are built on the same
// head, r's with first and then other's with second (so second's rev is
// higher), and one of them wins the database: second's, or first's when
// keepFirst. The loser's record is not in the final tree although its
// event announced it. Each event goes through the sequencer (and may be
// lost to a collision). It returns the revs of the losing and the winning
// commit.
func (r *Replica) ForkWrite(other *Replica, did string, first, second Op, keepFirst bool) (lost, won string, err error) {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.lookup(did)
	if err != nil {
		return "", "", err
	}
	tree, rev, commit, data := a.tree.Copy(), a.rev, a.commit, a.data
	evA, err := a.Apply([]Op{first}, s.Now())
	if err != nil {
		return "", "", err
	}
	if _, err := s.emit(r, frame.TypeCommit, commitBody{evA}); err != nil {
		return "", "", err
	}
	treeA, revA, commitA, dataA := a.tree.Copy(), a.rev, a.commit, a.data
	a.tree, a.rev, a.commit, a.data = tree, rev, commit, data
	evB, err := a.Apply([]Op{second}, s.Now())
	if err != nil {
		return "", "", err
	}
	if _, err := s.emit(other, frame.TypeCommit, commitBody{evB}); err != nil {
		return "", "", err
	}
	if keepFirst {
		a.tree, a.rev, a.commit, a.data = treeA, revA, commitA, dataA
		return evB.Rev, evA.Rev, nil
	}
	return evA.Rev, evB.Rev, nil
}

// Head is one repo's signed head at a moment, for Restore.
type Head struct {
	tree         mst.Tree
	rev          string
	commit, data cid.Cid
}

// Rev is the head's rev.
func (h Head) Rev() string { return h.rev }

// HeadOf captures did's current head.
func (s *Store) HeadOf(did string) (Head, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.lookup(did)
	if err != nil {
		return Head{}, err
	}
	return Head{tree: a.tree.Copy(), rev: a.rev, commit: a.commit, data: a.data}, nil
}

// Restore puts did's repo back to h, as a PDS restored from a backup
// does, and announces it with a #sync of that older signed commit (through
// the sequencer, unless silent).
func (r *Replica) Restore(did string, h Head, silent bool) error {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.lookup(did)
	if err != nil {
		return err
	}
	a.tree, a.rev, a.commit, a.data = h.tree.Copy(), h.rev, h.commit, h.data
	if silent {
		return nil
	}
	commitBytes, ok := a.blocks.Lookup(h.commit)
	if !ok {
		return errors.New("fakepds: restore: commit block gone")
	}
	ev, err := syncEvent(did, h.rev, h.commit, commitBytes, s.Now())
	if err != nil {
		return err
	}
	_, err = s.emit(r, frame.TypeSync, syncBody{ev})
	return err
}

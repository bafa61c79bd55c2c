package fanout

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
)

// msg is one live entry for a subscriber: the complete websocket frame
// (header and payload), built once and shared by every subscriber.
type msg struct {
	seq  int64
	wire []byte
}

// wsBinaryFrame encodes payload as one unmasked, final, binary websocket
// frame (RFC 6455 section 5.2), as a server sends it. Writing these
// straight to the socket lets a subscriber's backlog go out in one writev
// instead of one write per frame.
func wsBinaryFrame(payload []byte) []byte {
	n := len(payload)
	var b []byte
	switch {
	case n < 126:
		b = make([]byte, 2, 2+n)
		b[1] = byte(n)
	case n <= 0xffff:
		b = make([]byte, 4, 4+n)
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = make([]byte, 10, 10+n)
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	b[0] = 0x82 // FIN, opcode 2 (binary)
	return append(b, payload...)
}

// queue is a subscriber's bounded FIFO, bounded in frames (max) and in
// bytes (maxBytes: the frames' wire size). It grows on demand up to max,
// so an idle subscriber costs a few words rather than a full buffer. The
// frames are shared by every subscriber, so all queues together hold
// about what the fullest one does.
type queue struct {
	mu       sync.Mutex
	buf      []msg
	head     int
	n        int
	max      int
	maxBytes int64
	bytes    atomic.Int64  // wire bytes queued; written under mu
	over     bool          // overflowed: the subscriber is too slow
	notify   chan struct{} // capacity 1: "something changed"
}

func newQueue(max int, maxBytes int64) *queue {
	return &queue{max: max, maxBytes: maxBytes, notify: make(chan struct{}, 1)}
}

// push appends m; it returns false (and marks the queue overflowed) when
// the queue is full: max frames, or m would take it past maxBytes (a
// frame larger than maxBytes still goes into an empty queue).
func (q *queue) push(m msg) bool {
	q.mu.Lock()
	if q.over {
		q.mu.Unlock()
		return false
	}
	size := int64(len(m.wire))
	if q.n == q.max || (q.n > 0 && q.bytes.Load()+size > q.maxBytes) {
		q.over = true
		q.buf = nil
		q.n = 0
		q.bytes.Store(0)
		q.mu.Unlock()
		q.wake()
		return false
	}
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)%len(q.buf)] = m
	q.n++
	q.bytes.Add(size)
	q.mu.Unlock()
	q.wake()
	return true
}

func (q *queue) grow() {
	size := max(8, 2*len(q.buf))
	size = min(size, q.max)
	nb := make([]msg, size)
	for i := range q.n {
		nb[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = nb, 0
}

func (q *queue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// clear drops everything queued (the session is over).
func (q *queue) clear() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.buf, q.head, q.n = nil, 0, 0
	q.bytes.Store(0)
}

// drain moves everything queued into dst; overflowed reports a too-slow
// subscriber.
func (q *queue) drain(dst []msg) (out []msg, overflowed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.over {
		return dst, true
	}
	for i := range q.n {
		j := (q.head + i) % len(q.buf)
		dst = append(dst, q.buf[j])
		q.buf[j] = msg{}
	}
	q.head, q.n = 0, 0
	q.bytes.Store(0)
	// let an emptied, unusually large buffer go (a burst is over); keep
	// a normal one to avoid regrowing it for every burst
	if len(q.buf) > 1024 {
		q.buf = nil
	}
	return dst, false
}

package fanout

import (
	"sync"

	"github.com/gorilla/websocket"
)

// msg is one live entry for a subscriber.
type msg struct {
	seq int64
	pm  *websocket.PreparedMessage
}

// queue is a subscriber's bounded FIFO. It grows on demand up to max, so
// an idle subscriber costs a few words rather than a full buffer.
type queue struct {
	mu     sync.Mutex
	buf    []msg
	head   int
	n      int
	max    int
	over   bool          // overflowed: the subscriber is too slow
	notify chan struct{} // capacity 1: "something changed"
}

func newQueue(max int) *queue {
	return &queue{max: max, notify: make(chan struct{}, 1)}
}

// push appends m; it returns false (and marks the queue overflowed) when
// the queue is full.
func (q *queue) push(m msg) bool {
	q.mu.Lock()
	if q.over {
		q.mu.Unlock()
		return false
	}
	if q.n == q.max {
		q.over = true
		q.buf = nil
		q.n = 0
		q.mu.Unlock()
		q.wake()
		return false
	}
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)%len(q.buf)] = m
	q.n++
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
	// let an emptied large buffer go
	if len(q.buf) > 64 {
		q.buf = nil
	}
	return dst, false
}

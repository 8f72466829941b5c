package executor

import (
	"container/heap"
	"context"
	"sync"
)

// slots is the worker pool: a fixed number of run slots and a priority queue
// of waiters in front of it. Sync, stream and async work all take a slot
// here, so they share the pool in one order: higher priority first, then
// arrival. The waiting goroutine itself runs the work, so there is no
// hand-off to a worker goroutine on the hot path.
type slots struct {
	mu      sync.Mutex
	free    int
	size    int
	seq     uint64
	waiters waiterHeap
	// freed is signalled (non-blocking) whenever a slot is released, to wake
	// the async dispatcher.
	freed chan struct{}
}

type waiter struct {
	prio  int32
	seq   uint64
	ready chan struct{}
	index int // in the heap; -1 once granted or removed
}

func newSlots(n int) *slots {
	return &slots{free: n, size: n, freed: make(chan struct{}, 1)}
}

// acquire blocks until a slot is granted or ctx ends.
func (s *slots) acquire(ctx context.Context, prio int32) error {
	s.mu.Lock()
	if s.free > 0 && len(s.waiters) == 0 {
		s.free--
		s.mu.Unlock()
		return nil
	}
	s.seq++
	w := &waiter{prio: prio, seq: s.seq, ready: make(chan struct{})}
	heap.Push(&s.waiters, w)
	s.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		if w.index < 0 { // granted while we were giving up: pass it on
			s.releaseLocked()
		} else {
			heap.Remove(&s.waiters, w.index)
		}
		return context.Cause(ctx)
	}
}

// release returns a slot, granting it to the first waiter if any.
func (s *slots) release() {
	s.mu.Lock()
	s.releaseLocked()
	s.mu.Unlock()
	s.kick()
}

// kick wakes the async dispatcher, if it waits.
func (s *slots) kick() {
	select {
	case s.freed <- struct{}{}:
	default:
	}
}

func (s *slots) releaseLocked() {
	if len(s.waiters) > 0 {
		w := heap.Pop(&s.waiters).(*waiter)
		close(w.ready)
		return
	}
	s.free++
}

// state returns the free slots and the number of waiters.
func (s *slots) state() (free, waiting int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.free, len(s.waiters)
}

type waiterHeap []*waiter

func (h waiterHeap) Len() int { return len(h) }
func (h waiterHeap) Less(i, j int) bool {
	if h[i].prio != h[j].prio {
		return h[i].prio > h[j].prio
	}
	return h[i].seq < h[j].seq
}
func (h waiterHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *waiterHeap) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waiterHeap) Pop() any {
	old := *h
	n := len(old)
	w := old[n-1]
	old[n-1] = nil
	w.index = -1
	*h = old[:n-1]
	return w
}

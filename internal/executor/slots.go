package executor

import (
	"context"
	"sync"
)

// oldestShare is the anti-starvation rule: every oldestShare-th slot goes
// to the oldest waiting work, whatever its priority.
const oldestShare = 8

// slots is the worker pool: a fixed number of run slots and the waiters in
// front of it. Sync, stream and async work all take a slot here, so they
// share the pool in one order: higher priority first, then age; a fixed
// share goes to the oldest waiter, so low priority work is never starved;
// and a task never runs more executions at once than its max_concurrency.
// The waiting goroutine itself runs the work, so there is no hand-off to a
// worker goroutine on the hot path.
type slots struct {
	mu      sync.Mutex
	free    int
	size    int
	seq     uint64
	grants  uint64
	waiters []*waiter
	running map[string]int // by task
	waiting map[string]int // by task, parked ones included
	// freed is signalled (non-blocking) whenever a slot is released, to wake
	// the async dispatcher.
	freed chan struct{}
}

// claim is what a waiter asks for.
type claim struct {
	prio int32
	// age orders waiters of equal priority, oldest (smallest) first: the
	// execution's creation time in Unix nanoseconds.
	age int64
	// task and limit: at most limit executions of task run at once (0: no
	// limit).
	task  string
	limit int
	// maxQueued refuses the claim (errQueueFull) instead of waiting when
	// the task already has that many waiters (0: no limit). Checked under
	// the pool's lock, so concurrent callers cannot overshoot it.
	maxQueued int
	// parked: the caller comes back from park; it was admitted already
	// (maxQueued is not checked again) and stops being parked.
	parked bool
}

type waiter struct {
	claim
	seq     uint64
	ready   chan struct{}
	index   int
	granted bool
}

func newSlots(n int) *slots {
	return &slots{free: n, size: n, running: map[string]int{}, waiting: map[string]int{}, freed: make(chan struct{}, 1)}
}

// acquire blocks until a slot is granted or ctx ends.
func (s *slots) acquire(ctx context.Context, c claim) error {
	s.mu.Lock()
	if c.parked {
		s.unparkLocked(c.task)
	} else if c.maxQueued > 0 && s.waiting[c.task] >= c.maxQueued {
		s.mu.Unlock()
		return errQueueFull
	}
	s.seq++
	w := &waiter{claim: c, seq: s.seq, ready: make(chan struct{}), index: len(s.waiters)}
	s.waiters = append(s.waiters, w)
	s.waiting[c.task]++
	s.dispatchLocked()
	if w.granted {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		if w.granted { // granted while we were giving up: pass it on
			s.releaseLocked(c.task)
		} else {
			s.removeLocked(w)
		}
		s.mu.Unlock()
		s.kick()
		return context.Cause(ctx)
	}
}

// tryAcquire takes a slot at once when one is free and nobody waits (the
// common case, without a waiter or a channel); it reports whether it did.
func (s *slots) tryAcquire(c claim) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.free == 0 || len(s.waiters) > 0 || (c.limit > 0 && s.running[c.task] >= c.limit) {
		return false
	}
	s.grants++ // alone, it is both the best and the oldest
	s.free--
	s.running[c.task]++
	return true
}

// release returns a task's slot, granting it to the next eligible waiter.
func (s *slots) release(task string) {
	s.mu.Lock()
	s.releaseLocked(task)
	s.mu.Unlock()
	s.kick()
}

// park returns a task's slot, its holder now waiting outside the pool
// (for a cluster-wide lease, limits.go): it still counts as waiting for
// the task's max_queued until it comes back (acquire with claim.parked)
// or gives up (unpark).
func (s *slots) park(task string) {
	s.mu.Lock()
	s.waiting[task]++
	s.releaseLocked(task)
	s.mu.Unlock()
	s.kick()
}

// unpark ends a parked wait that is given up.
func (s *slots) unpark(task string) {
	s.mu.Lock()
	s.unparkLocked(task)
	s.mu.Unlock()
}

func (s *slots) unparkLocked(task string) {
	if s.waiting[task]--; s.waiting[task] <= 0 {
		delete(s.waiting, task)
	}
}

// kick wakes the async dispatcher, if it waits.
func (s *slots) kick() {
	select {
	case s.freed <- struct{}{}:
	default:
	}
}

func (s *slots) releaseLocked(task string) {
	if s.running[task]--; s.running[task] <= 0 {
		delete(s.running, task)
	}
	s.free++
	s.dispatchLocked()
}

func (s *slots) removeLocked(w *waiter) {
	last := len(s.waiters) - 1
	s.waiters[w.index] = s.waiters[last]
	s.waiters[w.index].index = w.index
	s.waiters[last] = nil
	s.waiters = s.waiters[:last]
	if s.waiting[w.task]--; s.waiting[w.task] <= 0 {
		delete(s.waiting, w.task)
	}
}

// dispatchLocked grants free slots to eligible waiters.
func (s *slots) dispatchLocked() {
	for s.free > 0 {
		w := s.pickLocked()
		if w == nil {
			return
		}
		s.removeLocked(w)
		w.granted = true
		s.free--
		s.running[w.task]++
		close(w.ready)
	}
}

// pickLocked chooses the next waiter among those whose task is below its
// concurrency limit: the highest priority (then oldest), except every
// oldestShare-th grant, which goes to the oldest. Linear in the waiters,
// which are bounded by the callers and the async work in hand.
func (s *slots) pickLocked() *waiter {
	var best, oldest *waiter
	for _, w := range s.waiters {
		if w.limit > 0 && s.running[w.task] >= w.limit {
			continue
		}
		if oldest == nil || older(w, oldest) {
			oldest = w
		}
		if best == nil || w.prio > best.prio || (w.prio == best.prio && older(w, best)) {
			best = w
		}
	}
	if best == nil {
		return nil
	}
	s.grants++
	if s.grants%oldestShare == 0 {
		return oldest
	}
	return best
}

func older(a, b *waiter) bool {
	if a.age != b.age {
		return a.age < b.age
	}
	return a.seq < b.seq
}

// state returns the free slots and the number of waiters for one. Parked
// waiters are not among them: they wait for a lease, not a slot, and a
// slot free here can run other work (the dispatcher and the hand-on of
// calls read these figures as the node's slot pressure).
func (s *slots) state() (free, waiting int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.free, len(s.waiters)
}

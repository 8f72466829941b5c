package executor

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/store"
)

const (
	recentPerTask = 64      // durations kept per task for estimates
	windowSize    = 100_000 // finished executions kept for GetStats windows
)

// stats holds what finished executions measured: per task (persisted, for
// estimates and TaskInfo) and a window of recent executions (for GetStats).
// Per task, tasks is the store's sum over every node sharing it, as last
// read, plus pending: what this node measured since it last added its
// share to the store (by compare-and-set, so no node's share is lost).
type stats struct {
	mu      sync.Mutex
	now     func() time.Time
	tasks   map[string]*store.TaskStats
	pending map[string]*store.TaskStats
	window  []Finished // ring
	next    int
	// flushFailing: the latest flush failed (said once, until one works).
	flushFailing bool
}

// Finished is one finished execution, as GetStats sees it.
type Finished struct {
	At         time.Time
	TaskID     string
	Function   string
	Status     execution.Status
	DurationMs int64
}

func newStats(now func() time.Time) *stats {
	return &stats{now: now, tasks: map[string]*store.TaskStats{}, pending: map[string]*store.TaskStats{}}
}

// load takes the store's sums (all tasks'), keeping what is pending here
// on top.
func (s *stats) load(all map[string]*store.TaskStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, st := range all {
		s.setStored(id, st)
	}
}

// setStored makes the store's sum st task id's stats, with what is
// pending here on top. Call with mu held.
func (s *stats) setStored(id string, st *store.TaskStats) {
	if p := s.pending[id]; p != nil {
		st.Add(p, recentPerTask)
	}
	s.tasks[id] = st
}

func (s *stats) record(r *execution.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.tasks[r.TaskID]
	if st == nil {
		st = &store.TaskStats{}
		s.tasks[r.TaskID] = st
	}
	delta := &store.TaskStats{Count: 1, LastStatus: r.Status}
	if r.Status == execution.StatusCompleted {
		delta.RecentMs = []int64{r.DurationMs}
	}
	st.Add(delta, recentPerTask)
	p := s.pending[r.TaskID]
	if p == nil {
		p = &store.TaskStats{}
		s.pending[r.TaskID] = p
	}
	p.Add(delta, recentPerTask)
	f := Finished{At: r.CompletedAt, TaskID: r.TaskID, Function: r.Function, Status: r.Status, DurationMs: r.DurationMs}
	if len(s.window) < windowSize {
		s.window = append(s.window, f)
	} else {
		s.window[s.next] = f
		s.next = (s.next + 1) % windowSize
	}
}

func (s *stats) task(id string) (int64, execution.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.tasks[id]; st != nil {
		return st.Count, st.LastStatus
	}
	return 0, execution.StatusUnknown
}

// totalAll sums the execution counts of all tasks.
func (s *stats) totalAll() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, st := range s.tasks {
		n += st.Count
	}
	return n
}

func (s *stats) forgetTask(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tasks, id)
	delete(s.pending, id)
}

// typical returns the median duration of a task's recent successful
// executions; with no history for the task, the median over all tasks; ok is
// false when nothing was ever measured.
func (s *stats) typical(taskID string) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.tasks[taskID]; st != nil && len(st.RecentMs) > 0 {
		return median(st.RecentMs), true
	}
	var all []int64
	for _, st := range s.tasks {
		all = append(all, st.RecentMs...)
	}
	if len(all) == 0 {
		return 0, false
	}
	return median(all), true
}

func median(ms []int64) time.Duration {
	c := slices.Clone(ms)
	slices.Sort(c)
	// Durations are whole milliseconds; a sub-millisecond function counts
	// as half a millisecond rather than zero.
	m := time.Duration(c[len(c)/2]) * time.Millisecond
	return max(m, 500*time.Microsecond)
}

// finished returns the executions that finished since since, oldest first.
func (s *stats) finished(since time.Time) []Finished {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Finished
	n := len(s.window)
	for i := range n {
		f := s.window[(s.next+i)%n]
		if !f.At.Before(since) {
			out = append(out, f)
		}
	}
	return out
}

// flushLoop adds this node's share to the store every second and reads
// every task's sums (other nodes' shares) every refreshEvery.
func (s *stats) flushLoop(ctx context.Context, st *store.Store, log *slog.Logger) {
	const refreshEvery = 5
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.flush(ctx, st, log)
			if i%refreshEvery == 0 {
				s.refresh(ctx, st)
			}
		}
	}
}

// flush adds what is pending to the store's sums. Once the store fails,
// the rest waits for the next flush; a failing store is logged once, and
// when it works again.
func (s *stats) flush(ctx context.Context, st *store.Store, log *slog.Logger) {
	s.mu.Lock()
	batch := s.pending
	s.pending = map[string]*store.TaskStats{}
	s.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	var failed error
	for id, delta := range batch {
		var sum *store.TaskStats
		if failed == nil {
			sum, failed = st.Tasks.AddStats(ctx, id, delta, recentPerTask)
		}
		s.mu.Lock()
		if failed != nil {
			s.requeue(id, delta)
		} else if _, known := s.tasks[id]; known {
			s.setStored(id, sum)
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case failed != nil && !s.flushFailing:
		log.Warn("storing task stats; retrying every second", "err", failed)
	case failed == nil && s.flushFailing:
		log.Info("storing task stats again")
	}
	s.flushFailing = failed != nil
}

// requeue puts back a delta the store did not take, under what was
// recorded since. Call with mu held.
func (s *stats) requeue(id string, delta *store.TaskStats) {
	if later := s.pending[id]; later != nil {
		delta.Add(later, recentPerTask)
	}
	s.pending[id] = delta
}

// refresh reads every task's sums from the store.
func (s *stats) refresh(ctx context.Context, st *store.Store) {
	all, err := st.Tasks.AllStats(ctx)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, sum := range all {
		s.setStored(id, sum)
	}
}

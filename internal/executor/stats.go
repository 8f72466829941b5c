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
type stats struct {
	mu     sync.Mutex
	now    func() time.Time
	tasks  map[string]*store.TaskStats
	dirty  map[string]bool
	window []Finished // ring
	next   int
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
	return &stats{now: now, tasks: map[string]*store.TaskStats{}, dirty: map[string]bool{}}
}

func (s *stats) load(all map[string]*store.TaskStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, st := range all {
		s.tasks[id] = st
	}
}

func (s *stats) record(r *execution.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.tasks[r.TaskID]
	if st == nil {
		st = &store.TaskStats{}
		s.tasks[r.TaskID] = st
	}
	st.Count++
	st.LastStatus = r.Status
	if r.Status == execution.StatusCompleted {
		st.RecentMs = append(st.RecentMs, r.DurationMs)
		if len(st.RecentMs) > recentPerTask {
			st.RecentMs = st.RecentMs[len(st.RecentMs)-recentPerTask:]
		}
	}
	s.dirty[r.TaskID] = true
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
	delete(s.dirty, id)
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

func (s *stats) flushLoop(ctx context.Context, st *store.Store, log *slog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.flush(ctx, st, log)
		}
	}
}

// flush stores the stats of tasks that changed.
func (s *stats) flush(ctx context.Context, st *store.Store, log *slog.Logger) {
	s.mu.Lock()
	batch := make(map[string]store.TaskStats, len(s.dirty))
	for id := range s.dirty {
		if ts := s.tasks[id]; ts != nil {
			c := *ts
			c.RecentMs = slices.Clone(ts.RecentMs)
			batch[id] = c
		}
	}
	clear(s.dirty)
	s.mu.Unlock()
	for id, ts := range batch {
		if err := st.Tasks.PutStats(ctx, id, &ts); err != nil {
			log.Warn("storing task stats", "task", id, "err", err)
			s.mu.Lock()
			s.dirty[id] = true
			s.mu.Unlock()
		}
	}
}

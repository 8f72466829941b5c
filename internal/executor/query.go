package executor

import (
	"context"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/store"
)

// List returns execution records from the store, oldest first.
func (m *Views) List(ctx context.Context, f store.ListFilter) ([]*execution.Record, bool, error) {
	return m.store.Records.List(ctx, f)
}

// OutputHead returns the first n bytes of a finished execution's stored
// output.
func (m *Views) OutputHead(ctx context.Context, id string, n int) ([]byte, error) {
	return m.store.Outputs.ReadHead(ctx, id, n)
}

// Wait blocks until execution id is terminal or ctx ends, and returns its
// latest record. It wakes on the record's writes (Records.Changes), so
// the answer follows the final write at once; it also looks every
// waitRecheck, in case a write was missed (the connection dropped).
func (m *Views) Wait(ctx context.Context, id string) (*execution.Record, error) {
	changes, stop, err := m.store.Records.Changes(id)
	if err == nil {
		defer stop()
	}
	for {
		if l := m.liveOf(id); l != nil {
			select {
			case <-l.done:
			case <-ctx.Done():
				return l.snapshot(), nil
			}
		}
		r, err := m.Get(ctx, id)
		if err != nil || r.Status.Terminal() {
			return r, err
		}
		select {
		case <-ctx.Done():
			return r, nil
		case c := <-changes:
			if c != nil && c.Status.Terminal() {
				return c, nil
			}
		case <-time.After(waitRecheck):
		}
	}
}

// waitRecheck is how often Wait reads a record it was not told changed.
const waitRecheck = time.Second

// ofTask counts the executions of a task running or waiting on this
// node (a finished one whose record is still being written does not count).
func (m *liveTable) ofTask(taskID string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, l := range m.live {
		l.mu.Lock()
		if l.rec.TaskID == taskID && !l.rec.Status.Terminal() {
			n++
		}
		l.mu.Unlock()
	}
	return n
}

// runningTasks counts the tasks with an execution running (not waiting
// for a slot, not finished) on this node.
func (m *liveTable) runningTasks() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := make(map[string]struct{}, len(m.live))
	for _, l := range m.live {
		l.mu.Lock()
		if l.rec.Status == execution.StatusRunning {
			seen[l.rec.TaskID] = struct{}{}
		}
		l.mu.Unlock()
	}
	return len(seen)
}

// RunningTasks counts the tasks with an execution running on this node:
// GetHealth's and GetStats' active_tasks.
func (m *Manager) RunningTasks() int { return m.lives.runningTasks() }

// TotalExecutions is the number of executions recorded for all tasks.
func (m *Manager) TotalExecutions() int64 { return m.stats.totalAll() }

// Finished returns the executions this node saw finish since since (within
// a bounded window) and the total number of executions recorded for all
// tasks.
func (m *Manager) Finished(since time.Time) ([]Finished, int64) {
	recent := m.stats.finished(since)
	return recent, m.stats.totalAll()
}

// QueueDepth is the number of async executions waiting in the durable
// queue (for every node), refreshed from the store.
func (m *Manager) QueueDepth(ctx context.Context) (int64, error) {
	w, _, err := m.store.Queue.Depth(ctx)
	return w, err
}

// queueProbeMaxAge is how long RecentQueueDepth reuses an answer;
// queueProbeTimeout bounds its wait for the store.
const (
	queueProbeMaxAge  = 250 * time.Millisecond
	queueProbeTimeout = 2 * time.Second
)

// queueProbe is the last answer of the durable queue's depth, for
// RecentQueueDepth.
type queueProbe struct {
	mu      sync.Mutex
	at      time.Time // zero: never answered
	waiting int64
	err     error
	busy    bool // a caller is asking the store
}

// RecentQueueDepth is QueueDepth as it was at most queueProbeMaxAge ago,
// store error included: a health probe costs no store round trip, and
// callers arriving while one caller asks the store get the last answer
// rather than waiting or asking too.
func (m *Manager) RecentQueueDepth(ctx context.Context) (int64, error) {
	p := &m.probe
	p.mu.Lock()
	if !p.at.IsZero() && (p.busy || time.Since(p.at) < queueProbeMaxAge) {
		w, err := p.waiting, p.err
		p.mu.Unlock()
		return w, err
	}
	p.busy = true
	p.mu.Unlock()
	// Not bounded by the caller, who may leave first: a store that does
	// not answer within queueProbeTimeout is recorded as not answering.
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queueProbeTimeout)
	defer cancel()
	w, err := m.QueueDepth(qctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.busy, p.at, p.waiting, p.err = false, time.Now(), w, err
	return w, err
}

// QueueDepthByBand is the number of async executions waiting in the
// durable queue, by priority band (index 0 the lowest).
func (m *Manager) QueueDepthByBand(ctx context.Context) ([]int64, error) {
	return m.store.Queue.DepthByBand(ctx)
}

// ForgetTask drops a deleted task's stats.
func (m *Manager) ForgetTask(ctx context.Context, taskID string) error {
	m.stats.forgetTask(taskID)
	return m.store.Tasks.DeleteStats(ctx, taskID)
}

package executor

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
)

// lineFresh is how long the queue's depths read from the store stand
// before they are read again.
const lineFresh = 100 * time.Millisecond

// queueLine is this node's count of the async executions waiting in the
// durable queue, by band: the depths last read from the store, plus those
// accepted here since, less those taken here since. A burst of
// submissions sees itself: each counts those that joined before it. What
// other nodes accept or take comes in with the next read.
type queueLine struct {
	bands     [store.Bands]atomic.Int64
	checkedAt atomic.Int64 // Unix nanoseconds of the last read
}

// ahead counts the executions waiting in band and the higher ones, which
// run before a new execution in band; with join, that execution joins
// the line (and is not counted).
func (q *queueLine) ahead(band int, join bool) int64 {
	var n int64
	if join {
		n = q.bands[band].Add(1) - 1
	} else {
		n = q.bands[band].Load()
	}
	for b := band + 1; b < store.Bands; b++ {
		n += max(q.bands[b].Load(), 0)
	}
	return max(n, 0)
}

// leave counts one execution fewer in band: taken from the queue, or not
// queued after all.
func (q *queueLine) leave(band int) { q.bands[band].Add(-1) }

// waiting is how many executions wait in every band.
func (q *queueLine) waiting() int64 {
	var n int64
	for b := range q.bands {
		n += max(q.bands[b].Load(), 0)
	}
	return n
}

// refreshLine reads the queue's depths from the store once they are
// older than lineFresh (one caller at a time; the others use what is
// there).
func (m *Async) refreshLine(ctx context.Context) {
	now := m.opts.Now().UnixNano()
	last := m.line.checkedAt.Load()
	if now-last <= int64(lineFresh) || !m.line.checkedAt.CompareAndSwap(last, now) {
		return
	}
	var before [store.Bands]int64
	for b := range before {
		before[b] = m.line.bands[b].Load()
	}
	depths, err := m.store.Queue.DepthByBand(ctx)
	if err != nil {
		return
	}
	for b, d := range depths {
		// A band that changed here during the read keeps its count (a
		// burst's own submissions may or may not be in the depth read);
		// it is set from the store at a quieter read.
		m.line.bands[b].CompareAndSwap(before[b], d)
	}
}

// estimate is the expected time until an async execution of t in band is
// done: the task's typical duration times the rounds of work ahead of it
// (executions waiting in its band and above, and those running), spread
// over the slots that can run it, plus its own run. With join it takes
// its place in the line (leave it if it is not queued after all).
func (m *Async) estimate(ctx context.Context, t *task.Task, band int, join bool) time.Duration {
	typical, ok := m.stats.typical(t.ID)
	if !ok {
		// Nothing was ever measured on this node: the only honest basis is
		// a prior; it is replaced by measurements after the first run.
		typical = 100 * time.Millisecond
	}
	m.refreshLine(ctx)
	// The line and the executions in flight are read together: one taken
	// from the queue leaves the one as it joins the other (start).
	m.mu.Lock()
	ahead, inFlight := m.line.ahead(band, join), m.asyncInFlight
	m.mu.Unlock()
	busy, slots := m.capacityFor(string(t.Artifact.Type), inFlight)
	if c := int(t.Limits.MaxConcurrency); c > 0 {
		slots = min(slots, c)
	}
	return time.Duration(1+(ahead+busy)/int64(max(slots, 1))) * typical
}

// capacityFor is the run slots of every live node that has runtime rt
// and how many of them are taken (with the executions waiting there for
// one, and this node's inFlight): this node's now, the others' as the
// node registry last saw them.
func (m *Async) capacityFor(rt string, inFlight int) (busy int64, slots int) {
	free, waiting := m.slots.state()
	busy, slots = int64(max(inFlight, m.opts.Workers-free+waiting)), m.opts.Workers
	if m.opts.Peers == nil {
		return busy, slots
	}
	for _, n := range m.opts.Peers() {
		if n.ID != m.opts.NodeID && slices.Contains(n.Runtimes, rt) {
			busy += int64(n.SlotsBusy + n.Waiting)
			slots += n.SlotsTotal
		}
	}
	return busy, slots
}

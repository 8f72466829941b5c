package executor

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/retry"
	"github.com/spear-go/spear/internal/store"
)

// lookEvery is how often an idle dispatcher looks at every source, for
// work no announcement told it about: executions handed back with a delay
// (retries), or redelivered after a node died (the ack wait ran out).
const lookEvery = 250 * time.Millisecond

// openSources opens the queue's sources of this node's runtimes (see
// store.Workers.Open).
func (m *dispatcher) openSources(ctx context.Context) ([]*store.Source, error) {
	var runtimes []string
	for t := range m.runtimes {
		runtimes = append(runtimes, string(t))
	}
	slices.Sort(runtimes)
	return m.store.Workers.Open(ctx, runtimes, func(taskID string) string {
		return string(m.engine.runtimeOf(taskID))
	})
}

// dispatch takes async work from the durable queue, only for this node's
// runtimes and only as much as it has free slots for: what it cannot run
// now waits in JetStream, for whichever node frees a slot first (a busy
// node takes nothing, a less loaded one takes more). Higher bands are
// taken first; every oldestShare-th take goes to the lowest band that has
// work, so low priority work is never starved. An announcement wakes it
// when work is queued; it also looks every lookEvery.
func (m *dispatcher) dispatch(ctx context.Context, sources []*store.Source) {
	wake := make(chan struct{}, 1)
	stop, err := m.store.Workers.Announcements(func(runtime string, band int) {
		for _, src := range sources {
			if src.Runtime == runtime && src.Band == band {
				src.Mark()
			}
		}
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		m.log.Warn("no queue announcements; looking for work every "+lookEvery.String(), "err", err)
	} else {
		defer stop()
	}
	look := time.NewTicker(lookEvery)
	defer look.Stop()
	alone := !m.peerRuns("", false)
	for failures, round := 0, 0; ctx.Err() == nil && !m.isDraining(); {
		if want := m.capacity(alone); want > 0 {
			round++
			got, err := m.takeRound(sources, want, round%oldestShare == 0)
			if err != nil {
				if failures++; failures == 1 { // said once while it fails
					m.log.Warn("taking work from the queue; trying again", "err", err)
				}
				retry.Sleep(ctx, storeBackoff.Delay(failures))
				continue
			}
			if failures > 0 {
				m.log.Info("taking work from the queue again", "failures", failures)
			}
			if failures = 0; got > 0 {
				continue
			}
		}
		select {
		case <-ctx.Done():
		case <-m.slots.freed:
		case <-wake:
		case <-look.C:
			for _, src := range sources {
				src.Mark()
			}
			alone = !m.peerRuns("", false)
		}
	}
}

// capacity is how many more executions this node may take from the queue:
// its free slots less the executions taken that wait for one. A node
// alone (no other live node in the registry) also takes as many again
// ahead: no other node could run them, and reading the next executions
// while the slots are busy keeps the slots busy.
func (m *dispatcher) capacity(alone bool) int {
	free, _ := m.slots.state()
	if alone {
		free += m.opts.Workers
	}
	return free - int(m.reserved.Load())
}

// takeRound takes up to want executions, from the sources that may have
// work, highest band first; or, on an oldest round, one from the lowest
// band that has any.
func (m *dispatcher) takeRound(sources []*store.Source, want int, oldest bool) (int, error) {
	if oldest {
		want = 1
	}
	got := 0
	for i := range sources {
		src := sources[i]
		if oldest {
			src = sources[len(sources)-1-i]
		}
		if !src.Maybe() {
			continue
		}
		n, err := m.store.Workers.Take(src, want-got, m.start)
		if got += n; err != nil || got >= want {
			return got, err
		}
	}
	return got, nil
}

// start runs one delivery on its own goroutine; it holds a reservation on
// a slot until it has one (or ends without).
func (m *dispatcher) start(d *store.Delivery) {
	m.mu.Lock()
	if m.draining {
		m.mu.Unlock()
		_ = d.Nak(0)
		return
	}
	m.asyncInFlight++
	if d.Spec.Mode == execution.ModeAsync {
		m.line.leave(store.Band(d.Spec.Priority)) // no longer waiting: in flight
	}
	m.mu.Unlock()
	m.reserved.Add(1)
	m.wg.Add(1)
	go m.runDelivery(d, sync.OnceFunc(func() { m.reserved.Add(-1) }))
}

package executor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/retry"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
)

// Cluster-wide limits (issue #12). A task's max_concurrency holds on each
// node through the run slots' per-task limit, and, on a node whose store
// other nodes share, across the cluster through a lease in the store
// (store.Leases): a run takes its slot first, then a lease. A waiter that
// has a slot but finds no free lease gives the slot back (parks) and waits
// until a lease of its task is freed (a KV watch) or a short while passes
// (a lease that expired with its node makes no event), then queues for a
// slot again: so no slot is held idle while the task is at its limit
// elsewhere. Async work waits so too, unclaimed (PENDING: an attempt is
// counted once it runs), its message kept in progress and its place in the
// node's capacity kept (see dispatcher.capacity). A node alone on its
// store needs no lease: the slots' limit is exact there, and tasks without
// max_concurrency never touch the leases.
//
// The lease is renewed while the run lasts; one that could not be renewed
// in time may be another run's already, so the run is stopped (see
// keepLease). max_queued is exact across nodes by a compare-and-set on the
// queue (store.Queue.EnqueueWithin).

// leaseBackoff bounds the wait of a parked waiter between tries.
var leaseBackoff = retry.Backoff{Base: 100 * time.Millisecond, Max: time.Second}

// leased says whether runs of t take a cluster-wide lease.
func (m *core) leased(t *task.Task) bool { return m.shared && t.Limits.MaxConcurrency > 0 }

// acquireLeased takes a slot, then a lease of t's; see above. It returns
// the release of both. A store that fails fails a sync or stream call at
// once; async work (still queued) keeps trying until ctx ends.
func (m *SyncRuns) acquireLeased(ctx context.Context, l *live, spec *execution.Spec, t *task.Task, c claim) (func(), error) {
	holder := m.opts.NodeID + " " + spec.ExecutionID
	var freed <-chan struct{}
	for attempt := 1; ; attempt++ {
		if err := m.slots.acquire(ctx, c); err != nil {
			return nil, err
		}
		lease, err := m.store.Leases.TryAcquire(ctx, t.ID, int(t.Limits.MaxConcurrency), holder)
		if lease != nil {
			stop := m.keepLease(l, lease)
			return func() {
				stop()
				m.releaseLease(lease)
				m.slots.release(t.ID)
			}, nil
		}
		if err != nil && (spec.Mode != execution.ModeAsync || ctx.Err() != nil) {
			m.slots.release(t.ID)
			return nil, err
		}
		if err != nil && attempt == 1 {
			m.log.Warn("taking a cluster-wide run lease; trying again", "execution", spec.ExecutionID, "task", t.ID, "err", err)
		}
		m.slots.park(t.ID)
		c.parked = true
		wait := leaseBackoff.Delay(attempt)
		if freed == nil && err == nil {
			// Watched from now on: try once more at once, so a lease
			// freed before the watch began is not missed.
			ch, stop, werr := m.store.Leases.Freed(ctx, t.ID)
			if werr == nil {
				freed, wait = ch, 0
				defer stop()
			}
		}
		select {
		case <-ctx.Done():
			m.slots.unpark(t.ID)
			return nil, context.Cause(ctx)
		case <-freed:
		case <-time.After(wait):
		}
	}
}

// releaseLease frees a run's lease for the next run. Not freed (the store
// failed), it expires within the lease TTL.
func (m *core) releaseLease(lease *store.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.store.Leases.Release(ctx, lease); err != nil {
		m.log.Warn("releasing a cluster-wide run lease; it expires by itself", "lease", lease.Key(), "ttl", m.store.Leases.TTL(), "err", err)
	}
}

// keepLease renews the lease of l's run every quarter of the lease TTL
// until stop is called. When the lease is lost, or could not be renewed
// until shortly before it expires (the node is cut off from the store),
// the run is stopped at once: its lease may be another run's by then, and
// max_concurrency would not hold. The cause is fenced (an async attempt is
// dropped and runs again elsewhere, as one whose claim was lost) and
// UNAVAILABLE (a sync or stream call fails with it).
func (m *core) keepLease(l *live, lease *store.Lease) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.renewLease(ctx, lease); err != nil {
			m.log.Warn("lost the cluster-wide lease of a running execution; stopping it",
				"execution", l.final().ID, "lease", lease.Key(), "err", err)
			l.stop(leaseLost(m.store.Leases.TTL(), err), true)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// renewLease renews lease until ctx ends (nil) or it is lost (the error).
func (m *core) renewLease(ctx context.Context, lease *store.Lease) error {
	ttl := m.store.Leases.TTL()
	every, again, margin := ttl/4, ttl/40, ttl/10
	renew := m.renew
	if renew == nil {
		renew = m.store.Leases.Renew
	}
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		deadline := lease.Expires().Add(-margin)
		rctx, cancel := context.WithDeadline(ctx, deadline)
		err := renew(rctx, lease)
		cancel()
		switch {
		case err == nil:
			t.Reset(every)
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, store.ErrLeaseLost) || time.Now().Add(again).After(deadline):
			return err
		default:
			t.Reset(again)
		}
	}
}

// leaseLost is why a run whose lease was lost is stopped.
func leaseLost(ttl time.Duration, err error) error {
	return fmt.Errorf("%w: %w", errFenced, errdefs.Unavailable.New(
		"this node could not renew the execution's cluster-wide max_concurrency lease within %v (cut off from the store?), so it stopped the run: %v", ttl, err))
}

// enqueueWithin queues spec, within its task's max_queued when it has one
// (exact across nodes: store.Queue.EnqueueWithin).
func (m *Async) enqueueWithin(ctx context.Context, spec *execution.Spec, maxQueued int32) (duplicate bool, err error) {
	if maxQueued <= 0 {
		return m.store.Queue.Enqueue(ctx, spec)
	}
	duplicate, err = m.store.Queue.EnqueueWithin(ctx, spec, int64(maxQueued))
	if errors.Is(err, store.ErrQueueFull) {
		return false, queueFull(spec.TaskID, int64(maxQueued))
	}
	return duplicate, err
}

// submitWithin accepts a fresh execution of a task with max_queued: its
// queue message first, admitted by the quota, then its record (the worker
// creates the record if that write fails: the message is the execution).
// A refused execution leaves nothing behind.
func (m *Async) submitWithin(ctx context.Context, spec *execution.Spec, rec *execution.Record, maxQueued int32) (*execution.Record, error) {
	if _, err := m.enqueueWithin(ctx, spec, maxQueued); err != nil {
		return nil, err
	}
	if _, err := m.store.Records.Create(ctx, rec); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
		m.log.Warn("pending record not written; the worker will create it", "execution", rec.ID, "err", err)
	}
	return rec, nil
}

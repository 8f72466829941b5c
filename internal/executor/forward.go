package executor

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
)

// A sync or stream call that reaches a node which cannot run it now — it
// lacks the task's runtime, or has no free slot while another node has one
// — is handed on through the durable queue (its top band) and relayed
// back: the final record by its change notifications, the chunks from the
// chunk stream (the attach path). If the node running it dies, the queue
// runs it again elsewhere, and the caller still gets one answer. See
// docs/RATIONALE.md.

// forwardTo says whether a call for a task of runtime rt should be handed
// on: this node lacks rt (hasRuntime false) or has no free slot, and
// another live node has rt (and, for want of a slot, a free one).
func (m *SyncRuns) forwardTo(rt spearrt.Type, hasRuntime bool) bool {
	if hasRuntime {
		if free, waiting := m.slots.state(); free > 0 && waiting == 0 {
			return false
		}
	}
	return m.peerRuns(rt, hasRuntime)
}

// peerRuns says whether another live node has runtime rt ("": any) and,
// with needFree, a free slot, as the node registry last saw them.
func (c *core) peerRuns(rt spearrt.Type, needFree bool) bool {
	if c.opts.Peers == nil {
		return false
	}
	return slices.ContainsFunc(c.opts.Peers(), func(n store.NodeEntry) bool {
		if n.ID == c.opts.NodeID || rt != "" && !slices.Contains(n.Runtimes, string(rt)) {
			return false
		}
		return !needFree || n.SlotsTotal-n.SlotsBusy-n.Waiting > 0
	})
}

// elsewhere turns err, the failure to resolve task id here, into the task
// as stored when the reason is only that this node lacks its runtime and
// another live node has it: the work can run there.
func (c *core) elsewhere(ctx context.Context, id string, err error) (*task.Task, error) {
	if !errdefs.RuntimeUnavailable.Is(err) {
		return nil, err
	}
	t, lerr := c.registry.Lookup(ctx, id)
	if lerr != nil || !c.peerRuns(t.Artifact.Type, false) {
		return nil, err
	}
	return t, nil
}

// forward queues spec for another node and relays its outcome: chunks to
// onChunk (stream) as they are stored, then the final record. When ctx
// ends first, the execution is cancelled wherever it is.
func (m *forwarder) forward(ctx context.Context, spec *execution.Spec, t *task.Task, onChunk func(Chunk)) (*execution.Record, error) {
	spec.Runtime = string(t.Artifact.Type)
	if d, ok := ctx.Deadline(); ok {
		// One deadline end to end: the running node stops the function
		// when the caller would stop waiting.
		if left := time.Until(d).Milliseconds(); spec.TimeoutMs == 0 || left < spec.TimeoutMs {
			spec.TimeoutMs = max(left, 1)
		}
	}
	if rec, err := m.handOff(ctx, spec, onChunk); !errors.Is(err, errNotTaken) {
		return rec, err
	}
	changes, stop, err := m.store.Records.Changes(spec.ExecutionID)
	if err != nil {
		return nil, err
	}
	defer stop()
	if err := m.queueForward(ctx, spec); err != nil {
		return nil, err
	}
	m.log.Debug("handed on to another node through the queue", "execution", spec.ExecutionID, "runtime", spec.Runtime)
	rec, err := m.relayQueued(ctx, spec.ExecutionID, changes, onChunk, 0)
	if err == nil {
		m.holdRelayed(rec)
	}
	return rec, err
}

// relayQueued relays an execution handed on through the queue: its chunks
// from the chunk stream, from seq skip on, to onChunk (stream), then its
// final record.
func (m *forwarder) relayQueued(ctx context.Context, id string, changes <-chan *execution.Record, onChunk func(Chunk), skip int64) (*execution.Record, error) {
	if onChunk != nil {
		rec, err := m.views.Attach(ctx, id, func(c Chunk) error {
			if c.Seq >= skip {
				onChunk(c)
			}
			return nil
		})
		if err == nil && rec != nil && rec.Status.Terminal() {
			return rec, nil
		}
	}
	return m.awaitForwarded(ctx, id, changes)
}

// queueForward writes the PENDING record and queues spec. With a caller's
// id the record exists (claimID made it).
func (m *forwarder) queueForward(ctx context.Context, spec *execution.Spec) error {
	rec := execution.NewRecord(spec)
	if !spec.Idempotent && !spec.IDGiven {
		if err := m.store.Queue.Submit(ctx, spec, rec); err != nil {
			m.async.failUnqueued(rec, err)
			return err
		}
		return nil
	}
	if _, err := m.store.Queue.Enqueue(ctx, spec); err != nil {
		m.async.failUnqueued(rec, err)
		return err
	}
	return nil
}

// awaitForwarded waits for a forwarded execution's final record. When ctx
// ends first, it cancels the execution and waits a moment for the record
// that says so.
func (m *forwarder) awaitForwarded(ctx context.Context, id string, changes <-chan *execution.Record) (*execution.Record, error) {
	for {
		rec, _, err := m.store.Records.Get(ctx, id)
		if err == nil && rec.Status.Terminal() {
			return rec, nil
		}
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) && ctx.Err() == nil {
			return nil, err
		}
		select {
		case r := <-changes:
			if r != nil && r.Status.Terminal() {
				return r, nil
			}
			continue
		case <-time.After(time.Second): // a lost notification
			continue
		case <-ctx.Done():
		}
		return m.abandonForwarded(ctx, id, changes)
	}
}

// abandonForwarded cancels a forwarded execution whose caller stopped
// waiting, and returns its record: the final one if it comes within a
// few seconds (CANCELLED, or TIMEOUT for a caller's deadline).
func (m *forwarder) abandonForwarded(ctx context.Context, id string, changes <-chan *execution.Record) (*execution.Record, error) {
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	m.cancelAbandoned(bg, ctx, id)
	for {
		select {
		case r := <-changes:
			if r != nil && r.Status.Terminal() {
				return r, nil
			}
		case <-bg.Done():
			rec, _, err := m.store.Records.Get(context.WithoutCancel(ctx), id)
			return rec, err
		}
	}
}

// cancelAbandoned cancels a handed-on execution whose caller (ctx) stopped
// waiting, within bg.
func (m *forwarder) cancelAbandoned(bg, ctx context.Context, id string) {
	reason := "the caller stopped waiting"
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		reason = "the caller's deadline passed"
	}
	if _, err := m.cancels.Cancel(bg, id, reason, false); err != nil {
		m.log.Warn("cancelling a handed-on execution whose caller left", "execution", id, "err", err)
	}
}

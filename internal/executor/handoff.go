package executor

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/store"
)

// A sync or stream call handed on goes first straight to a peer that has
// a free slot (store.Control.OfferRun): the peer runs it at once, as its
// own sync run, and sends the chunks and the final record back over core
// NATS, so a hand-off costs two messages and no store write on the
// caller's path. The calling node supervises it: the peer says it is
// alive every aliveEvery; one that falls silent for silentLost (killed,
// cut off) is given up, its attempt marked as running in the store, and
// the execution queued, so that the queue runs it again elsewhere (the
// worker records the lost attempt) and the peer's late writes are fenced.
// A peer that finds the calling node gone (it stopped listening) stops the
// run. See docs/RATIONALE.md.

// handoffRequest is what a node sends the peer it hands a run to.
type handoffRequest struct {
	Spec   *execution.Spec `json:"spec"`
	Stream bool            `json:"stream,omitempty"`
}

const (
	// aliveEvery is how often a peer running a handed-on execution says so.
	aliveEvery = time.Second
	// silentLost is how long the calling node waits for any word from the
	// peer before it gives the run up as lost.
	silentLost = 3 * aliveEvery
	// offerWait bounds the wait for a peer's answer to an offer.
	offerWait = time.Second
	// offerPeers is how many peers an offer goes to before the call is
	// handed on through the queue instead.
	offerPeers = 2
	// creditEvery is how many chunks a peer sends before it waits for the
	// calling node to have relayed them (an alive message answered).
	creditEvery = 16
)

// errNotTaken: no peer took the offer; the call goes through the queue.
var errNotTaken = errors.New("no peer took the run")

// handOff offers spec to the peers with a free slot, the freest first, and
// relays the outcome from the first that takes it. errNotTaken: none did,
// or spec cannot go this way (a caller's id, an input too large for a
// message).
func (m *forwarder) handOff(ctx context.Context, spec *execution.Spec, onChunk func(Chunk)) (*execution.Record, error) {
	if spec.Idempotent || spec.IDGiven {
		return nil, errNotTaken
	}
	body, err := json.Marshal(handoffRequest{Spec: spec, Stream: onChunk != nil})
	if err != nil || len(body) > m.store.Sizes().Payload-4096 {
		return nil, errNotTaken
	}
	changes, stop, err := m.store.Records.Changes(spec.ExecutionID)
	if err != nil {
		return nil, errNotTaken
	}
	for _, peer := range m.freePeers(spec.Runtime) {
		h, err := m.store.Control.OfferRun(peer, body)
		if err != nil {
			break
		}
		rec, err := m.offered(ctx, h, spec, peer, onChunk, changes)
		if errors.Is(err, errNotTaken) {
			continue
		}
		stop()
		if err == nil {
			m.holdRelayed(rec)
		}
		return rec, err
	}
	stop()
	return nil, errNotTaken
}

// freePeers are the live nodes with spec's runtime and a free slot, as the
// node registry last saw them, the freest first.
func (c *core) freePeers(rt string) []string {
	if c.opts.Peers == nil {
		return nil
	}
	peers := slices.DeleteFunc(c.opts.Peers(), func(n store.NodeEntry) bool {
		return n.ID == c.opts.NodeID || !slices.Contains(n.Runtimes, rt) || n.SlotsTotal-n.SlotsBusy-n.Waiting <= 0
	})
	slices.SortFunc(peers, func(a, b store.NodeEntry) int {
		return cmp.Compare(b.SlotsTotal-b.SlotsBusy-b.Waiting, a.SlotsTotal-a.SlotsBusy-a.Waiting)
	})
	ids := make([]string, 0, offerPeers)
	for _, n := range peers[:min(len(peers), offerPeers)] {
		ids = append(ids, n.ID)
	}
	return ids
}

// offered waits for a peer's answer to an offer and, once it took the
// run, relays it. errNotTaken: it refused (or does not listen).
func (m *forwarder) offered(ctx context.Context, h *store.Handoff, spec *execution.Spec, peer string, onChunk func(Chunk), changes <-chan *execution.Record) (*execution.Record, error) {
	wctx, cancel := context.WithTimeout(ctx, offerWait)
	msg, err := h.Next(wctx)
	cancel()
	switch {
	case err == nil && msg.Kind == store.HandoffAccepted:
	case errors.Is(err, store.ErrNoRunner), err == nil:
		h.Close()
		return nil, errNotTaken
	case ctx.Err() != nil: // it may have taken the run just now
		defer h.Close()
		return m.abandonRelay(ctx, h, spec.ExecutionID)
	case err != nil: // no answer: it may run it, or not
		h.Close()
		m.log.Warn("a peer did not answer a handed-on run in time; it is queued", "execution", spec.ExecutionID, "peer", peer)
		return m.recoverLost(ctx, spec, peer, onChunk, 0, changes)
	}
	return m.relay(ctx, h, spec, peer, onChunk, changes)
}

// relay passes on what the peer running a handed-on execution sends: its
// chunks to onChunk, in order, until its final record.
func (m *forwarder) relay(ctx context.Context, h *store.Handoff, spec *execution.Spec, peer string, onChunk func(Chunk), changes <-chan *execution.Record) (*execution.Record, error) {
	defer h.Close()
	next, gap := int64(0), false
	for {
		wctx, cancel := context.WithTimeout(ctx, silentLost)
		msg, err := h.Next(wctx)
		cancel()
		if ctx.Err() != nil {
			return m.abandonRelay(ctx, h, spec.ExecutionID)
		}
		if err != nil {
			m.log.Warn("the peer running a handed-on execution went silent; it runs again elsewhere",
				"execution", spec.ExecutionID, "peer", peer, "silent", silentLost)
			h.Close()
			return m.recoverLost(ctx, spec, peer, onChunk, next, changes)
		}
		switch msg.Kind {
		case store.HandoffAlive:
			msg.Ack()
		case store.HandoffChunk:
			if gap = gap || msg.Seq != next; !gap && onChunk != nil {
				onChunk(Chunk{Seq: msg.Seq, Data: msg.Data})
				next++
			}
		case store.HandoffFailed:
			m.log.Debug("a peer could not start a run it took; it is queued", "execution", spec.ExecutionID, "peer", peer, "why", string(msg.Data))
			return nil, errNotTaken
		case store.HandoffFinal:
			return m.relayedFinal(ctx, spec.ExecutionID, msg.Data, onChunk, next, gap, changes)
		}
	}
}

// relayedFinal is the final record a peer sent (empty: it stored it,
// too large for a message). After a gap in the chunks, the rest comes
// from the chunk stream once the record is stored.
func (m *forwarder) relayedFinal(ctx context.Context, id string, data []byte, onChunk func(Chunk), next int64, gap bool, changes <-chan *execution.Record) (*execution.Record, error) {
	if len(data) == 0 || gap {
		return m.relayQueued(ctx, id, changes, onChunk, next)
	}
	rec := new(execution.Record)
	if err := json.Unmarshal(data, rec); err != nil {
		return nil, errdefs.Internal.New("a peer's final record of execution %s: %v", id, err)
	}
	return rec, nil
}

// abandonRelay cancels a handed-on execution whose caller stopped
// waiting, and returns its final record if the peer sends it within a few
// seconds (or ctx's error if the peer did not take it after all).
func (m *forwarder) abandonRelay(ctx context.Context, h *store.Handoff, id string) (*execution.Record, error) {
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	m.cancelAbandoned(bg, ctx, id)
	for {
		msg, err := h.Next(bg)
		if err != nil {
			rec, _, err := m.store.Records.Get(context.WithoutCancel(ctx), id)
			return rec, err
		}
		switch msg.Kind {
		case store.HandoffAlive:
			msg.Ack()
		case store.HandoffRefused, store.HandoffFailed:
			return nil, ctx.Err()
		case store.HandoffFinal:
			rec := new(execution.Record)
			if len(msg.Data) > 0 && json.Unmarshal(msg.Data, rec) == nil {
				return rec, nil
			}
		}
	}
}

// recoverLost has a handed-on execution whose peer went silent run again
// through the queue: the stored record is made to say that the peer runs
// it (unless it finished: then that is the answer), so that the worker
// that takes it records the peer's attempt as lost, and the peer's late
// writes, which expect what it stored or nothing, are fenced. The caller
// gets the chunks from next on.
func (m *forwarder) recoverLost(ctx context.Context, spec *execution.Spec, peer string, onChunk func(Chunk), next int64, changes <-chan *execution.Record) (*execution.Record, error) {
	rec, err := m.markLost(ctx, spec, peer)
	if err != nil {
		return nil, err
	}
	if !rec.Status.Terminal() {
		if _, err := m.store.Queue.Enqueue(ctx, spec); err != nil {
			return nil, err
		}
	}
	return m.relayQueued(ctx, spec.ExecutionID, changes, onChunk, next)
}

// markLost returns the stored record of a handed-on execution, first
// creating it, RUNNING on peer, when the peer stored none.
func (m *forwarder) markLost(ctx context.Context, spec *execution.Spec, peer string) (*execution.Record, error) {
	for {
		rec, _, err := m.store.Records.GetLatest(ctx, spec.ExecutionID)
		if err == nil || !errors.Is(err, errdefs.ErrNotFound) {
			return rec, err
		}
		rec = execution.NewRecord(spec)
		rec.Status, rec.Node, rec.Attempts, rec.StartedAt = execution.StatusRunning, peer, 1, spec.CreatedAt
		if _, err = m.store.Records.Create(ctx, rec); err == nil || !errors.Is(err, errdefs.ErrAlreadyExists) {
			return rec, err
		}
	}
}

// relayedHold is how long a node keeps the final record of a call it
// handed on, after the answer.
const relayedHold = 3 * time.Second

// holdRelayed keeps the final record of a call this node handed on in its
// live table for relayedHold, so that a status query here right after the
// answer finds it: the node that ran it writes it a moment later (and a
// change notification comes before the write is stored).
func (m *forwarder) holdRelayed(rec *execution.Record) {
	if rec == nil || !rec.Status.Terminal() {
		return
	}
	l := &live{rec: rec, done: make(chan struct{})}
	close(l.done)
	if m.lives.addLive(l) == nil {
		time.AfterFunc(relayedHold, func() { m.lives.forget(rec.ID) })
	}
}

// serve takes the runs other nodes offer this one until stop is
// called.
func (m *offers) serve() (stop func(), err error) {
	return m.store.Control.ServeRuns(m.opts.NodeID, func(o *store.RunOffer) { go m.take(o) })
}

// take answers a run another node offers: taken when this node can
// start it now (it has the task's runtime, a free slot, and is not
// stopping), refused otherwise.
func (m *offers) take(o *store.RunOffer) {
	var req handoffRequest
	if err := json.Unmarshal(o.Body, &req); err != nil || req.Spec == nil {
		_ = o.Send(store.HandoffRefused, 0, []byte("an offer this node cannot read"))
		return
	}
	ctx, cancel := context.WithTimeout(m.baseCtx, offerWait)
	t, art, err := m.registry.Artifact(ctx, req.Spec.TaskID)
	cancel()
	var rt spearrt.Runtime
	if err == nil {
		rt, err = m.engine.runtime(art.Type)
	}
	if free, waiting := m.slots.state(); err == nil && (free == 0 || waiting > 0 || m.isDraining()) {
		err = errors.New("no free slot")
	}
	if err != nil {
		_ = o.Send(store.HandoffRefused, 0, []byte(err.Error()))
		return
	}
	if err := o.Send(store.HandoffAccepted, 0, nil); err != nil {
		return
	}
	m.run(o, req, t, art, rt)
}

func (c *core) isDraining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining
}

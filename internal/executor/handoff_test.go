package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/testwait"
)

// peerEntries is a node registry view with one peer of the fake runtime
// with free slots.
func peerEntries(ids ...string) func() []store.NodeEntry {
	return func() []store.NodeEntry {
		var out []store.NodeEntry
		for _, id := range ids {
			out = append(out, store.NodeEntry{ID: id, Runtimes: []string{string(spearrt.TypeProcess)}, SlotsTotal: 4})
		}
		return out
	}
}

// fullNode returns node a (one slot, held by a sleeping sync run until the
// test ends) that sees peers as free, and node b that runs what a hands
// on.
func fullNode(t *testing.T, peers ...string) (h *harness, b *Manager) {
	t.Helper()
	h = newHarness(t, Options{Workers: 1, Shared: true, NodeID: "a", Peers: peerEntries(peers...)}, nil)
	b = h.newManager(Options{Workers: 2, Shared: true, NodeID: "b"})
	ctx, cancel := context.WithCancel(testCtx(t))
	t.Cleanup(cancel)
	hold := newSpec("sleep", execution.ModeSync, "")
	h.start(ctx, hold)
	h.rt.waitStarted(t, hold.ExecutionID)
	return h, b
}

// TestHandOffDirect: a sync and a stream call at a node with no free slot
// run on the peer it hands them to, straight (no queue): same answer,
// chunks in order, the peer's attempt recorded, and the record stored by
// the peer and visible at the calling node at once.
func TestHandOffDirect(t *testing.T) {
	h, _ := fullNode(t, "b")
	ctx := testCtx(t)

	spec := newSpec("echo", execution.ModeSync, "hello")
	rec, err := h.m.Runs.Run(ctx, spec, nil)
	if err != nil || rec.Status != execution.StatusCompleted || string(rec.Output) != "hello" || rec.Node != "b" {
		t.Fatalf("handed-on sync Run = %+v, %v; want COMPLETED on b with the echo", rec, err)
	}
	if got, err := h.m.Views.Get(ctx, spec.ExecutionID); err != nil || got.Status != execution.StatusCompleted ||
		len(got.History) != 1 || got.History[0].Node != "b" {
		t.Fatalf("Get at the calling node right after = %+v, %v", got, err)
	}
	testwait.Until(t, "the peer's record", func() bool {
		r, _, err := h.st.Records.Get(ctx, spec.ExecutionID)
		return err == nil && r.Status == execution.StatusCompleted && r.Node == "b" && len(r.History) == 1
	})
	if w, f, _ := h.st.Queue.Depth(ctx); w+f != 0 {
		t.Fatalf("queue depth %d after a direct hand-off; want 0", w+f)
	}

	stream := newSpec("chunks", execution.ModeStream, "200")
	var mu sync.Mutex
	var got []string
	rec, err = h.m.Runs.Run(ctx, stream, func(c Chunk) {
		mu.Lock()
		got = append(got, fmt.Sprintf("%d:%s", c.Seq, c.Data))
		mu.Unlock()
	})
	if err != nil || rec.Status != execution.StatusCompleted || rec.Node != "b" {
		t.Fatalf("handed-on stream Run = %+v, %v", rec, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 200 || got[0] != "0:chunk-0\n" || got[199] != "199:chunk-199\n" {
		t.Fatalf("relayed %d chunks (first %q); want 200 in order", len(got), got[:min(len(got), 1)])
	}
}

// TestHandOffPeerSilent: a peer that takes a run and then says nothing
// (killed, cut off) is given up: the run goes through the queue, runs
// once more, and the record lists the lost attempt with the peer's id.
func TestHandOffPeerSilent(t *testing.T) {
	h, _ := fullNode(t, "ghost")
	ctx := testCtx(t)
	took := make(chan struct{}, 1)
	stop, err := h.st.Control.ServeRuns("ghost", func(o *store.RunOffer) {
		_ = o.Send(store.HandoffAccepted, 0, nil)
		took <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	spec := newSpec("echo", execution.ModeSync, "again")
	rec, err := h.m.Runs.Run(ctx, spec, nil)
	recv(t, took, "the ghost's acceptance")
	if err != nil || rec.Status != execution.StatusCompleted || string(rec.Output) != "again" {
		t.Fatalf("Run = %+v, %v; want COMPLETED once the ghost was given up", rec, err)
	}
	if len(rec.History) != 2 || rec.History[0].Node != "ghost" || rec.History[0].ErrorCode != errdefs.AttemptLost.String() ||
		rec.Attempts != 2 {
		t.Fatalf("history %+v, attempts %d; want the ghost's lost attempt, then the run", rec.History, rec.Attempts)
	}
}

// TestHandOffCallerLeaves: the caller of a handed-on run leaves: the run
// stops on the peer, which records it cancelled; and a peer whose calling
// node stops listening stops the run by itself.
func TestHandOffCallerLeaves(t *testing.T) {
	h, _ := fullNode(t, "b")
	ctx, cancel := context.WithCancel(testCtx(t))
	spec := newSpec("sleep", execution.ModeSync, "")
	ran := make(chan *execution.Record, 1)
	go func() {
		rec, err := h.m.Runs.Run(ctx, spec, nil)
		if err != nil {
			t.Logf("Run: %v", err)
		}
		ran <- rec
	}()
	h.rt.waitStarted(t, spec.ExecutionID)
	cancel()
	rec := recv(t, ran, "Run to return")
	if rec == nil || rec.Status != execution.StatusCancelled || rec.Node != "b" {
		t.Fatalf("Run after the caller left = %+v; want CANCELLED on b", rec)
	}

	// A calling node that vanishes: the peer finds nobody listening.
	spec = newSpec("sleep", execution.ModeSync, "")
	body, _ := json.Marshal(handoffRequest{Spec: spec})
	ho, err := h.st.Control.OfferRun("b", body)
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := ho.Next(testCtx(t)); err != nil || msg.Kind != store.HandoffAccepted {
		t.Fatalf("offer answered %+v, %v; want accepted", msg, err)
	}
	h.rt.waitStarted(t, spec.ExecutionID)
	ho.Close()
	testwait.Until(t, "the orphaned run to stop", func() bool {
		return errors.Is(h.rt.causeOf(spec.ExecutionID), context.Canceled)
	})
	testwait.Until(t, "its record", func() bool {
		r, _, err := h.st.Records.Get(testCtx(t), spec.ExecutionID)
		return err == nil && r.Status == execution.StatusCancelled && r.ErrorCode == errdefs.CallerCancelled.String()
	})
}

// TestHandOffRefused: a peer without a free slot refuses, one that does
// not listen is passed over at once; the call goes through the queue and
// still runs, once.
func TestHandOffRefused(t *testing.T) {
	h, b := fullNode(t, "nobody", "b")
	ctx := testCtx(t)
	for range 2 { // fill b's slots
		hold := newSpec("sleep", execution.ModeSync, "")
		go func() { _, _ = b.Runs.Run(context.WithoutCancel(ctx), hold, nil) }()
		h.rt.waitStarted(t, hold.ExecutionID)
	}
	spec := newSpec("echo", execution.ModeSync, "queued")
	done := make(chan *execution.Record, 1)
	go func() {
		rec, err := h.m.Runs.Run(ctx, spec, nil)
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		done <- rec
	}()
	testwait.Until(t, "the call to be queued", func() bool {
		w, f, _ := h.st.Queue.Depth(ctx)
		return w+f == 1
	})
	b.Cancels.Cancel(ctx, h.rt.runOrder()[2], "", true) // frees one of b's slots
	rec := recv(t, done, "the queued call")
	if rec.Status != execution.StatusCompleted || string(rec.Output) != "queued" || !strings.HasPrefix(rec.Node, "b") ||
		len(rec.History) != 1 {
		t.Fatalf("Run = %+v; want COMPLETED on b through the queue, one attempt (none lost to the refusals)", rec)
	}
}

package executor

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/callback"
	"github.com/spear-go/spear/internal/execution"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/task"
	"github.com/spear-go/spear/internal/testwait"
)

// The executor's parts tested alone: each with fakes for the parts it
// uses (the store is a real embedded one: it is not a part).

// fakeRunner stands in for the engine: every execution completes at once
// with the output "ran <id>".
type fakeRunner struct {
	mu   sync.Mutex
	runs map[string]int
}

func (f *fakeRunner) runtime(spearrt.Type) (spearrt.Runtime, error) { return nil, nil }

func (f *fakeRunner) execute(_ context.Context, l *live, _ spearrt.Runtime, _ spearrt.Artifact, spec *execution.Spec, _ task.Limits, onChunk func(Chunk)) {
	f.mu.Lock()
	f.runs[spec.ExecutionID]++
	f.mu.Unlock()
	out := []byte("ran " + spec.ExecutionID)
	if onChunk != nil {
		onChunk(Chunk{Data: out})
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rec.Attempts++
	l.rec.Status, l.rec.Output, l.rec.OutputSize = execution.StatusCompleted, out, int64(len(out))
}

func (f *fakeRunner) classify(l *live, _ context.Context, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rec.Status, l.rec.ErrorMessage = execution.StatusFailed, err.Error()
}

func (f *fakeRunner) finish(l *live, _ time.Duration) { close(l.done) }

func (f *fakeRunner) runtimeOf(string) spearrt.Type { return spearrt.TypeProcess }

func (f *fakeRunner) runsOf(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs[id]
}

// TestDispatcherAlone: queued work is taken, run once by the runner it is
// given, stored and acked.
func TestDispatcherAlone(t *testing.T) {
	h := newHarness(t, Options{Workers: 2}, nil)
	shutdown(h.m, time.Second)
	fake := &fakeRunner{runs: map[string]int{}}
	m := h.newManagerWith(Options{Workers: 2}, func(m *Manager) { m.engine = fake })
	ctx := testCtx(t)
	var ids []string
	for range 5 {
		spec := newSpec("echo", execution.ModeAsync, "")
		if _, _, _, err := m.Async.Submit(ctx, spec); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, spec.ExecutionID)
	}
	for _, id := range ids {
		r := h.stored(id)
		if r.Status != execution.StatusCompleted || string(r.Output) != "ran "+id || fake.runsOf(id) != 1 {
			t.Fatalf("%s: %v %q, run %d times", id, r.Status, r.Output, fake.runsOf(id))
		}
		h.gone(id)
	}
}

// TestSyncRunsAlone: a sync run waits for a slot, runs through the runner
// it is given and answers its record, which is then stored.
func TestSyncRunsAlone(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	shutdown(h.m, time.Second)
	fake := &fakeRunner{runs: map[string]int{}}
	m := h.newManagerWith(Options{Workers: 1}, func(m *Manager) { m.engine = fake })
	spec := newSpec("echo", execution.ModeStream, "")
	var chunks []string
	r, err := m.Runs.Run(testCtx(t), spec, func(c Chunk) { chunks = append(chunks, string(c.Data)) })
	if err != nil || r.Status != execution.StatusCompleted || fake.runsOf(spec.ExecutionID) != 1 {
		t.Fatalf("Run = %+v, %v", r, err)
	}
	if len(chunks) != 1 || chunks[0] != "ran "+spec.ExecutionID {
		t.Fatalf("chunks %q", chunks)
	}
	if got := h.stored(spec.ExecutionID); string(got.Output) != "ran "+spec.ExecutionID {
		t.Fatalf("stored %+v", got)
	}
}

// fakeDeliverer stands in for the HTTP callback client.
type fakeDeliverer struct {
	mu     sync.Mutex
	bodies map[string]string
}

func (f *fakeDeliverer) Deliver(_ context.Context, _ string, id string, body []byte) callback.Outcome {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bodies[id] = string(body)
	return callback.Outcome{State: callback.StateDelivered, Attempts: 1, DeliveredAt: time.Now()}
}

func (f *fakeDeliverer) body(id string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.bodies[id]
	return b, ok
}

// TestOutboxAlone: a finished execution that asked for a callback goes
// through the durable outbox to the deliverer, and the outcome lands on
// its record.
func TestOutboxAlone(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	shutdown(h.m, time.Second)
	fake := &fakeDeliverer{bodies: map[string]string{}}
	m := h.newManagerWith(Options{Workers: 1, CallbackBody: func(r *execution.Record) []byte { return []byte(`{"executionId":"` + r.ID + `"}`) }},
		func(m *Manager) { m.callbacks = fake })
	spec := newSpec("echo", execution.ModeAsync, "")
	spec.CallbackURL = "http://127.0.0.1:1/hook"
	rec := execution.NewRecord(spec)
	rec.Status = execution.StatusCompleted
	if _, err := h.st.Records.Create(testCtx(t), rec); err != nil {
		t.Fatal(err)
	}
	m.outbox.notify(rec)
	testwait.Until(t, "the callback to be delivered and recorded", func() bool {
		r, _, err := h.st.Records.Get(context.Background(), spec.ExecutionID)
		return err == nil && r.Callback != nil && r.Callback.State == callback.StateDelivered
	})
	if body, ok := fake.body(spec.ExecutionID); !ok || !strings.Contains(body, spec.ExecutionID) {
		t.Fatalf("delivered body %q", body)
	}
}

package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/confine"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/registry"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
	"github.com/spear-go/spear/internal/testwait"
)

// testTask is the task every test execution runs.
const testTask = "fake"

// fakeRuntime runs "functions" in-process; the behaviour is chosen by
// Invocation.Function:
//
//	echo     copies the input to standard output
//	fail     writes "boom" to standard error and exits 3
//	sleep    blocks until the context ends and reports it
//	chunks   writes N (the input, a number) chunks "chunk-i\n"
//	huge     writes 1 MiB of output in 1 KiB chunks
//	flaky    exits 1 for the first N (the input) runs of an execution, then echoes "ok"
//	advance  moves the test clock forward by 200 ms, then succeeds
//	exit-on-cancel  like sleep, but when the context ends it exits 1 as if
//	         the function had failed on its own at that moment
//	pids     was refused a process (PidsLimitHit) and exits 1
//	pids-sleep  was refused a process and blocks until the context ends
//	pids-ok  was refused a process but coped: exits 0, reporting a sandbox
//	slow-stop  like sleep, but a graceful stop takes it slowStop to exit
//	gated    like sleep until the test closes gate, then echoes
type fakeRuntime struct {
	clock *fakeClock // for advance; may be nil

	mu      sync.Mutex
	calls   map[string]int   // runs per execution id
	order   []string         // execution ids in the order their runs began
	causes  map[string]error // why a sleeping run's context ended
	started chan string      // receives the id of each sleep run as it starts
	gate    chan struct{}    // a gated run waits for it to close
}

func newFakeRuntime(clock *fakeClock) *fakeRuntime {
	return &fakeRuntime{clock: clock, calls: map[string]int{}, causes: map[string]error{},
		started: make(chan string, 64), gate: make(chan struct{})}
}

func (f *fakeRuntime) Type() spearrt.Type { return spearrt.TypeProcess }

func (f *fakeRuntime) Run(ctx context.Context, inv *spearrt.Invocation) (spearrt.Result, error) {
	f.mu.Lock()
	f.calls[inv.ExecutionID]++
	f.order = append(f.order, inv.ExecutionID)
	n := f.calls[inv.ExecutionID]
	f.mu.Unlock()
	in, err := io.ReadAll(inv.Input)
	if err != nil {
		return spearrt.Result{}, err
	}
	switch inv.Function {
	case "echo":
		_, _ = inv.Stdout.Write(in)
		return spearrt.Result{}, nil
	case "fail":
		_, _ = io.WriteString(inv.Stderr, "starting\nboom\n")
		return spearrt.Result{ExitCode: 3}, nil
	case "sleep":
		f.started <- inv.ExecutionID
		<-ctx.Done()
		f.mu.Lock()
		f.causes[inv.ExecutionID] = context.Cause(ctx)
		f.mu.Unlock()
		return spearrt.Result{}, fmt.Errorf("stopped: %w", ctx.Err())
	case "gated": // blocks until the test closes gate, then echoes
		f.started <- inv.ExecutionID
		select {
		case <-f.gate:
		case <-ctx.Done():
			f.mu.Lock()
			f.causes[inv.ExecutionID] = context.Cause(ctx)
			f.mu.Unlock()
			return spearrt.Result{}, fmt.Errorf("stopped: %w", ctx.Err())
		}
		_, _ = inv.Stdout.Write(in)
		return spearrt.Result{}, nil
	case "slow-stop":
		f.started <- inv.ExecutionID
		<-ctx.Done()
		var graceful *spearrt.GracefulStop
		if errors.As(context.Cause(ctx), &graceful) {
			time.Sleep(slowStop) // the function's own clean-up
		}
		return spearrt.Result{}, fmt.Errorf("stopped: %w", ctx.Err())
	case "exit-on-cancel":
		f.started <- inv.ExecutionID
		<-ctx.Done()
		f.mu.Lock()
		f.causes[inv.ExecutionID] = context.Cause(ctx)
		f.mu.Unlock()
		return spearrt.Result{ExitCode: 1}, nil
	case "chunks":
		k, _ := strconv.Atoi(string(in))
		for i := range k {
			_, _ = fmt.Fprintf(inv.Stdout, "chunk-%d\n", i)
		}
		return spearrt.Result{}, nil
	case "huge":
		buf := make([]byte, 1024)
		for range 1024 {
			if ctx.Err() != nil {
				return spearrt.Result{}, fmt.Errorf("stopped: %w", ctx.Err())
			}
			_, _ = inv.Stdout.Write(buf)
		}
		return spearrt.Result{}, nil
	case "flaky":
		k, _ := strconv.Atoi(string(in))
		if n <= k {
			_, _ = fmt.Fprintf(inv.Stderr, "flaky failure %d\n", n)
			return spearrt.Result{ExitCode: 1}, nil
		}
		_, _ = io.WriteString(inv.Stdout, "ok")
		return spearrt.Result{}, nil
	case "advance":
		f.clock.Advance(200 * time.Millisecond)
		return spearrt.Result{}, nil
	case "pids":
		return spearrt.Result{ExitCode: 1, PidsLimitHit: true}, nil
	case "pids-sleep":
		<-ctx.Done()
		return spearrt.Result{ExitCode: 137, PidsLimitHit: true}, fmt.Errorf("killed: %w", ctx.Err())
	case "pids-ok":
		return spearrt.Result{PidsLimitHit: true, Sandbox: "process-group,env"}, nil
	}
	return spearrt.Result{}, errdefs.FunctionNotFound.New("no function %q", inv.Function)
}

func (f *fakeRuntime) callsOf(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

func (f *fakeRuntime) runOrder() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.order...)
}

func (f *fakeRuntime) causeOf(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.causes[id]
}

// waitStarted waits for the sleep run of execution id to start.
func (f *fakeRuntime) waitStarted(t *testing.T, id string) {
	t.Helper()
	for {
		if got := recv(t, f.started, "a sleep run to start"); got == id {
			return
		}
	}
}

// slowStop is how long the fake slow-stop function takes to exit once
// asked to gently: longer than a node waits for another's cancel answer.
const slowStop = 2 * remoteWait

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// hooks counts Finished calls per execution.
type hooks struct {
	mu       sync.Mutex
	finished map[string]int
}

func (h *hooks) Finished(r *execution.Record, _ spearrt.Type, _ time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.finished[r.ID]++
}

func (h *hooks) CallbackDelivered(string) {}

func (h *hooks) Retried(*execution.Record) {}

func (h *hooks) count(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.finished[id]
}

// harness is a store, a registry with the fake task and a started Manager.
type harness struct {
	t     *testing.T
	st    *store.Store
	reg   *registry.Registry
	rt    *fakeRuntime
	hooks *hooks
	m     *Manager
}

// newHarness opens a store in a temporary directory, registers the fake
// task and starts a Manager with opts. With a clock, the Manager and the
// advance function use it.
func newHarness(t *testing.T, opts Options, clock *fakeClock) *harness {
	t.Helper()
	ctx := testCtx(t)
	dir := t.TempDir()
	st, err := store.Open(ctx, store.Options{DataDir: filepath.Join(dir, "data"), AckWait: 10 * time.Second})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(st.Close)
	h := &harness{t: t, st: st, rt: newFakeRuntime(clock), hooks: &hooks{finished: map[string]int{}}}
	if clock != nil {
		opts.Now = clock.Now
	}
	runtimes := map[spearrt.Type]spearrt.Runtime{spearrt.TypeProcess: h.rt}
	roots, err := confine.New([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	h.reg = registry.New(st, runtimes, roots, time.Now, slog.New(slog.DiscardHandler))
	bin := filepath.Join(dir, "fn")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.reg.Register(ctx, registry.Registration{ID: testTask,
		Artifact: task.Artifact{Type: spearrt.TypeProcess, Location: bin}}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	h.m = h.newManager(opts)
	return h
}

// newManager starts another Manager over the harness's store and registry;
// it is shut down when the test ends (before the store closes).
func (h *harness) newManager(opts Options) *Manager {
	h.t.Helper()
	return h.newManagerWith(opts, func(*Manager) {})
}

// newManagerWith is newManager with parts replaced (by fakes) before the
// Manager starts.
func (h *harness) newManagerWith(opts Options, replace func(*Manager)) *Manager {
	h.t.Helper()
	opts.Hooks = h.hooks
	if opts.NodeID == "" {
		opts.NodeID = "node-test"
	}
	m := New(opts, h.st, h.reg, map[spearrt.Type]spearrt.Runtime{spearrt.TypeProcess: h.rt})
	replace(m)
	if err := m.Start(testCtx(h.t)); err != nil {
		h.t.Fatalf("Start: %v", err)
	}
	h.t.Cleanup(func() { shutdown(m, 5*time.Second) })
	return m
}

// shutdown shuts m down, giving running executions grace to finish.
func shutdown(m *Manager, grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	m.Shutdown(ctx)
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newSpec returns a spec of the fake task running fn.
func newSpec(fn string, mode execution.Mode, input string) *execution.Spec {
	return &execution.Spec{ExecutionID: execution.NewID(time.Now()), TaskID: testTask, Runtime: string(spearrt.TypeProcess),
		Function: fn, Mode: mode, Input: []byte(input), CreatedAt: time.Now()}
}

// wait waits for execution id to be terminal and returns its record.
func (h *harness) wait(m *Manager, id string) *execution.Record {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := m.Views.Wait(ctx, id)
	if err != nil {
		h.t.Fatalf("Wait(%s): %v", id, err)
	}
	if !r.Status.Terminal() {
		h.t.Fatalf("execution %s still %v after 30s", id, r.Status)
	}
	return r
}

// stored waits until the store holds a terminal record of id and returns it.
func (h *harness) stored(id string) *execution.Record {
	h.t.Helper()
	var r *execution.Record
	testwait.Until(h.t, "the terminal record of "+id+" in the store", func() bool {
		got, _, err := h.st.Records.Get(context.Background(), id)
		if err != nil || !got.Status.Terminal() {
			return false
		}
		r = got
		return true
	})
	return r
}

// gone waits until execution id has left the durable queue.
func (h *harness) gone(id string) {
	h.t.Helper()
	testwait.Until(h.t, id+" to leave the queue", func() bool {
		q, err := h.st.Queue.Has(context.Background(), testTask, id)
		return err == nil && !q
	})
}

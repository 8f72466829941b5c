package executor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
	"github.com/spear-go/spear/internal/testwait"
)

func TestRunSync(t *testing.T) {
	h := newHarness(t, Options{Workers: 2, MaxOutputBytes: 4096}, nil)
	tests := []struct {
		name      string
		fn        string
		input     string
		timeoutMs int64
		status    execution.Status
		code      string
		exit      int32
		output    string
		msg       []string // substrings of the error message
	}{
		{name: "echo", fn: "echo", input: "hello", status: execution.StatusCompleted, output: "hello"},
		{name: "empty output", fn: "echo", status: execution.StatusCompleted},
		{name: "fail", fn: "fail", status: execution.StatusFailed, code: errdefs.FunctionFailed.String(), exit: 3,
			msg: []string{"exit status 3", "boom"}},
		{name: "timeout", fn: "sleep", timeoutMs: 50, status: execution.StatusTimeout, code: errdefs.ExecutionTimeout.String(), exit: -1,
			msg: []string{"50ms"}},
		{name: "output too large", fn: "huge", status: execution.StatusFailed, code: errdefs.OutputTooLarge.String(), exit: -1,
			msg: []string{"4096"}},
		{name: "runtime error", fn: "nope", status: execution.StatusFailed, code: "FUNCTION_NOT_FOUND", exit: -1},
		{name: "pids limit", fn: "pids", status: execution.StatusFailed, code: errdefs.PidsLimit.String(), exit: 1,
			msg: []string{"process limit"}},
		{name: "pids limit then timeout", fn: "pids-sleep", timeoutMs: 50, status: execution.StatusFailed, code: errdefs.PidsLimit.String(), exit: -1},
		{name: "pids limit coped with", fn: "pids-ok", status: execution.StatusCompleted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := newSpec(tc.fn, execution.ModeSync, tc.input)
			spec.TimeoutMs = tc.timeoutMs
			r, err := h.m.Runs.Run(testCtx(t), spec, nil)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if r.Status != tc.status || r.ErrorCode != tc.code || r.ExitCode != tc.exit {
				t.Fatalf("record status=%v code=%q exit=%d msg=%q; want %v %q %d",
					r.Status, r.ErrorCode, r.ExitCode, r.ErrorMessage, tc.status, tc.code, tc.exit)
			}
			if tc.status == execution.StatusCompleted && string(r.Output) != tc.output {
				t.Fatalf("output %q, want %q", r.Output, tc.output)
			}
			for _, m := range tc.msg {
				if !strings.Contains(r.ErrorMessage, m) {
					t.Fatalf("error message %q lacks %q", r.ErrorMessage, m)
				}
			}
			if r.Attempts != 1 || r.Node != "node-test" || r.StartedAt.IsZero() || r.CompletedAt.IsZero() || r.Mode != execution.ModeSync {
				t.Fatalf("record bookkeeping: %+v", r)
			}
			if tc.fn == "pids-ok" && r.Sandbox != "process-group,env" {
				t.Fatalf("record sandbox %q, want the runtime's", r.Sandbox)
			}
			if tc.fn == "fail" && len(r.Logs) != 2 {
				t.Fatalf("logs = %+v, want the two stderr lines", r.Logs)
			}
			// Visible at once (live until persisted), then from the store.
			got, err := h.m.Views.Get(testCtx(t), r.ID)
			if err != nil || got.Status != tc.status {
				t.Fatalf("Get right after Run = %+v, %v", got, err)
			}
			st := h.stored(r.ID)
			if st.Status != tc.status || st.ErrorCode != tc.code || string(st.Output) != string(r.Output) {
				t.Fatalf("stored record %+v differs from the returned one %+v", st, r)
			}
			if n := h.hooks.count(r.ID); n != 1 {
				t.Fatalf("Finished hook called %d times, want 1", n)
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx := testCtx(t)
	spec := newSpec("echo", execution.ModeSync, "")
	spec.TaskID = "missing"
	if _, err := h.m.Runs.Run(ctx, spec, nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Run of an unknown task: %v, want NotFound", err)
	}
	if _, err := h.m.Views.Get(ctx, "bad id!"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("Get(bad id): %v, want InvalidArgument", err)
	}
	if _, err := h.m.Views.Get(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get(unknown): %v, want NotFound", err)
	}
}

func TestRunChunks(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	var chunks []Chunk
	r, err := h.m.Runs.Run(testCtx(t), newSpec("chunks", execution.ModeStream, "5"), func(c Chunk) { chunks = append(chunks, c) })
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != execution.StatusCompleted || len(chunks) != 5 {
		t.Fatalf("status %v with %d chunks, want COMPLETED with 5", r.Status, len(chunks))
	}
	var all strings.Builder
	for i, c := range chunks {
		if c.Seq != int64(i) || string(c.Data) != fmt.Sprintf("chunk-%d\n", i) {
			t.Fatalf("chunk %d = seq %d %q", i, c.Seq, c.Data)
		}
		all.Write(c.Data)
	}
	if string(r.Output) != all.String() {
		t.Fatalf("output %q is not the chunks joined %q", r.Output, all.String())
	}
}

func TestRunCallerCancel(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	spec := newSpec("sleep", execution.ModeSync, "")
	done := make(chan *execution.Record, 1)
	go func() {
		r, err := h.m.Runs.Run(ctx, spec, nil)
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		done <- r
	}()
	h.rt.waitStarted(t, spec.ExecutionID)
	if running, _ := h.m.Counts(); running != 1 {
		t.Fatalf("Counts running = %d, want 1", running)
	}
	if n := h.m.LiveOfTask(testTask); n != 1 {
		t.Fatalf("LiveOfTask = %d, want 1", n)
	}
	cancel()
	r := recv(t, done, "Run to return")
	if r == nil || r.Status != execution.StatusCancelled {
		t.Fatalf("record after the caller left: %+v", r)
	}
	if cause := h.rt.causeOf(spec.ExecutionID); !errors.Is(cause, context.Canceled) {
		t.Fatalf("runtime saw cause %v", cause)
	}
	h.stored(spec.ExecutionID)
}

func TestRunWaitsForSlotInPriorityOrder(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	blocker := newSpec("sleep", execution.ModeSync, "")
	go func() { _, _ = h.m.Runs.Run(ctx, blocker, nil) }()
	h.rt.waitStarted(t, blocker.ExecutionID)

	var wg sync.WaitGroup
	byPrio := map[int32]string{}
	for i, prio := range []int32{0, 7, 3} {
		spec := newSpec("echo", execution.ModeSync, "")
		spec.Priority = prio
		byPrio[prio] = spec.ExecutionID
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := h.m.Runs.Run(testCtx(t), spec, nil)
			if err != nil || r.Status != execution.StatusCompleted {
				t.Errorf("Run: %+v, %v", r, err)
			}
		}()
		waitWaiters(t, h.m.slots, i+1)
	}
	if running, waiting := h.m.Counts(); running != 1 || waiting != 3 {
		t.Fatalf("Counts = %d running, %d waiting; want 1, 3", running, waiting)
	}
	cancel() // frees the slot
	wg.Wait()
	want := []string{blocker.ExecutionID, byPrio[7], byPrio[3], byPrio[0]}
	if got := h.rt.runOrder(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("runs began in order %v, want %v (blocker, then priority 7, 3, 0)", got, want)
	}
}

func TestSubmitAsync(t *testing.T) {
	h := newHarness(t, Options{Workers: 2}, nil)
	ctx := testCtx(t)
	spec := newSpec("echo", execution.ModeAsync, "async hi")
	rec, est, _, err := h.m.Async.Submit(ctx, spec)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if rec.Status != execution.StatusPending || rec.ID != spec.ExecutionID || est <= 0 {
		t.Fatalf("Submit = %+v, estimate %v", rec, est)
	}
	r := h.wait(h.m, spec.ExecutionID)
	if r.Status != execution.StatusCompleted || string(r.Output) != "async hi" || r.Attempts != 1 || r.Mode != execution.ModeAsync {
		t.Fatalf("async record = %+v", r)
	}
	h.gone(spec.ExecutionID)
	if n := h.hooks.count(spec.ExecutionID); n != 1 {
		t.Fatalf("Finished hook called %d times, want 1", n)
	}

	bad := newSpec("echo", execution.ModeAsync, "")
	bad.TaskID = "missing"
	if _, _, _, err := h.m.Async.Submit(ctx, bad); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Submit of an unknown task: %v, want NotFound", err)
	}
}

func TestAsyncRetries(t *testing.T) {
	h := newHarness(t, Options{Workers: 2, MaxOutputBytes: 4096}, nil)
	tests := []struct {
		name       string
		fn, input  string
		maxRetries int32
		status     execution.Status
		attempts   int32
	}{
		{"succeeds on the third attempt", "flaky", "2", 2, execution.StatusCompleted, 3},
		{"fails after its retries", "fail", "", 1, execution.StatusFailed, 2},
		{"no retries", "fail", "", 0, execution.StatusFailed, 1},
		{"output too large is not retried", "huge", "", 3, execution.StatusFailed, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := newSpec(tc.fn, execution.ModeAsync, tc.input)
			spec.MaxRetries = tc.maxRetries
			if _, _, _, err := h.m.Async.Submit(testCtx(t), spec); err != nil {
				t.Fatal(err)
			}
			r := h.wait(h.m, spec.ExecutionID)
			if r.Status != tc.status || r.Attempts != tc.attempts {
				t.Fatalf("record status %v attempts %d (%s %s); want %v after %d",
					r.Status, r.Attempts, r.ErrorCode, r.ErrorMessage, tc.status, tc.attempts)
			}
			if n := h.rt.callsOf(spec.ExecutionID); n != int(tc.attempts) {
				t.Fatalf("runtime ran it %d times, want %d", n, tc.attempts)
			}
			if st := h.stored(spec.ExecutionID); st.Status != tc.status || st.Attempts != tc.attempts {
				t.Fatalf("stored record status %v attempts %d", st.Status, st.Attempts)
			}
			h.gone(spec.ExecutionID)
			if n := h.hooks.count(spec.ExecutionID); n != 1 {
				t.Fatalf("Finished hook called %d times, want 1", n)
			}
		})
	}
}

func TestCancelQueued(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx := testCtx(t)
	blockCtx, unblock := context.WithCancel(ctx)
	defer unblock()
	blocker := newSpec("sleep", execution.ModeSync, "")
	blocked := make(chan struct{})
	go func() { defer close(blocked); _, _ = h.m.Runs.Run(blockCtx, blocker, nil) }()
	h.rt.waitStarted(t, blocker.ExecutionID)

	spec := newSpec("echo", execution.ModeAsync, "")
	if _, _, _, err := h.m.Async.Submit(ctx, spec); err != nil {
		t.Fatal(err)
	}
	out, err := h.m.Cancels.Cancel(ctx, spec.ExecutionID, "not needed", false)
	if err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if !out.Cancelled || out.Status != execution.StatusCancelled {
		t.Fatalf("Cancel = %+v, want cancelled", out)
	}
	unblock()
	recv(t, blocked, "the blocker to stop")
	h.gone(spec.ExecutionID) // the worker takes it and drops it
	r := h.stored(spec.ExecutionID)
	if r.Status != execution.StatusCancelled || r.ErrorCode != errdefs.Cancelled.String() || !strings.Contains(r.ErrorMessage, "not needed") {
		t.Fatalf("record = %+v", r)
	}
	if n := h.rt.callsOf(spec.ExecutionID); n != 0 {
		t.Fatalf("cancelled execution ran %d times", n)
	}
	if n := h.hooks.count(spec.ExecutionID); n != 1 {
		t.Fatalf("Finished hook called %d times, want 1", n)
	}
	if n, last := h.m.TaskStats(testTask); n != 2 || last != execution.StatusCancelled {
		t.Fatalf("TaskStats = %d, %v; want 2 (blocker, cancelled), CANCELLED", n, last)
	}
}

// TestCancelQueuedWithdraws: a cancel of an execution waiting in the
// queue (accepted in one write: its message is its record) takes the
// message out at once, so that no worker, on any node however late, takes
// it and runs it before its claim (lateclaim.go) finds the cancel.
func TestCancelQueuedWithdraws(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx := testCtx(t)
	shutdown(h.m, time.Second) // no worker takes the message
	m := New(Options{Workers: 1, NodeID: "node-a"}, h.st, h.reg, h.m.runtimes)

	spec := newSpec("echo", execution.ModeAsync, "")
	if err := h.st.Queue.Accept(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if out, err := m.Cancels.Cancel(ctx, spec.ExecutionID, "", false); err != nil || out.Status != execution.StatusCancelled {
		t.Fatalf("Cancel = %+v, %v", out, err)
	}
	if queued, err := h.st.Queue.Has(ctx, testTask, spec.ExecutionID); err != nil || queued {
		t.Fatalf("Queue.Has after the cancel = %v, %v; want the message withdrawn", queued, err)
	}
	if r := h.stored(spec.ExecutionID); r.Status != execution.StatusCancelled {
		t.Fatalf("record = %+v", r)
	}
}

func TestCancelRunning(t *testing.T) {
	for _, mode := range []execution.Mode{execution.ModeSync, execution.ModeAsync} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newHarness(t, Options{Workers: 1}, nil)
			ctx := testCtx(t)
			spec := newSpec("sleep", mode, "")
			ran := h.start(ctx, spec)
			h.rt.waitStarted(t, spec.ExecutionID)
			if live := h.m.Live(); len(live) != 1 || live[0].Status != execution.StatusRunning {
				t.Fatalf("Live = %+v, want the running execution", live)
			}
			out, err := h.m.Cancels.Cancel(ctx, spec.ExecutionID, "", true)
			if err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			if !out.Cancelled || out.Status != execution.StatusCancelled {
				t.Fatalf("Cancel = %+v", out)
			}
			if cause := h.rt.causeOf(spec.ExecutionID); !errors.Is(cause, errCancelled) {
				t.Fatalf("runtime saw cause %v, want a cancel", cause)
			}
			if mode == execution.ModeSync {
				if r := recv(t, ran, "Run to return"); r.Status != execution.StatusCancelled {
					t.Fatalf("Run returned %+v", r)
				}
			} else {
				h.gone(spec.ExecutionID)
			}
			if r := h.stored(spec.ExecutionID); r.Status != execution.StatusCancelled || r.ErrorCode != errdefs.Cancelled.String() {
				t.Fatalf("stored record = %+v", r)
			}
			if n := h.rt.callsOf(spec.ExecutionID); n != 1 {
				t.Fatalf("ran %d times, want 1 (a cancelled run is not retried)", n)
			}
		})
	}
}

// start starts spec on h's manager: a sync or stream one runs in the
// background and its record comes on the channel returned; an async one
// is submitted.
func (h *harness) start(ctx context.Context, spec *execution.Spec) <-chan *execution.Record {
	h.t.Helper()
	ran := make(chan *execution.Record, 1)
	if spec.Mode == execution.ModeAsync {
		if _, _, _, err := h.m.Async.Submit(ctx, spec); err != nil {
			h.t.Fatal(err)
		}
		return ran
	}
	go func() {
		r, err := h.m.Runs.Run(ctx, spec, nil)
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
		ran <- r
	}()
	return ran
}

// TestCancelThroughAnotherNode: an execution running on one node and
// cancelled through another that shares its store, gently, by a function
// that takes longer to exit than the nodes wait for each other's answer:
// the cancel answers CANCELLED once it stopped, and the record is the
// running node's (its attempt in the history), not one the asking node
// wrote over it.
func TestCancelThroughAnotherNode(t *testing.T) {
	for _, mode := range []execution.Mode{execution.ModeSync, execution.ModeAsync} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newHarness(t, Options{Workers: 1, Shared: true, NodeID: "node-a", StopGrace: 10 * time.Second}, nil)
			other := h.newManager(Options{Workers: 1, Shared: true, NodeID: "node-b", StopGrace: 10 * time.Second})
			ctx := testCtx(t)
			spec := newSpec("slow-stop", mode, "")
			ran := h.start(ctx, spec)
			h.rt.waitStarted(t, spec.ExecutionID)
			runner, via := h.m, other
			if len(h.m.Live()) == 0 { // the other node took the async one
				runner, via = other, h.m
			}
			out, err := via.Cancels.Cancel(ctx, spec.ExecutionID, "e2e", false)
			if err != nil || !out.Cancelled || out.Status != execution.StatusCancelled {
				t.Fatalf("Cancel through the other node = %+v, %v; want cancelled", out, err)
			}
			if mode == execution.ModeSync {
				recv(t, ran, "Run to return")
			}
			r := h.stored(spec.ExecutionID)
			if r.Status != execution.StatusCancelled || len(r.History) != 1 || r.History[0].Node != runner.opts.NodeID ||
				r.History[0].Status != execution.StatusCancelled {
				t.Fatalf("stored record = %+v; want CANCELLED with the attempt on %s", r, runner.opts.NodeID)
			}
		})
	}
}

// TestCancelRacingFailure cancels an async execution whose function fails
// on its own just as the cancel arrives: it must not be retried.
func TestCancelRacingFailure(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx := testCtx(t)
	spec := newSpec("exit-on-cancel", execution.ModeAsync, "")
	spec.MaxRetries = 2
	if _, _, _, err := h.m.Async.Submit(ctx, spec); err != nil {
		t.Fatal(err)
	}
	h.rt.waitStarted(t, spec.ExecutionID)
	out, err := h.m.Cancels.Cancel(ctx, spec.ExecutionID, "", false)
	if err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if !out.Status.Terminal() {
		t.Fatalf("Cancel = %+v, want a terminal status", out)
	}
	h.gone(spec.ExecutionID)
	r := h.stored(spec.ExecutionID)
	if r.Status != out.Status || r.Attempts != 1 {
		t.Fatalf("stored record = %+v; want %v after 1 attempt", r, out.Status)
	}
	if n := h.rt.callsOf(spec.ExecutionID); n != 1 {
		t.Fatalf("ran %d times after a cancel, want 1", n)
	}
}

func TestCancelFinishedAndUnknown(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx := testCtx(t)
	spec := newSpec("echo", execution.ModeSync, "x")
	if r, err := h.m.Runs.Run(ctx, spec, nil); err != nil || r.Status != execution.StatusCompleted {
		t.Fatalf("Run = %+v, %v", r, err)
	}
	for _, when := range []string{"just finished", "persisted"} {
		if when == "persisted" {
			h.stored(spec.ExecutionID)
			testwait.Until(t, "the execution to leave the live table", func() bool { return len(h.m.Live()) == 0 })
		}
		out, err := h.m.Cancels.Cancel(ctx, spec.ExecutionID, "", false)
		if err != nil || out.Cancelled || out.Status != execution.StatusCompleted {
			t.Fatalf("Cancel of a finished execution (%s) = %+v, %v", when, out, err)
		}
	}
	if r := h.stored(spec.ExecutionID); r.Status != execution.StatusCompleted {
		t.Fatalf("record after cancel = %+v", r)
	}
	if _, err := h.m.Cancels.Cancel(ctx, "unknown", "", false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Cancel(unknown): %v, want NotFound", err)
	}
	if _, err := h.m.Cancels.Cancel(ctx, "bad id!", "", false); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("Cancel(bad id): %v, want InvalidArgument", err)
	}
}

func TestShutdownLeavesQueuedWork(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx := testCtx(t)
	blocker := newSpec("sleep", execution.ModeSync, "")
	blocked := make(chan *execution.Record, 1)
	go func() {
		r, _ := h.m.Runs.Run(ctx, blocker, nil)
		blocked <- r
	}()
	h.rt.waitStarted(t, blocker.ExecutionID)
	var queued []string
	for i := range 3 {
		spec := newSpec("echo", execution.ModeAsync, fmt.Sprint("q", i))
		if _, _, _, err := h.m.Async.Submit(ctx, spec); err != nil {
			t.Fatal(err)
		}
		queued = append(queued, spec.ExecutionID)
	}

	shutdown(h.m, 200*time.Millisecond)
	if r := recv(t, blocked, "the sync run to end"); r == nil || r.Status != execution.StatusFailed || r.ErrorCode != errdefs.NodeShutdown.String() {
		t.Fatalf("sync run cut by shutdown = %+v", r)
	}
	// Its record is durable once Shutdown returns.
	if r, _, err := h.st.Records.Get(ctx, blocker.ExecutionID); err != nil || r.ErrorCode != errdefs.NodeShutdown.String() {
		t.Fatalf("stored record of the sync run = %+v, %v", r, err)
	}
	if _, _, _, err := h.m.Async.Submit(ctx, newSpec("echo", execution.ModeAsync, "")); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Submit after shutdown: %v, want Unavailable", err)
	}
	for _, id := range queued {
		q, err := h.st.Queue.Has(ctx, testTask, id)
		if err != nil || !q {
			t.Fatalf("IsQueued(%s) after shutdown = %v, %v; want still queued", id, q, err)
		}
		r, _, err := h.st.Records.Get(ctx, id)
		if err != nil || r.Status != execution.StatusPending {
			t.Fatalf("record of %s after shutdown = %+v, %v; want PENDING", id, r, err)
		}
		if n := h.rt.callsOf(id); n != 0 {
			t.Fatalf("%s ran %d times before shutdown", id, n)
		}
	}

	m2 := h.newManager(Options{Workers: 2, NodeID: "node-2"})
	for i, id := range queued {
		r := h.wait(m2, id)
		if r.Status != execution.StatusCompleted || string(r.Output) != fmt.Sprint("q", i) || r.Node != "node-2" {
			t.Fatalf("record of %s on the new node = %+v", id, r)
		}
		h.gone(id)
	}
}

func TestShutdownRequeuesRunningAsync(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx := testCtx(t)
	spec := newSpec("sleep", execution.ModeAsync, "")
	if _, _, _, err := h.m.Async.Submit(ctx, spec); err != nil {
		t.Fatal(err)
	}
	h.rt.waitStarted(t, spec.ExecutionID)
	shutdown(h.m, 50*time.Millisecond)
	if cause := h.rt.causeOf(spec.ExecutionID); !errors.Is(cause, errShutdown) {
		t.Fatalf("runtime saw cause %v, want the shutdown", cause)
	}
	r, _, err := h.st.Records.Get(ctx, spec.ExecutionID)
	if err != nil || r.Status != execution.StatusPending {
		t.Fatalf("record after shutdown = %+v, %v; want PENDING", r, err)
	}
	if q, err := h.st.Queue.Has(ctx, testTask, spec.ExecutionID); err != nil || !q {
		t.Fatalf("IsQueued after shutdown = %v, %v; want true", q, err)
	}
	// Another node takes it over; it sleeps again, so cancel it there.
	m2 := h.newManager(Options{Workers: 1, NodeID: "node-2"})
	h.rt.waitStarted(t, spec.ExecutionID)
	if out, err := m2.Cancels.Cancel(ctx, spec.ExecutionID, "", false); err != nil || !out.Cancelled {
		t.Fatalf("Cancel on the new node = %+v, %v", out, err)
	}
	h.gone(spec.ExecutionID)
	if n := h.rt.callsOf(spec.ExecutionID); n != 2 {
		t.Fatalf("ran %d times, want 2 (once per node)", n)
	}
}

func TestEstimate(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, Options{Workers: 1}, clock)
	ctx := testCtx(t)
	// estimate refreshes the cached queue depth at most every 100 ms of
	// the (fake) clock; advancing it forces a fresh look.
	fake, err := h.reg.Get(ctx, testTask)
	if err != nil {
		t.Fatal(err)
	}
	estimate := func() time.Duration {
		clock.Advance(time.Second)
		return h.m.async.estimate(ctx, fake, store.Band(0), false)
	}
	if got := estimate(); got != 100*time.Millisecond {
		t.Fatalf("estimate with no history = %v, want the 100ms prior", got)
	}
	for range 3 {
		r, err := h.m.Runs.Run(ctx, newSpec("advance", execution.ModeSync, ""), nil)
		if err != nil || r.Status != execution.StatusCompleted || r.DurationMs != 200 {
			t.Fatalf("Run = %+v, %v; want COMPLETED in 200ms", r, err)
		}
	}
	if got := estimate(); got != 200*time.Millisecond {
		t.Fatalf("estimate after three 200ms runs = %v, want 200ms", got)
	}

	// Occupy the only worker, then queue work: the running one and each
	// queued execution add a round.
	blockCtx, unblock := context.WithCancel(ctx)
	defer unblock()
	blocker := newSpec("sleep", execution.ModeSync, "")
	go func() { _, _ = h.m.Runs.Run(blockCtx, blocker, nil) }()
	h.rt.waitStarted(t, blocker.ExecutionID)
	var ids []string
	for i := range 3 {
		spec := newSpec("advance", execution.ModeAsync, "")
		if _, _, _, err := h.m.Async.Submit(ctx, spec); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, spec.ExecutionID)
		want := time.Duration(i+3) * 200 * time.Millisecond
		var got time.Duration
		testwait.Until(t, fmt.Sprintf("the estimate to count %d queued", i+1), func() bool {
			got = estimate()
			return got == want
		})
	}
	unblock()
	for _, id := range ids {
		h.wait(h.m, id)
	}
	// The workers' bookkeeping ends just after the records are terminal.
	testwait.Until(t, "the estimate to drop back to one round", func() bool { return estimate() == 200*time.Millisecond })
}

// TestEstimateBurst: 40 submissions at once on a 4-slot node of a task
// that typically takes 200 ms each count those before them: 4 per round,
// the last ones 10 rounds out (within a round: the dispatcher takes work
// as they come).
func TestEstimateBurst(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, Options{Workers: 4}, clock)
	ctx := testCtx(t)
	for range 3 {
		if r, err := h.m.Runs.Run(ctx, newSpec("advance", execution.ModeSync, ""), nil); err != nil || r.DurationMs != 200 {
			t.Fatalf("Run = %+v, %v; want 200ms", r, err)
		}
	}
	clock.Advance(time.Second) // the next estimate reads the queue's depth once
	const n = 40
	estimates := make([]time.Duration, n)
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			spec := newSpec("sleep", execution.ModeAsync, "")
			rec, est, _, err := h.m.Async.Submit(ctx, spec)
			if err != nil {
				t.Error(err)
				return
			}
			estimates[i], ids[i] = est, rec.ID
		})
	}
	wg.Wait()
	slices.Sort(estimates)
	for i, got := range estimates {
		if want := time.Duration(1+i/4) * 200 * time.Millisecond; got < want-200*time.Millisecond || got > want+200*time.Millisecond {
			t.Errorf("estimate %d of the burst = %v; want %v ± one round (all: %v)", i, got, want, estimates)
			break
		}
	}
	for _, id := range ids {
		if _, err := h.m.Cancels.Cancel(ctx, id, "", true); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStatsSurviveRestart(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx := testCtx(t)
	for _, fn := range []string{"echo", "echo", "fail"} {
		if _, err := h.m.Runs.Run(ctx, newSpec(fn, execution.ModeSync, ""), nil); err != nil {
			t.Fatal(err)
		}
	}
	if n, last := h.m.TaskStats(testTask); n != 3 || last != execution.StatusFailed {
		t.Fatalf("TaskStats = %d, %v; want 3, FAILED", n, last)
	}
	recent, total := h.m.Finished(time.Time{})
	if len(recent) != 3 || total != 3 || recent[2].Status != execution.StatusFailed {
		t.Fatalf("Finished = %+v, %d", recent, total)
	}
	shutdown(h.m, 5*time.Second)

	all, err := h.st.Tasks.AllStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := all[testTask]
	if st == nil || st.Count != 3 || st.LastStatus != execution.StatusFailed || len(st.RecentMs) != 2 {
		t.Fatalf("stored stats = %+v", st)
	}
	m2 := h.newManager(Options{Workers: 1})
	if n, last := m2.TaskStats(testTask); n != 3 || last != execution.StatusFailed {
		t.Fatalf("TaskStats on a new manager = %d, %v; want 3, FAILED", n, last)
	}
	if err := m2.ForgetTask(ctx, testTask); err != nil {
		t.Fatal(err)
	}
	if n, _ := m2.TaskStats(testTask); n != 0 {
		t.Fatalf("TaskStats after ForgetTask = %d", n)
	}
	if all, err := h.st.Tasks.AllStats(ctx); err != nil || all[testTask] != nil {
		t.Fatalf("stored stats after ForgetTask = %v, %v", all, err)
	}
}

// TestClaimConflictLeavesOtherClaim delivers a queued execution to a worker
// that, while it waits for a slot, loses the execution to another node's
// claim: the worker must neither run it nor overwrite the other claim.
func TestClaimConflictLeavesOtherClaim(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx := testCtx(t)
	shutdown(h.m, time.Second) // this test drives a worker by hand
	m := New(Options{Workers: 1, NodeID: "node-a"}, h.st, h.reg, h.m.runtimes)

	spec := newSpec("echo", execution.ModeAsync, "")
	if _, err := h.st.Queue.Enqueue(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.Records.Create(ctx, execution.NewRecord(spec)); err != nil {
		t.Fatal(err)
	}
	var d *store.Delivery
	testwait.Until(t, "the execution to be fetched", func() bool {
		if err := h.st.Workers.Fetch(1, func(x *store.Delivery) { d = x }); err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		return d != nil
	})
	// Another node claims it between the worker's read and its claim.
	m.afterRead = func() {
		other, _, err := h.st.Records.Get(ctx, spec.ExecutionID)
		if err != nil {
			t.Error(err)
			return
		}
		other.Status, other.Node, other.Attempts = execution.StatusRunning, "node-b", 1
		if _, err := h.st.Records.Put(ctx, other); err != nil {
			t.Error(err)
		}
	}
	m.mu.Lock()
	m.asyncInFlight++
	m.mu.Unlock()
	m.wg.Add(1)
	go m.dispatcher.runDelivery(d, func() {})
	testwait.Until(t, "the worker to give the execution up", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.live) == 0 && m.asyncInFlight == 0
	})
	m.wg.Wait()
	r, _, err := h.st.Records.Get(ctx, spec.ExecutionID)
	if err != nil || r.Status != execution.StatusRunning || r.Node != "node-b" {
		t.Fatalf("record after the lost claim = %+v, %v; want node-b's RUNNING claim kept", r, err)
	}
	if n := h.rt.callsOf(spec.ExecutionID); n != 0 {
		t.Fatalf("the losing worker ran it %d times", n)
	}
	if free, waiting := m.slots.state(); free != 1 || waiting != 0 {
		t.Fatalf("slots after the lost claim = %d free, %d waiting", free, waiting)
	}
}

// TestRunMaxQueuedExact: however many callers arrive at once, a task with
// max_queued N has at most N sync executions waiting; the others are
// refused with QUEUE_FULL and leave nothing behind: an idempotency key that
// was refused can be used again.
func TestRunMaxQueuedExact(t *testing.T) {
	const maxQueued, callers = 3, 20
	h, unblock := busyWithQuota(t, maxQueued)
	ctx := testCtx(t)

	type outcome struct {
		rec *execution.Record
		err error
	}
	results := make(chan outcome, callers)
	for range callers {
		go func() {
			rec, err := h.m.Runs.Run(ctx, newSpec("echo", execution.ModeSync, "x"), nil)
			results <- outcome{rec, err}
		}()
	}
	for i := range callers - maxQueued {
		if o := recv(t, results, "a refusal"); errdefs.CodeOf(o.err) != "QUEUE_FULL" {
			t.Fatalf("caller %d: Run = %v, %v; want QUEUE_FULL while %d wait", i, o.rec, o.err, maxQueued)
		}
	}
	if _, waiting := h.m.slots.state(); waiting != maxQueued {
		t.Fatalf("%d waiting, want %d", waiting, maxQueued)
	}

	// Refused with an idempotency key: no record stays behind.
	keyed := newSpec("echo", execution.ModeSync, "keyed")
	keyed.ExecutionID, keyed.Idempotent = execution.IdempotentID(testTask, "k"), true
	if _, err := h.m.Runs.Run(ctx, keyed, nil); errdefs.CodeOf(err) != "QUEUE_FULL" {
		t.Fatalf("keyed Run = %v, want QUEUE_FULL", err)
	}
	if _, _, err := h.st.Records.Get(ctx, keyed.ExecutionID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("record of the refused keyed execution: %v, want not found", err)
	}

	unblock()
	for range maxQueued {
		if o := recv(t, results, "a waiter to run"); o.err != nil || o.rec.Status != execution.StatusCompleted {
			t.Fatalf("waiter: %+v, %v; want COMPLETED", o.rec, o.err)
		}
	}
	if rec, err := h.m.Runs.Run(ctx, keyed, nil); err != nil || rec.Status != execution.StatusCompleted || string(rec.Output) != "keyed" {
		t.Fatalf("the refused key used again: %+v, %v", rec, err)
	}
}

// TestSubmitMaxQueuedExact: concurrent async submissions to a task with
// max_queued N accept exactly N while nothing can run.
func TestSubmitMaxQueuedExact(t *testing.T) {
	const maxQueued, callers = 3, 20
	h, unblock := busyWithQuota(t, maxQueued)
	ctx := testCtx(t)

	errs := make(chan error, callers)
	ids := make(chan string, callers)
	for range callers {
		go func() {
			rec, _, _, err := h.m.Async.Submit(ctx, newSpec("echo", execution.ModeAsync, "x"))
			if err == nil {
				ids <- rec.ID
			}
			errs <- err
		}()
	}
	accepted := 0
	for range callers {
		switch err := recv(t, errs, "a submission"); {
		case err == nil:
			accepted++
		case errdefs.CodeOf(err) != "QUEUE_FULL":
			t.Fatalf("Submit: %v, want QUEUE_FULL or accepted", err)
		}
	}
	if accepted != maxQueued {
		t.Fatalf("%d of %d concurrent submissions accepted, want max_queued %d", accepted, callers, maxQueued)
	}
	unblock()
	for range accepted {
		if r := h.wait(h.m, recv(t, ids, "an accepted id")); r.Status != execution.StatusCompleted {
			t.Fatalf("accepted execution ended %v", r.Status)
		}
	}
	h.m.admission.mu.Lock()
	defer h.m.admission.mu.Unlock()
	if n := len(h.m.admission.locks); n != 0 {
		t.Fatalf("%d per-task admission locks left after the submissions", n)
	}
}

// busyWithQuota returns a harness whose one worker is held by a sync run
// (not queued, so outside the quota) until unblock, with the test task
// limited to maxQueued.
func busyWithQuota(t *testing.T, maxQueued int32) (h *harness, unblock func()) {
	t.Helper()
	h = newHarness(t, Options{Workers: 1}, nil)
	ctx := testCtx(t)
	if _, err := h.reg.UpdateLimits(ctx, testTask, task.Limits{MaxQueued: maxQueued}); err != nil {
		t.Fatal(err)
	}
	blockCtx, unblock := context.WithCancel(ctx)
	t.Cleanup(unblock)
	blocker := newSpec("sleep", execution.ModeSync, "")
	go func() { _, _ = h.m.Runs.Run(blockCtx, blocker, nil) }()
	h.rt.waitStarted(t, blocker.ExecutionID)
	return h, unblock
}

// TestFencedAttempt: while an async execution runs here, another node
// takes it over (its message came back to that node: this one was cut off
// longer than the ack wait). The stale run is stopped — when this node
// checks its claim, or by a cancel first — and its result does not
// overwrite the newer attempt's record; the message stays in the queue.
func TestFencedAttempt(t *testing.T) {
	for _, cancelFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancel=%v", cancelFirst), func(t *testing.T) {
			h := newHarness(t, Options{Workers: 1}, nil)
			ctx := testCtx(t)
			spec := newSpec("exit-on-cancel", execution.ModeAsync, "")
			if _, _, _, err := h.m.Async.Submit(ctx, spec); err != nil {
				t.Fatal(err)
			}
			h.rt.waitStarted(t, spec.ExecutionID)
			var rec *execution.Record
			var rev uint64
			testwait.Until(t, "the run's late claim", func() bool {
				var err error
				rec, rev, err = h.st.Records.Get(ctx, spec.ExecutionID)
				return err == nil && rev > 0 && rec.Status == execution.StatusRunning
			})
			rec.Node, rec.Attempts = "node-b", rec.Attempts+1
			if _, err := h.st.Records.Update(ctx, rec, rev); err != nil {
				t.Fatal(err)
			}
			if cancelFirst {
				if _, err := h.m.Cancels.Cancel(ctx, spec.ExecutionID, "", true); err != nil {
					t.Fatalf("Cancel: %v", err)
				}
			}
			testwait.Until(t, "the stale run to end", func() bool { return len(h.m.Live()) == 0 })
			if cause := h.rt.causeOf(spec.ExecutionID); !cancelFirst && !errors.Is(cause, errFenced) {
				t.Errorf("the run ended with %v, want it fenced", cause)
			}
			if q, err := h.st.Queue.Has(ctx, testTask, spec.ExecutionID); err != nil || !q {
				t.Errorf("the queue message: %v, %v; want it kept", q, err)
			}
			if r, _, err := h.st.Records.Get(ctx, spec.ExecutionID); err != nil || r.Node != "node-b" || r.Status != execution.StatusRunning || r.Attempts != 2 {
				t.Fatalf("stored record %+v, %v; want node-b's attempt 2 still running", r, err)
			}
		})
	}
}

// TestLostAttempt: an execution whose stored record says a node runs it
// when its message comes back gets that attempt in its history, lost, with
// the node and its start.
func TestLostAttempt(t *testing.T) {
	now := time.Now()
	running := &execution.Record{Status: execution.StatusRunning, Attempts: 2, Node: "node-c", StartedAt: now.Add(-time.Minute),
		History: []execution.Attempt{{N: 1, Status: execution.StatusFailed}}}
	a, ok := lostAttempt(running, now)
	if !ok || a.N != 2 || a.Node != "node-c" || a.StartedAt != running.StartedAt || a.ErrorCode != errdefs.AttemptLost.String() {
		t.Fatalf("lostAttempt = %+v, %v", a, ok)
	}
	for _, r := range []*execution.Record{
		{Status: execution.StatusPending, Attempts: 1, History: []execution.Attempt{{N: 1}}},
		{Status: execution.StatusRunning, Attempts: 1, History: []execution.Attempt{{N: 1}}},
	} {
		if _, ok := lostAttempt(r, now); ok {
			t.Errorf("lostAttempt(%+v): a lost attempt", r)
		}
	}
}

// TestCancelBeforeLive: a cancel that finds an execution not live here
// (its message is being taken from the queue at that moment), asked here
// or through another node, makes it start cancelled when it becomes live
// here, instead of waiting for a slot it would only give up, or running
// before its claim (lateclaim.go).
func TestCancelBeforeLive(t *testing.T) {
	for _, through := range []string{"this node", "another node"} {
		t.Run(through, func(t *testing.T) {
			h := newHarness(t, Options{Workers: 1, Shared: true, NodeID: "node-a"}, nil)
			spec := newSpec("echo", execution.ModeAsync, "")
			if through == "this node" {
				if _, ok := h.m.cancels.cancelLocal(testCtx(t), spec.ExecutionID, "caller", false); ok {
					t.Fatal("cancelLocal found an execution that is not live")
				}
			} else {
				other := h.newManager(Options{Workers: 1, Shared: true, NodeID: "node-b"})
				// Not queued: nobody answers, and there is nothing to record.
				if _, err := other.Cancels.Cancel(testCtx(t), spec.ExecutionID, "", false); !errors.Is(err, errdefs.ErrNotFound) {
					t.Fatalf("Cancel of an execution nobody has = %v, want not found", err)
				}
			}
			l := &live{rec: execution.NewRecord(spec), done: make(chan struct{})}
			if err := h.m.lives.addLive(l); err != nil {
				t.Fatal(err)
			}
			defer h.m.lives.forget(spec.ExecutionID)
			_, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			if l.setCancel(cancel) || !l.cancelRequested() || !l.wasPreCancelled() {
				t.Fatal("an execution cancelled just before it became live may start")
			}
		})
	}
}

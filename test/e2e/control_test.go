package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/runtime/conformance"
)

// The execution-control tests: timeouts, cancellation, priority, retries
// and dead letters, idempotency, quotas, memory ceilings and completion
// callbacks, each over a real node.

const (
	statusRunning   = pb.ExecutionStatus_EXECUTION_STATUS_RUNNING
	statusCompleted = pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED
	statusFailed    = pb.ExecutionStatus_EXECUTION_STATUS_FAILED
	statusCancelled = pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED
	statusTimeout   = pb.ExecutionStatus_EXECUTION_STATUS_TIMEOUT

	modeSync  = pb.ExecutionMode_EXECUTION_MODE_SYNC
	modeAsync = pb.ExecutionMode_EXECUTION_MODE_ASYNC
)

// gateBody blocks until the file named by $GATE exists, after marking
// $MARK (if set).
const gateBody = `[ -n "$MARK" ] && : > "$MARK"
while [ ! -e "$GATE" ]; do sleep 0.05; done
echo released
`

// appendBody appends $LABEL to the file named by $LOG.
const appendBody = `echo "$LABEL" >> "$LOG"
echo "$LABEL"
`

// TestControlTimeout: a sleeping and a spinning function (process and
// wasm) end TIMEOUT / EXECUTION_TIMEOUT soon after context.timeout_ms, and
// a sync invocation that cannot get a worker within --queue-ttl ends
// TIMEOUT / QUEUE_TIMEOUT.
func TestControlTimeout(t *testing.T) {
	n := startNode(t, "", nodeOpts{workers: 1, noSamples: true, args: []string{"--queue-ttl", "500ms"}})
	dir := t.TempDir()
	sleepPath, _ := writeScript(t, dir, "sleep30.sh", "sleep 30\necho woke\n")
	spinPath, _ := writeScript(t, dir, "spin.sh", "while :; do :; done\n")
	n.registerProcess(t, "ctl-sleep", sleepPath)
	n.registerProcess(t, "ctl-spin", spinPath)
	n.ctlRegister(t, &pb.RegisterTaskRequest{TaskId: "ctl-wasm-spin",
		ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "wasm", Location: wasmFixture("spin")}})

	// The bound of "on time": far below the 30 s sleep, far above 300 ms.
	const onTime = 5 * time.Second
	cases := []struct {
		name, task string
		process    bool
	}{
		{"process-sleep", "ctl-sleep", true},
		{"process-spin", "ctl-spin", true},
		{"wasm-spin", "ctl-wasm-spin", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := invocation(t, tc.task, modeSync, nil)
			req.Context.TimeoutMs = 300
			begin := time.Now()
			resp := n.invoke(t, req)
			took := time.Since(begin)
			res := resp.GetResult()
			if res.GetStatus() != statusTimeout || res.GetErrorCode() != "EXECUTION_TIMEOUT" {
				t.Errorf("status %v error_code %q (%s), want TIMEOUT EXECUTION_TIMEOUT",
					res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage())
			}
			if took > onTime {
				t.Errorf("a 300 ms timeout took %v from invoke to terminal", took)
			}
			if st := n.status(t, resp.GetExecutionId()).GetResult(); st.GetStatus() != statusTimeout {
				t.Errorf("GetExecutionStatus: %v, want TIMEOUT", st.GetStatus())
			}
			if tc.process {
				waitExecGone(t, resp.GetExecutionId(), finishBound)
			}
		})
	}

	t.Run("queue", func(t *testing.T) {
		busy := invocation(t, "ctl-sleep", modeAsync, nil)
		busyID := n.invoke(t, busy).GetExecutionId()
		n.ctlWaitRunning(t, busyID)
		defer n.ctlCancel(t, busyID, true)

		begin := time.Now()
		resp := n.invoke(t, invocation(t, "ctl-sleep", modeSync, nil))
		took := time.Since(begin)
		res := resp.GetResult()
		if res.GetStatus() != statusTimeout || res.GetErrorCode() != "QUEUE_TIMEOUT" {
			t.Errorf("status %v error_code %q (%s), want TIMEOUT QUEUE_TIMEOUT",
				res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage())
		}
		if took > onTime {
			t.Errorf("a 500 ms queue TTL took %v from invoke to terminal", took)
		}
		if st := n.status(t, busyID).GetResult().GetStatus(); st != statusRunning {
			t.Errorf("the execution holding the worker is %v, want still RUNNING", st)
		}
	})
}

// TestControlCancel: queued and running executions cancel in every runtime
// and leave no process or container behind; a cancel without force lets a
// function that traps SIGTERM finish its handler, a forced one does not.
func TestControlCancel(t *testing.T) {
	engine := dockerEngine(t)
	docker := engine && dockerSampleImage(t)
	args := []string{"--stop-grace", "10s"}
	if engine {
		args = append(args, "--docker", "auto") // the last --docker wins
	}
	n := startNode(t, "", nodeOpts{workers: 1, args: args})
	dir := t.TempDir()
	sleepPath, _ := writeScript(t, dir, "sleeper.sh", sleeperBody)
	n.registerProcess(t, "ctl-sleeper", sleepPath)
	n.ctlRegister(t, &pb.RegisterTaskRequest{TaskId: "ctl-wasm-spin",
		ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "wasm", Location: wasmFixture("spin")}})
	if docker {
		if _, err := n.client.GetTask(ctx(t, callTimeout), &pb.GetTaskRequest{TaskId: "docker-upper"}); err != nil {
			t.Fatalf("the node did not register docker-upper although %s exists: %v", sampleImage, err)
		}
	}

	type runtimeKind int
	const (
		process runtimeKind = iota
		wasm
		container
	)
	cases := []struct {
		name   string
		task   string
		kind   runtimeKind
		queued bool
	}{
		{"process-running", "ctl-sleeper", process, false},
		{"process-queued", "ctl-sleeper", process, true},
		{"wasm-running", "ctl-wasm-spin", wasm, false},
		{"wasm-queued", "ctl-wasm-spin", wasm, true},
		// The sample image exits as soon as its input ends, so a docker
		// execution cannot be caught running: only the queued case.
		{"docker-queued", "docker-upper", container, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.kind == container && !docker {
				t.Skipf("no Docker engine with %s (make sample-image)", sampleImage)
			}
			var blockerID string
			if tc.queued {
				blockerID = n.invoke(t, invocation(t, "ctl-sleeper", modeAsync, nil)).GetExecutionId()
				n.ctlWaitRunning(t, blockerID)
			}
			mark := filepath.Join(t.TempDir(), "started")
			req := invocation(t, tc.task, modeAsync, []byte("input"))
			req.Context.Environment = map[string]string{"MARK": mark}
			id := n.invoke(t, req).GetExecutionId()
			if !tc.queued {
				n.ctlWaitRunning(t, id)
				if tc.kind == process {
					waitFile(t, mark, finishBound)
				}
			}

			resp := n.ctlCancel(t, id, false)
			if !resp.GetSuccess() || resp.GetFinalStatus() != statusCancelled {
				t.Errorf("CancelExecution: success=%v final_status=%v (%s), want true CANCELLED",
					resp.GetSuccess(), resp.GetFinalStatus(), resp.GetMessage())
			}
			res := n.waitFinal(t, id, finishBound).GetResult()
			if res.GetStatus() != statusCancelled {
				t.Errorf("status %v (%s %s), want CANCELLED", res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage())
			}
			if tc.queued {
				if res.GetAttempts() != 0 || res.GetStartedAt() != nil {
					t.Errorf("the cancelled queued execution started: attempts %d, started_at %v", res.GetAttempts(), res.GetStartedAt())
				}
				if _, err := os.Stat(mark); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the cancelled queued execution ran (marker: %v)", err)
				}
				if r := n.ctlCancel(t, blockerID, true); r.GetFinalStatus() != statusCancelled {
					t.Errorf("cancelling the blocker: %v (%s)", r.GetFinalStatus(), r.GetMessage())
				}
				n.waitFinal(t, blockerID, finishBound)
				waitExecGone(t, blockerID, finishBound)
			}
			switch tc.kind {
			case process:
				waitExecGone(t, id, finishBound)
			case container:
				waitNoContainers(t, id, finishBound)
			}
			// Whatever the runtime, nothing runs on the node any more: a
			// wasm instance still spinning would hold its slot.
			n.waitMetric(t, "spear_running_executions", 0, finishBound)
		})
	}

	// A function that traps SIGTERM says "bye": a cancel without force
	// lets it, a forced one kills it at once.
	byePath, _ := writeScript(t, dir, "bye.sh", `trap 'echo bye; exit 143' TERM
: > "$MARK"
sleep 30 &
wait $!
echo finished
`)
	n.registerProcess(t, "ctl-bye", byePath)
	for _, tc := range []struct {
		name    string
		force   bool
		wantBye bool
	}{
		{"graceful", false, true},
		{"force", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mark := filepath.Join(t.TempDir(), "started")
			req := invocation(t, "ctl-bye", modeAsync, nil)
			req.Context.Environment = map[string]string{"MARK": mark}
			id := n.invoke(t, req).GetExecutionId()
			n.ctlWaitRunning(t, id)
			waitFile(t, mark, finishBound) // the trap is set
			resp := n.ctlCancel(t, id, tc.force)
			if !resp.GetSuccess() || resp.GetFinalStatus() != statusCancelled {
				t.Errorf("CancelExecution(force=%v): success=%v final_status=%v (%s)",
					tc.force, resp.GetSuccess(), resp.GetFinalStatus(), resp.GetMessage())
			}
			res := n.waitFinal(t, id, finishBound).GetResult()
			if res.GetStatus() != statusCancelled {
				t.Errorf("status %v (%s), want CANCELLED", res.GetStatus(), res.GetErrorCode())
			}
			out := output(t, res.GetResult())
			if got := strings.Contains(out, "bye"); got != tc.wantBye {
				t.Errorf("force=%v: output %q; contains \"bye\" = %v, want %v", tc.force, out, got, tc.wantBye)
			}
			if strings.Contains(out, "finished") {
				t.Errorf("the cancelled function ran to its end: output %q", out)
			}
			waitExecGone(t, id, finishBound)
		})
	}

	// A container caught running: the conformance fixture's "sleep" blocks
	// until killed, its "graceful" says "bye" on SIGTERM. Each runs as a
	// sync invocation whose call returns once the cancel ends it.
	t.Run("docker-running", func(t *testing.T) {
		if !engine {
			t.Skip("no Docker engine answers (docker info)")
		}
		n.ctlRegister(t, &pb.RegisterTaskRequest{TaskId: "ctl-docker-fixture",
			ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "docker", Location: fixtureImage(t)}})
		for _, tc := range []struct {
			name, function string
			ready          string // output that shows the function is in place
			force, wantBye bool
		}{
			{"sleep-force", "sleep", "", true, false},
			{"graceful", "graceful", "ready", false, true},
			{"graceful-force", "graceful", "ready", true, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				id := fmt.Sprintf("e2e-docker-%s-%d", tc.name, time.Now().UnixNano())
				req := invocation(t, "ctl-docker-fixture", modeSync, nil)
				req.FunctionName = tc.function
				req.Context.ExecutionId = id
				type reply struct {
					resp *pb.InvokeFunctionResponse
					err  error
				}
				done := make(chan reply, 1)
				returned := make(chan struct{})
				c := ctx(t, finishBound)
				go func() {
					defer close(returned)
					resp, err := n.client.InvokeFunction(c, req)
					done <- reply{resp, err}
				}()
				n.ctlWaitRunningOutput(t, id, tc.ready, returned)

				cresp := n.ctlCancel(t, id, tc.force)
				if !cresp.GetSuccess() || cresp.GetFinalStatus() != statusCancelled {
					t.Errorf("CancelExecution(force=%v): success=%v final_status=%v (%s), want true CANCELLED",
						tc.force, cresp.GetSuccess(), cresp.GetFinalStatus(), cresp.GetMessage())
				}
				var r reply
				select {
				case r = <-done:
				case <-time.After(finishBound):
					t.Fatalf("the sync invocation did not return within %v of the cancel", finishBound)
				}
				if r.err != nil {
					t.Fatalf("InvokeFunction(%s): %v", tc.function, r.err)
				}
				res := r.resp.GetResult()
				if r.resp.GetExecutionId() != id || res.GetStatus() != statusCancelled {
					t.Errorf("sync invocation returned %s %v (%s %s), want %s CANCELLED",
						r.resp.GetExecutionId(), res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage(), id)
				}
				if st := n.status(t, id).GetResult(); st.GetStatus() != statusCancelled {
					t.Errorf("GetExecutionStatus: %v (%s), want CANCELLED", st.GetStatus(), st.GetErrorCode())
				}
				if tc.function == "graceful" {
					out := output(t, res.GetResult())
					if got := strings.Contains(out, "bye"); got != tc.wantBye {
						t.Errorf("force=%v: output %q; contains \"bye\" = %v, want %v", tc.force, out, got, tc.wantBye)
					}
				}
				// The runtime removes the container once the run has its
				// result, in the background.
				waitNoContainers(t, id, finishBound)
				n.waitMetric(t, "spear_running_executions", 0, finishBound)
			})
		}
	})
}

// TestControlPriority: with the only worker busy, 20 low-priority then 5
// high-priority executions queue up; once the worker is free the high
// ones run before the bulk of the low ones, and every low one runs.
func TestControlPriority(t *testing.T) {
	n := startNode(t, "", nodeOpts{workers: 1, noSamples: true})
	dir := t.TempDir()
	gatePath, _ := writeScript(t, dir, "gate.sh", gateBody)
	appendPath, _ := writeScript(t, dir, "append.sh", appendBody)
	n.registerProcess(t, "ctl-gate", gatePath)
	n.registerProcess(t, "ctl-append", appendPath)

	gate, log := filepath.Join(dir, "gate"), filepath.Join(dir, "order.log")
	blocker := invocation(t, "ctl-gate", modeAsync, nil)
	blocker.Context.Environment = map[string]string{"GATE": gate}
	blockerID := n.invoke(t, blocker).GetExecutionId()
	n.ctlWaitRunning(t, blockerID)

	const lows, highs = 20, 5
	var ids []string
	submit := func(label string, prio int32) {
		req := invocation(t, "ctl-append", modeAsync, nil)
		req.Priority = prio
		req.Context.Environment = map[string]string{"LABEL": label, "LOG": log}
		ids = append(ids, n.invoke(t, req).GetExecutionId())
	}
	for i := range lows {
		submit(fmt.Sprintf("low-%02d", i), -5)
	}
	for i := range highs {
		submit(fmt.Sprintf("high-%d", i), 10)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	n.waitFinal(t, blockerID, finishBound)
	for _, id := range ids {
		if res := n.waitFinal(t, id, finishBound).GetResult(); res.GetStatus() != statusCompleted {
			t.Errorf("execution %s: %v %s", id, res.GetStatus(), res.GetErrorMessage())
		}
	}

	order := readLines(t, log)
	t.Logf("run order: %v", order)
	var lowPos, highPos []int
	for i, l := range order {
		if strings.HasPrefix(l, "low-") {
			lowPos = append(lowPos, i)
		} else {
			highPos = append(highPos, i)
		}
	}
	if len(lowPos) != lows || len(highPos) != highs || len(order) != lows+highs {
		t.Fatalf("ran %d low and %d high executions (%d lines), want %d and %d", len(lowPos), len(highPos), len(order), lows, highs)
	}
	// Anti-starvation hands a share of the dispatches to the oldest work,
	// so some low ones may go first: but not the last 10 of them.
	firstOfLast10 := lowPos[lows-10]
	for _, p := range highPos {
		if p > firstOfLast10 {
			t.Errorf("high-priority %s ran at position %d, after %s (position %d): order %v",
				order[p], p, order[firstOfLast10], firstOfLast10, order)
		}
	}
}

// TestControlRetries: an async execution that fails twice and then
// succeeds completes on its third attempt; one that always fails is
// dead-lettered, listed as such, and runs again on RequeueExecution; only
// dead-lettered executions can be requeued.
func TestControlRetries(t *testing.T) {
	n := startNode(t, "", nodeOpts{noSamples: true})
	dir := t.TempDir()
	// Counts its attempts in $COUNT; succeeds once $OK exists or after
	// $FAILS failed attempts.
	path, _ := writeScript(t, dir, "flaky.sh", `n=$(cat "$COUNT" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$COUNT"
if [ -e "$OK" ] || [ "$n" -gt "$FAILS" ]; then echo "ok after $n"; exit 0; fi
echo "attempt $n fails" >&2
exit 3
`)
	n.registerProcess(t, "ctl-flaky", path)
	flaky := func(name string, fails int) *pb.InvokeFunctionRequest {
		req := invocation(t, "ctl-flaky", modeAsync, nil)
		req.Context.MaxRetries = 2
		req.Context.Environment = map[string]string{
			"COUNT": filepath.Join(dir, name+".count"),
			"OK":    filepath.Join(dir, name+".ok"),
			"FAILS": strconv.Itoa(fails),
		}
		return req
	}

	var completedID string
	t.Run("succeeds-on-third", func(t *testing.T) {
		id := n.invoke(t, flaky("third", 2)).GetExecutionId()
		res := n.waitFinal(t, id, finishBound).GetResult()
		if res.GetStatus() != statusCompleted || res.GetAttempts() != 3 {
			t.Errorf("status %v attempts %d (%s), want COMPLETED 3", res.GetStatus(), res.GetAttempts(), res.GetErrorMessage())
		}
		want := []pb.ExecutionStatus{statusFailed, statusFailed, statusCompleted}
		if got := attemptStatuses(res); !slices.Equal(got, want) {
			t.Errorf("attempt_history statuses %v, want %v", got, want)
		}
		if res.GetDeadLettered() {
			t.Error("a completed execution is dead_lettered")
		}
		if out := output(t, res.GetResult()); !strings.Contains(out, "ok after 3") {
			t.Errorf("output %q, want \"ok after 3\"", out)
		}
		completedID = id
	})

	t.Run("dead-letter-and-requeue", func(t *testing.T) {
		req := flaky("always", 1000)
		id := n.invoke(t, req).GetExecutionId()
		res := n.waitFinal(t, id, finishBound).GetResult()
		if res.GetStatus() != statusFailed || res.GetErrorCode() != "RETRIES_EXHAUSTED" || !res.GetDeadLettered() {
			t.Fatalf("status %v error_code %q dead_lettered %v (%s), want FAILED RETRIES_EXHAUSTED true",
				res.GetStatus(), res.GetErrorCode(), res.GetDeadLettered(), res.GetErrorMessage())
		}
		if got := attemptStatuses(res); len(got) != 3 || slices.Contains(got, statusCompleted) {
			t.Errorf("attempt_history statuses %v, want 3 failed attempts", got)
		}
		list, err := n.client.ListExecutions(ctx(t, callTimeout), &pb.ListExecutionsRequest{TaskId: "ctl-flaky", DeadLetteredOnly: true, Limit: 100})
		if err != nil {
			t.Fatalf("ListExecutions(dead_lettered_only): %v", err)
		}
		var listed []string
		for _, e := range list.GetExecutions() {
			listed = append(listed, e.GetExecutionId())
			if !e.GetDeadLettered() {
				t.Errorf("ListExecutions(dead_lettered_only) lists %s with dead_lettered false", e.GetExecutionId())
			}
		}
		if !slices.Contains(listed, id) || slices.Contains(listed, completedID) {
			t.Errorf("ListExecutions(dead_lettered_only) = %v, want %s and not %s", listed, id, completedID)
		}

		// Fix the function's world, then requeue.
		if err := os.WriteFile(req.Context.Environment["OK"], nil, 0o644); err != nil {
			t.Fatal(err)
		}
		rq, err := n.client.RequeueExecution(ctx(t, callTimeout), &pb.RequeueExecutionRequest{ExecutionId: id})
		if err != nil {
			t.Fatalf("RequeueExecution: %v", err)
		}
		if !rq.GetSuccess() || rq.GetExecutionId() != id {
			t.Errorf("RequeueExecution: success=%v id=%s (%s)", rq.GetSuccess(), rq.GetExecutionId(), rq.GetMessage())
		}
		res = n.waitFinal(t, id, finishBound).GetResult()
		if res.GetStatus() != statusCompleted || res.GetDeadLettered() {
			t.Errorf("after requeue: status %v dead_lettered %v (%s %s), want COMPLETED false",
				res.GetStatus(), res.GetDeadLettered(), res.GetErrorCode(), res.GetErrorMessage())
		}
		if h := res.GetAttemptHistory(); len(h) != 4 || h[3].GetStatus() != statusCompleted {
			t.Errorf("after requeue: attempt_history %v, want 3 failures then a completion", attemptStatuses(res))
		}
		completedID = id
	})

	t.Run("requeue-not-dead-lettered", func(t *testing.T) {
		if completedID == "" {
			t.Skip("no completed execution")
		}
		var trailer metadata.MD
		_, err := n.client.RequeueExecution(ctx(t, callTimeout), &pb.RequeueExecutionRequest{ExecutionId: completedID}, grpc.Trailer(&trailer))
		e := asRPCError(t, err, trailer)
		if e.code != codes.FailedPrecondition || e.reason != "NOT_DEAD_LETTERED" {
			t.Errorf("RequeueExecution(COMPLETED): %v reason %q trailer %q (%s), want FAILED_PRECONDITION NOT_DEAD_LETTERED",
				e.code, e.reason, e.trailer, e.msg)
		}
	})
}

// TestControlIdempotency: concurrent async invocations with one
// idempotency key make one execution that runs once, also across a node
// restart; a repeated sync invocation returns the first result.
func TestControlIdempotency(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	n := startNode(t, dataDir, nodeOpts{noSamples: true})
	dir := t.TempDir()
	path, _ := writeScript(t, dir, "append.sh", appendBody)
	n.registerProcess(t, "ctl-once", path)
	keyed := func(key, log string, mode pb.ExecutionMode) *pb.InvokeFunctionRequest {
		req := invocation(t, "ctl-once", mode, nil)
		req.IdempotencyKey = key
		req.Context.Environment = map[string]string{"LABEL": "ran", "LOG": log}
		return req
	}

	asyncLog := filepath.Join(dir, "async.log")
	const callers = 50
	ids := make([]string, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			resp, err := n.client.InvokeFunction(ctx(t, callTimeout), keyed("ctl-key-async", asyncLog, modeAsync))
			ids[i], errs[i] = resp.GetExecutionId(), err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("InvokeFunction with a key: %v", err)
	}
	id := ids[0]
	for i, got := range ids {
		if got != id || got == "" {
			t.Fatalf("caller %d got execution %q, caller 0 %q", i, got, id)
		}
	}
	if res := n.waitFinal(t, id, finishBound).GetResult(); res.GetStatus() != statusCompleted || res.GetAttempts() != 1 {
		t.Errorf("keyed execution: %v attempts %d, want COMPLETED 1", res.GetStatus(), res.GetAttempts())
	}
	if lines := readLines(t, asyncLog); len(lines) != 1 {
		t.Errorf("the function ran %d times, want once: %v", len(lines), lines)
	}

	if err := n.stop(); err != nil {
		t.Fatalf("stopping the node: %v", err)
	}
	n = startNode(t, dataDir, nodeOpts{noSamples: true})
	resp := n.invoke(t, keyed("ctl-key-async", asyncLog, modeAsync))
	if resp.GetExecutionId() != id {
		t.Errorf("after a restart the key gave execution %q, want %q", resp.GetExecutionId(), id)
	}
	if res := n.waitFinal(t, id, finishBound).GetResult(); res.GetStatus() != statusCompleted || res.GetAttempts() != 1 {
		t.Errorf("after a restart: %v attempts %d, want COMPLETED 1", res.GetStatus(), res.GetAttempts())
	}
	if lines := readLines(t, asyncLog); len(lines) != 1 {
		t.Errorf("after a restart the function has run %d times, want once: %v", len(lines), lines)
	}

	t.Run("sync", func(t *testing.T) {
		log := filepath.Join(dir, "sync.log")
		first := n.invoke(t, keyed("ctl-key-sync", log, modeSync))
		second := n.invoke(t, keyed("ctl-key-sync", log, modeSync))
		if first.GetResult().GetStatus() != statusCompleted {
			t.Fatalf("first keyed sync invocation: %v %s", first.GetResult().GetStatus(), first.GetResult().GetErrorMessage())
		}
		if second.GetExecutionId() != first.GetExecutionId() {
			t.Errorf("second keyed sync invocation: execution %q, want %q", second.GetExecutionId(), first.GetExecutionId())
		}
		if s, f := output(t, second.GetResult().GetResult()), output(t, first.GetResult().GetResult()); s != f || second.GetResult().GetStatus() != statusCompleted {
			t.Errorf("second keyed sync invocation: %v %q, want COMPLETED %q", second.GetResult().GetStatus(), s, f)
		}
		if lines := readLines(t, log); len(lines) != 1 {
			t.Errorf("the function ran %d times, want once: %v", len(lines), lines)
		}
	})
}

// TestControlQuotas: a task's max_queued refuses async work beyond it at
// once with QUEUE_FULL and drops nothing it accepted; UpdateTaskLimits
// raises it; max_concurrency 1 keeps a task's executions from overlapping
// on a node with spare workers.
func TestControlQuotas(t *testing.T) {
	t.Run("max-queued", func(t *testing.T) {
		n := startNode(t, "", nodeOpts{workers: 1, noSamples: true})
		dir := t.TempDir()
		gatePath, _ := writeScript(t, dir, "gate.sh", gateBody)
		appendPath, _ := writeScript(t, dir, "append.sh", appendBody)
		n.registerProcess(t, "ctl-gate", gatePath)
		n.ctlRegister(t, &pb.RegisterTaskRequest{TaskId: "ctl-quota",
			ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: appendPath},
			Limits:       &pb.TaskLimits{MaxQueued: 2}})

		gate, log := filepath.Join(dir, "gate"), filepath.Join(dir, "quota.log")
		blocker := invocation(t, "ctl-gate", modeAsync, nil)
		blocker.Context.Environment = map[string]string{"GATE": gate}
		blockerID := n.invoke(t, blocker).GetExecutionId()
		n.ctlWaitRunning(t, blockerID)

		var accepted []string
		// fill submits until the quota refuses one; the refusal must come
		// at once and say QUEUE_FULL.
		fill := func(want int) {
			t.Helper()
			for i := 0; ; i++ {
				req := invocation(t, "ctl-quota", modeAsync, nil)
				label := fmt.Sprintf("q%d", len(accepted))
				req.Context.Environment = map[string]string{"LABEL": label, "LOG": log}
				var trailer metadata.MD
				resp, err := n.client.InvokeFunction(ctx(t, callTimeout), req, grpc.Trailer(&trailer))
				if err == nil {
					accepted = append(accepted, resp.GetExecutionId())
					if i >= want {
						t.Fatalf("submission %d accepted; the quota should have refused it (accepted %d)", i+1, len(accepted))
					}
					continue
				}
				e := asRPCError(t, err, trailer)
				if e.code != codes.ResourceExhausted || e.reason != "QUEUE_FULL" {
					t.Fatalf("submission %d: %v reason %q trailer %q (%s), want RESOURCE_EXHAUSTED QUEUE_FULL",
						i+1, e.code, e.reason, e.trailer, e.msg)
				}
				if i != want {
					t.Errorf("QUEUE_FULL after %d accepted submissions, want %d", i, want)
				}
				return
			}
		}
		fill(2)
		if _, err := n.client.UpdateTaskLimits(ctx(t, callTimeout), &pb.UpdateTaskLimitsRequest{
			TaskId: "ctl-quota", Limits: &pb.TaskLimits{MaxQueued: 4}}); err != nil {
			t.Fatalf("UpdateTaskLimits: %v", err)
		}
		fill(2) // 2 queued already, room for 2 more
		if len(accepted) != 4 {
			t.Fatalf("accepted %d executions, want 4", len(accepted))
		}

		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, id := range accepted {
			if res := n.waitFinal(t, id, finishBound).GetResult(); res.GetStatus() != statusCompleted {
				t.Errorf("accepted execution %s: %v %s %s", id, res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage())
			}
		}
		if lines := readLines(t, log); len(lines) != len(accepted) {
			t.Errorf("%d accepted executions ran %d times: %v", len(accepted), len(lines), lines)
		}
	})

	t.Run("max-concurrency", func(t *testing.T) {
		n := startNode(t, "", nodeOpts{workers: 4, noSamples: true})
		dir := t.TempDir()
		path, _ := writeScript(t, dir, "serial.sh", `echo "start $LABEL" >> "$LOG"
sleep 0.3
echo "end $LABEL" >> "$LOG"
`)
		n.ctlRegister(t, &pb.RegisterTaskRequest{TaskId: "ctl-serial",
			ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: path},
			Limits:       &pb.TaskLimits{MaxConcurrency: 1}})
		log := filepath.Join(dir, "serial.log")
		const calls = 3
		results := make([]*pb.InvokeFunctionResponse, calls)
		errs := make([]error, calls)
		var wg sync.WaitGroup
		for i := range calls {
			wg.Go(func() {
				req := invocation(t, "ctl-serial", modeSync, nil)
				req.Context.Environment = map[string]string{"LABEL": strconv.Itoa(i), "LOG": log}
				results[i], errs[i] = n.client.InvokeFunction(ctx(t, callTimeout), req)
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("InvokeFunction: %v", err)
		}
		for i, r := range results {
			if r.GetResult().GetStatus() != statusCompleted {
				t.Errorf("invocation %d: %v %s", i, r.GetResult().GetStatus(), r.GetResult().GetErrorMessage())
			}
		}
		// Without overlap the file reads start X, end X, start Y, end Y...
		lines := readLines(t, log)
		if len(lines) != 2*calls {
			t.Fatalf("log %v, want %d lines", lines, 2*calls)
		}
		for i := 0; i < len(lines); i += 2 {
			label := strings.TrimPrefix(lines[i], "start ")
			if !strings.HasPrefix(lines[i], "start ") || lines[i+1] != "end "+label {
				t.Fatalf("executions overlapped under max_concurrency 1: %v", lines)
			}
		}
	})
}

// TestControlMemory: a function that allocates past its memory ceiling
// fails with MEMORY_LIMIT_EXCEEDED; a run within it reports its memory use.
func TestControlMemory(t *testing.T) {
	const mib = 1 << 20
	n := startNode(t, "", nodeOpts{noSamples: true})
	dir := t.TempDir()

	t.Run("process", func(t *testing.T) {
		py := python3(t)
		// The run within the ceiling lasts a few of the runtime's 50 ms
		// memory samples: a shorter one may report no memory use.
		path, _ := writeScript(t, dir, "alloc.sh",
			`exec "$PY" -c "import os, time; x = bytearray(int(os.environ['ALLOC_MIB']) * 1024 * 1024); time.sleep(0.3); print('allocated', len(x))"`+"\n")
		n.ctlRegister(t, &pb.RegisterTaskRequest{TaskId: "ctl-alloc",
			ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: path},
			Limits:       &pb.TaskLimits{MemoryLimitBytes: 64 * mib}})
		for _, tc := range []struct {
			allocMiB   string
			wantStatus pb.ExecutionStatus
			wantCode   string
		}{
			{"1", statusCompleted, ""},
			{"200", statusFailed, "MEMORY_LIMIT_EXCEEDED"},
		} {
			req := invocation(t, "ctl-alloc", modeSync, nil)
			req.Context.Environment = map[string]string{"PY": py, "ALLOC_MIB": tc.allocMiB}
			res := n.invoke(t, req).GetResult()
			if res.GetStatus() != tc.wantStatus || res.GetErrorCode() != tc.wantCode {
				t.Errorf("allocating %s MiB under 64 MiB: %v %q (%s), want %v %q",
					tc.allocMiB, res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage(), tc.wantStatus, tc.wantCode)
			}
			if tc.wantStatus == statusCompleted && res.GetMemoryUsedBytes() <= 0 {
				t.Errorf("a completed run reports memory_used_bytes %d", res.GetMemoryUsedBytes())
			}
		}
	})

	t.Run("wasm", func(t *testing.T) {
		// reactor.wasm's grow export allocates $GROW_MIB MiB and exits 2
		// when an allocation fails.
		n.ctlRegister(t, &pb.RegisterTaskRequest{TaskId: "ctl-wasm-grow",
			ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "wasm", Location: wasmFixture("reactor")},
			Limits:       &pb.TaskLimits{MemoryLimitBytes: 8 * mib}})
		for _, tc := range []struct {
			growMiB    string
			wantStatus pb.ExecutionStatus
			wantCode   string
		}{
			{"2", statusCompleted, ""},
			{"24", statusFailed, "MEMORY_LIMIT_EXCEEDED"},
		} {
			req := invocation(t, "ctl-wasm-grow", modeSync, nil)
			req.FunctionName = "grow"
			req.Context.Environment = map[string]string{"GROW_MIB": tc.growMiB}
			res := n.invoke(t, req).GetResult()
			if res.GetStatus() != tc.wantStatus || res.GetErrorCode() != tc.wantCode {
				t.Errorf("growing %s MiB under 8 MiB: %v %q (%s), want %v %q",
					tc.growMiB, res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage(), tc.wantStatus, tc.wantCode)
			}
			if res.GetMemoryUsedBytes() <= 0 || res.GetMemoryUsedBytes() > 8*mib {
				t.Errorf("growing %s MiB: memory_used_bytes %d, want within (0, 8 MiB]", tc.growMiB, res.GetMemoryUsedBytes())
			}
		}
	})
}

// TestControlCallback: an async and a sync invocation with callback_url
// each POST their final record once to a local server, and the execution
// then shows the delivery.
func TestControlCallback(t *testing.T) {
	type post struct {
		path, contentType string
		body              []byte
	}
	var (
		mu    sync.Mutex
		posts []post
	)
	got := make(chan post, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		p := post{r.URL.Path, r.Header.Get("Content-Type"), b}
		mu.Lock()
		posts = append(posts, p)
		mu.Unlock()
		select {
		case got <- p:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	postsTo := func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		c := 0
		for _, p := range posts {
			if p.path == path {
				c++
			}
		}
		return c
	}

	n := startNode(t, "", nodeOpts{})
	for _, mode := range []pb.ExecutionMode{modeAsync, modeSync} {
		t.Run(mode.String(), func(t *testing.T) {
			path := "/cb/" + mode.String()
			input := "callback " + mode.String()
			req := invocation(t, "echo", mode, []byte(input))
			req.CallbackUrl = srv.URL + path
			id := n.invoke(t, req).GetExecutionId()

			var p post
			deadline := time.After(finishBound)
			for p.path != path {
				select {
				case p = <-got:
				case <-deadline:
					t.Fatalf("no callback POST to %s within %v", path, finishBound)
				}
			}
			var body pb.GetExecutionStatusResponse
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(p.body, &body); err != nil {
				t.Fatalf("callback body is not a GetExecutionStatusResponse: %v\n%s", err, p.body)
			}
			if !strings.HasPrefix(p.contentType, "application/json") {
				t.Errorf("callback Content-Type %q, want application/json", p.contentType)
			}
			res := body.GetResult()
			if !body.GetFound() || res.GetStatus() != statusCompleted {
				t.Errorf("callback body: found=%v status %v, want true COMPLETED\n%s", body.GetFound(), res.GetStatus(), p.body)
			}
			if out := output(t, res.GetResult()); !strings.Contains(out, input) {
				t.Errorf("callback body output %q, want it to contain %q", out, input)
			}
			if body.GetExecutionId() != id || body.GetTaskId() != "echo" ||
				!bytes.Contains(p.body, []byte(`"executionId"`)) || !bytes.Contains(p.body, []byte(`"taskId"`)) {
				t.Errorf("callback body names execution %q task %q, want %q echo (as executionId, taskId)\n%s",
					body.GetExecutionId(), body.GetTaskId(), id, p.body)
			}

			st := n.ctlWaitCallback(t, id, finishBound)
			if cb := st.GetResult().GetCallback(); cb.GetUrl() != req.CallbackUrl || cb.GetAttempts() != 1 || cb.GetLastStatusCode() != http.StatusNoContent {
				t.Errorf("callback record: url %q attempts %d last_status_code %d, want %q 1 204",
					cb.GetUrl(), cb.GetAttempts(), cb.GetLastStatusCode(), req.CallbackUrl)
			}
			if c := postsTo(path); c != 1 {
				t.Errorf("%d POSTs to %s, want 1", c, path)
			}
		})
	}
}

// TestControlCallbackSurvivesCrash: a callback whose receiver is down is
// being retried when its node is SIGKILLed; the restarted node (same
// JetStream) delivers it from the outbox and records it delivered.
func TestControlCallbackSurvivesCrash(t *testing.T) {
	var (
		up       atomic.Bool
		refused  atomic.Int32
		accepted = make(chan string, 4)
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		if !up.Load() {
			refused.Add(1)
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		select {
		case accepted <- r.URL.Path:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)

	dataDir := filepath.Join(t.TempDir(), "data")
	n := startNode(t, dataDir, nodeOpts{})
	req := invocation(t, "echo", modeAsync, []byte("survive"))
	req.CallbackUrl = srv.URL + "/cb/crash"
	id := n.invoke(t, req).GetExecutionId()
	deadline := time.Now().Add(finishBound)
	for refused.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no callback attempt within %v", finishBound)
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.kill() // mid-retries: the first attempt was refused
	up.Store(true)

	n = startNode(t, dataDir, nodeOpts{})
	select {
	case path := <-accepted:
		if path != "/cb/crash" {
			t.Fatalf("callback POST to %s, want /cb/crash", path)
		}
	case <-time.After(finishBound):
		t.Fatalf("the restarted node did not deliver the callback within %v (refused %d before)", finishBound, refused.Load())
	}
	st := n.ctlWaitCallback(t, id, finishBound)
	if cb := st.GetResult().GetCallback(); cb.GetLastStatusCode() != http.StatusNoContent {
		t.Errorf("callback record after the restart: %v, want delivered with 204", cb)
	}
}

// ctlRegister registers a task and fails the test on an error.
func (n *node) ctlRegister(t *testing.T, req *pb.RegisterTaskRequest) *pb.TaskInfo {
	t.Helper()
	resp, err := n.client.RegisterTask(ctx(t, callTimeout), req)
	if err != nil {
		t.Fatalf("RegisterTask(%s): %v", req.GetTaskId(), err)
	}
	return resp.GetTask()
}

// ctlCancel calls CancelExecution and fails the test on an RPC error.
func (n *node) ctlCancel(t *testing.T, id string, force bool) *pb.CancelExecutionResponse {
	t.Helper()
	resp, err := n.client.CancelExecution(ctx(t, callTimeout), &pb.CancelExecutionRequest{ExecutionId: id, Reason: "e2e", Force: force})
	if err != nil {
		t.Fatalf("CancelExecution(%s, force=%v): %v", id, force, err)
	}
	return resp
}

// ctlWaitRunning waits until id runs, failing if it ends first.
func (n *node) ctlWaitRunning(t *testing.T, id string) {
	t.Helper()
	st := n.waitStatus(t, id, finishBound, func(s pb.ExecutionStatus) bool { return s == statusRunning || s.Terminal() })
	if s := st.GetResult().GetStatus(); s != statusRunning {
		t.Fatalf("execution %s ended %v (%s) before it was seen running", id, s, st.GetResult().GetErrorMessage())
	}
}

// ctlWaitRunningOutput waits until id runs and its output so far contains
// want, failing if it ends first or returned (the end of its invocation)
// is closed first.
func (n *node) ctlWaitRunningOutput(t *testing.T, id, want string, returned <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(finishBound)
	for {
		select {
		case <-returned:
			t.Fatalf("the invocation of %s returned before it was seen running with output %q", id, want)
		default:
		}
		st := n.status(t, id)
		res := st.GetResult()
		if st.GetFound() && res.GetStatus() == statusRunning && strings.Contains(output(t, res.GetResult()), want) {
			return
		}
		if res.GetStatus().Terminal() {
			t.Fatalf("execution %s ended %v (%s %s) before it was seen running", id, res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage())
		}
		if time.Now().After(deadline) {
			t.Fatalf("execution %s: %v (found=%v) with output %q after %v, want RUNNING with %q",
				id, res.GetStatus(), st.GetFound(), output(t, res.GetResult()), finishBound, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctlWaitCallback waits until id's callback is no longer pending and
// fails unless it was delivered.
func (n *node) ctlWaitCallback(t *testing.T, id string, bound time.Duration) *pb.GetExecutionStatusResponse {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		st := n.status(t, id)
		cb := st.GetResult().GetCallback()
		switch cb.GetState() {
		case "delivered":
			return st
		case "failed":
			t.Fatalf("callback of %s failed: %v", id, cb)
		}
		if time.Now().After(deadline) {
			t.Fatalf("callback of %s: %v after %v, want delivered", id, cb, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitMetric waits until the node's /metrics reports value for the
// unlabelled metric name.
func (n *node) waitMetric(t *testing.T, name string, value float64, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		got, err := n.metric(name)
		if err == nil && got == value {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metric %s: %v (%v) after %v, want %v", name, got, err, bound, value)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metric reads an unlabelled metric from the node's /metrics.
func (n *node) metric(name string) (float64, error) {
	resp, err := http.Get(n.httpURL() + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no metric %s", name)
}

// wasmFixture is the path of a module of the wasm runtime's test data.
func wasmFixture(name string) string {
	return filepath.Join(moduleRoot(), "internal", "runtime", "wasm", "testdata", name+".wasm")
}

// execProcesses lists the processes started for execution id: those whose
// environment holds SPEAR_EXECUTION_ID=id.
func execProcesses(id string) []int {
	needle := "SPEAR_EXECUTION_ID=" + id + "\x00"
	return procsWhere("environ", func(b []byte) bool { return strings.Contains(string(b)+"\x00", needle) })
}

// procsWhere lists the processes whose /proc/<pid>/<file> satisfies match.
func procsWhere(file string, match func([]byte) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), file)); err == nil && match(b) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitExecGone waits until no process of execution id remains.
func waitExecGone(t *testing.T, id string, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		pids := execProcesses(id)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v of execution %s still alive after %v", pids, id, bound)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sampleImage is the sample container function's image (make sample-image).
const sampleImage = "spear-sample-upper:latest"

// dockerSampleImage reports whether a Docker engine answers and holds
// sampleImage. Under CI=true a missing image fails the test when an engine
// answers.
func dockerSampleImage(t *testing.T) bool {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		return false
	}
	if err := exec.CommandContext(ctx(t, callTimeout), "docker", "image", "inspect", sampleImage).Run(); err == nil {
		return true
	}
	if os.Getenv("CI") == "true" && exec.CommandContext(ctx(t, callTimeout), "docker", "info").Run() == nil {
		t.Fatalf("CI=true and a Docker engine answers, but it has no %s: run make sample-image", sampleImage)
	}
	return false
}

// dockerEngine reports whether a Docker engine answers docker info.
func dockerEngine(t *testing.T) bool {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		return false
	}
	return exec.CommandContext(ctx(t, callTimeout), "docker", "info").Run() == nil
}

// fixtureImageTag is the image fixtureImage builds.
const fixtureImageTag = "spear-e2e-fixture:test"

// fixtureImage builds fixtureImageTag, a FROM scratch image whose entry
// point is the conformance fixture (its first argument, the function name,
// selects the behaviour), and returns the tag.
func fixtureImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := conformance.BuildFixture(t, t.TempDir())
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fn"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	dockerfile := "FROM scratch\nCOPY fn /fn\nENTRYPOINT [\"/fn\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx(t, 2*finishBound), "docker", "build", "-q", "-t", fixtureImageTag, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("docker build %s: %v\n%s", fixtureImageTag, err, out)
	}
	return fixtureImageTag
}

// waitNoContainers waits until no container of execution id remains.
func waitNoContainers(t *testing.T, id string, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		out, err := exec.CommandContext(ctx(t, callTimeout), "docker", "ps", "-a", "-q",
			"--filter", "label=io.spear.managed=true", "--filter", "label=io.spear.execution="+id).Output()
		if err != nil {
			t.Fatalf("docker ps: %v", err)
		}
		if strings.TrimSpace(string(out)) == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containers of execution %s remain after %v: %s", id, bound, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// python3 returns a python3 interpreter usable with the environment a
// process function gets, skipping the test when there is none.
func python3(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "/usr/local/bin/python3"} {
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("python3"); err == nil {
		return p
	}
	t.Skip("no python3 to allocate memory with")
	return ""
}

// waitFile waits until path exists.
func waitFile(t *testing.T, path string, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not exist after %v", path, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readLines returns the non-empty lines of path (none if it is missing).
func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// attemptStatuses lists the statuses of res's attempt_history.
func attemptStatuses(res *pb.ExecutionResult) []pb.ExecutionStatus {
	var out []pb.ExecutionStatus
	for _, a := range res.GetAttemptHistory() {
		out = append(out, a.GetStatus())
	}
	return out
}

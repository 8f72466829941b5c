package e2e

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestClusterByID: an execution that runs on one node is followed through
// another: watch, attach (its chunks from the first), logs, and a
// requeue of a dead-lettered one (issue #12: everything by id works from
// any node; cancel is TestClusterCrossNodeCancel's).
func TestClusterByID(t *testing.T) {
	_, nodes := startCluster(t, 2, 2)
	runner, viewer := nodes[1], nodes[0]
	dir := t.TempDir()
	gate := dir + "/gate"
	ticker, _ := writeScript(t, dir, "byid-ticker.sh", fmt.Sprintf(
		"echo tick 0\necho log line >&2\nwhile [ ! -e %s ]; do sleep 0.05; done\necho tick 1\n", gate))
	failing, _ := writeScript(t, dir, "byid-fail.sh", "echo no >&2\nexit 3\n")
	runner.registerProcess(t, "byid-ticker", ticker)
	runner.registerProcess(t, "byid-fail", failing)
	waitTaskEverywhere(t, nodes, "byid-fail")

	// A stream call at the runner, from a goroutine: it runs there.
	req := invocation(t, "byid-ticker", pb.ExecutionMode_EXECUTION_MODE_STREAM, nil)
	req.Context.ExecutionId = fmt.Sprintf("byid-%d", time.Now().UnixNano())
	id := req.Context.ExecutionId
	done := make(chan error, 1)
	go func() {
		s, err := runner.client.StreamFunction(ctx(t, callTimeout), req)
		for err == nil {
			_, err = s.Recv()
		}
		if err == io.EOF {
			err = nil
		}
		done <- err
	}()
	viewer.waitStatus(t, id, finishBound, func(s pb.ExecutionStatus) bool { return s == statusRunning })

	watch, err := viewer.client.WatchExecution(ctx(t, callTimeout), &pb.WatchExecutionRequest{ExecutionId: id})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil || first.GetStatus() != statusRunning {
		t.Fatalf("first watch event through the other node: %v, %v; want RUNNING", first.GetStatus(), err)
	}
	attach, err := viewer.client.StreamFunction(ctx(t, callTimeout), &pb.InvokeFunctionRequest{Context: &pb.ExecutionContext{ExecutionId: id}})
	if err != nil {
		t.Fatal(err)
	}
	var chunks strings.Builder
	for !strings.Contains(chunks.String(), "tick 0") {
		m, err := attach.Recv()
		if err != nil {
			t.Fatalf("attach through the other node: %v (chunks so far %q)", err, chunks.String())
		}
		chunks.WriteString(output(t, m.GetChunkData()))
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := attach.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("attach: %v", err)
		}
		chunks.WriteString(output(t, m.GetChunkData()))
	}
	if chunks.String() != "tick 0\ntick 1\n" {
		t.Fatalf("attached through the other node: %q, want both ticks once", chunks.String())
	}
	last := first
	for {
		ev, err := watch.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		last = ev
	}
	if last.GetStatus() != statusCompleted {
		t.Fatalf("last watch event %v, want COMPLETED", last.GetStatus())
	}
	if err := <-done; err != nil {
		t.Fatalf("the caller's stream: %v", err)
	}
	st, err := viewer.client.GetExecutionStatus(ctx(t, callTimeout), &pb.GetExecutionStatusRequest{ExecutionId: id, IncludeLogs: true})
	if err != nil || !strings.Contains(strings.Join(st.GetLogs(), "\n"), "log line") || lastNode(st.GetResult()) != clusterNodeID(1) {
		t.Fatalf("logs through the other node: %q (ran on %q), %v", st.GetLogs(), lastNode(st.GetResult()), err)
	}

	// A dead-lettered execution is requeued through the other node.
	fail := invocation(t, "byid-fail", modeAsync, nil)
	fail.Context.MaxRetries = 1
	failID := runner.invoke(t, fail).GetExecutionId()
	res := viewer.waitFinal(t, failID, finishBound).GetResult()
	if !res.GetDeadLettered() || res.GetAttempts() != 2 {
		t.Fatalf("failing execution: dead-lettered %v after %d attempts, want true after 2", res.GetDeadLettered(), res.GetAttempts())
	}
	rq, err := viewer.client.RequeueExecution(ctx(t, callTimeout), &pb.RequeueExecutionRequest{ExecutionId: failID})
	if err != nil || !rq.GetSuccess() {
		t.Fatalf("requeue through the other node: %v, %v", rq, err)
	}
	res = runner.waitFinal(t, failID, finishBound).GetResult()
	if res.GetAttempts() != 4 || !res.GetDeadLettered() {
		t.Fatalf("after the requeue: %d attempts, dead-lettered %v; want 4 and dead-lettered again", res.GetAttempts(), res.GetDeadLettered())
	}
}

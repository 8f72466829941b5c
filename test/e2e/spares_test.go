package e2e

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestProcessSpares: sync calls of a process task called often run in
// processes the node started ahead of them, each as the execution id its
// caller gets back (the function sees it as SPEAR_EXECUTION_ID, and the
// stored record is that id's); a stream call runs as the id its first
// message names; a deleted task's spares are killed.
func TestProcessSpares(t *testing.T) {
	n := startNode(t, "", nodeOpts{})
	path, _ := writeScript(t, t.TempDir(), "ids.sh", `printf '%s:' "$SPEAR_EXECUTION_ID"; cat`)
	n.registerProcess(t, "ids", path)
	for i := range 20 {
		in := fmt.Sprint(i)
		resp := n.invoke(t, invocation(t, "ids", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte(in)))
		id := resp.GetExecutionId()
		if got, want := output(t, resp.GetResult().GetResult()), id+":"+in; !resp.GetSuccess() || got != want {
			t.Fatalf("call %d: success %v, output %q, want %q", i, resp.GetSuccess(), got, want)
		}
		st := n.status(t, id).GetResult()
		if st.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || output(t, st.GetResult()) != id+":"+in {
			t.Fatalf("call %d: stored %v %q", i, st.GetStatus(), output(t, st.GetResult()))
		}
	}
	const used = `spear_runtime_spares_used_total{runtime="process"}`
	if v, err := n.metric(used); err != nil || v == 0 {
		t.Fatalf("%s = %v (%v): no call ran in a spare", used, v, err)
	}

	// A task that opts out (artifact metadata prestart false, with the
	// CLI) never runs in a spare.
	runCLI(t, n, "task", "create", "ids-now", "--id", "ids-now", "--location", path, "--artifact-meta", "prestart=false")
	before, _ := n.metric(used)
	for range 10 {
		resp := n.invoke(t, invocation(t, "ids-now", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("x")))
		if got := output(t, resp.GetResult().GetResult()); got != resp.GetExecutionId()+":x" {
			t.Fatalf("opted out: output %q for %s", got, resp.GetExecutionId())
		}
	}
	if after, err := n.metric(used); err != nil || after != before {
		t.Fatalf("%s went from %v to %v (%v) for a task that opted out", used, before, after, err)
	}
	code, _, stderr := runSpearArgs(t, "", "--addr", n.addr, "task", "create", "ids-bad", "--location", path, "--artifact-meta", "prestart=maybe")
	if code != 2 || !strings.Contains(stderr, "INVALID_ARTIFACT_METADATA") {
		t.Fatalf("prestart=maybe: exit %d, stderr %q; want 2 and INVALID_ARTIFACT_METADATA", code, stderr)
	}

	id, out := streamIDs(t, n, "ids", "s")
	if out != id+":s" {
		t.Fatalf("stream %s output %q", id, out)
	}

	if _, err := n.client.DeleteTask(ctx(t, callTimeout), &pb.DeleteTaskRequest{TaskId: "ids"}); err != nil {
		t.Fatal(err)
	}
	const ready = `spear_runtime_spares{runtime="process"}`
	deadline := time.Now().Add(10 * time.Second)
	for v, err := n.metric(ready); v != 0 || err != nil; v, err = n.metric(ready) {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (%v) after the task was deleted", ready, v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// streamIDs streams task with input and returns the id its messages name
// (all the same) and its output.
func streamIDs(t *testing.T, n *node, task, input string) (id, out string) {
	t.Helper()
	s, err := n.client.StreamFunction(ctx(t, callTimeout), invocation(t, task, pb.ExecutionMode_EXECUTION_MODE_STREAM, []byte(input)))
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return id, out
		}
		if err != nil {
			t.Fatal(err)
		}
		if id != "" && m.GetExecutionId() != id {
			t.Fatalf("stream messages name %s and %s", id, m.GetExecutionId())
		}
		id = m.GetExecutionId()
		if m.GetChunkData() != nil {
			out += output(t, m.GetChunkData())
		}
	}
}

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestClusterForwards: a sync or stream call that reaches a node which
// cannot run it is handed on to one that can, and the caller sees the same
// answer and chunks as if it had run where it landed (issue #12, Done-when
// test 4, and the busy-node case).
func TestClusterForwards(t *testing.T) {
	if !dockerEngine(t) {
		t.Skip("no Docker engine answers (docker info)")
	}
	nats := startNATSCluster(t, 3)
	noDocker := clusterNodeOpts(0, 1, "--nats-url", nats.url(), "--docker", "off")
	withDocker := clusterNodeOpts(1, 2, "--nats-url", nats.url(), "--docker", "on")
	nodes := startNodes(t, []nodeOpts{noDocker, withDocker})
	a, b := nodes[0], nodes[1]
	b.ctlRegister(t, &pb.RegisterTaskRequest{TaskId: "fwd-docker",
		ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "docker", Location: fixtureImage(t)}})
	waitTaskEverywhere(t, nodes, "fwd-docker")
	waitNodes(t, a, clusterNodeID(0), clusterNodeID(1))

	t.Run("docker-sync", func(t *testing.T) {
		req := invocation(t, "fwd-docker", modeSync, []byte("handed on"))
		req.FunctionName = "echo"
		resp := a.invoke(t, req)
		if !resp.GetSuccess() || output(t, resp.GetResult().GetResult()) != "handed on" {
			t.Fatalf("sync call at the node without docker: success %v, output %q, %s",
				resp.GetSuccess(), output(t, resp.GetResult().GetResult()), resp.GetMessage())
		}
		if st := a.status(t, resp.GetExecutionId()); lastNode(st.GetResult()) != clusterNodeID(1) {
			t.Fatalf("ran on %q, want %s (the node with docker; status %v)", lastNode(st.GetResult()), clusterNodeID(1), st)
		}
	})

	t.Run("docker-stream", func(t *testing.T) {
		req := invocation(t, "fwd-docker", pb.ExecutionMode_EXECUTION_MODE_STREAM, nil)
		req.FunctionName = "ticks"
		stream, err := a.client.StreamFunction(ctx(t, callTimeout), req)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		var firstChunk time.Time
		var final *pb.StreamExecutionResult
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			if len(m.GetChunkData().GetValue()) > 0 {
				if firstChunk.IsZero() {
					firstChunk = time.Now()
				}
				out.WriteString(output(t, m.GetChunkData()))
			}
			if m.GetIsFinal() {
				final = m
			}
		}
		want := "tick 0\ntick 1\ntick 2\ntick 3\ntick 4\n"
		if final == nil || final.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || out.String() != want {
			t.Fatalf("stream: final %v, chunks %q; want COMPLETED and %q", final, out.String(), want)
		}
		res := a.status(t, final.GetExecutionId()).GetResult()
		if got := lastNode(res); got != clusterNodeID(1) {
			t.Fatalf("ran on %q, want n2", got)
		}
		if ended := res.GetCompletedAt().AsTime(); !firstChunk.Before(ended) {
			t.Fatalf("the first chunk arrived at %v, not before the function ended at %v (result %v)", firstChunk, ended, res)
		}
	})

	t.Run("busy", func(t *testing.T) {
		// A sync call fills n1's one slot; the next sync call at n1 runs
		// on n2, which has free slots, rather than waiting.
		dir := t.TempDir()
		gate := dir + "/gate"
		sleeper, _ := writeScript(t, dir, "fwd-sleeper.sh", fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done\necho slept\n", gate))
		quick, _ := writeScript(t, dir, "fwd-quick.sh", "echo quick\n")
		a.registerProcess(t, "fwd-sleeper", sleeper)
		a.registerProcess(t, "fwd-quick", quick)
		waitTaskEverywhere(t, nodes, "fwd-quick")
		blocker := invocation(t, "fwd-sleeper", modeSync, nil)
		blocker.Context.ExecutionId = fmt.Sprintf("fwd-blocker-%d", time.Now().UnixNano())
		blocked := make(chan *pb.InvokeFunctionResponse, 1)
		go func() { blocked <- a.invoke(t, blocker) }()
		a.ctlWaitRunning(t, blocker.Context.ExecutionId)
		resp := a.invoke(t, invocation(t, "fwd-quick", modeSync, nil))
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if !resp.GetSuccess() || output(t, resp.GetResult().GetResult()) != "quick\n" {
			t.Fatalf("sync call at a busy node: success %v, %s", resp.GetSuccess(), resp.GetMessage())
		}
		if st := a.status(t, resp.GetExecutionId()); lastNode(st.GetResult()) != clusterNodeID(1) {
			t.Fatalf("ran on %q while n1 was busy and n2 free, want n2 (status %v)", lastNode(st.GetResult()), st)
		}
		if r := <-blocked; !r.GetSuccess() || lastNode(a.status(t, r.GetExecutionId()).GetResult()) != clusterNodeID(0) {
			t.Fatalf("the blocker: success %v on %q, want success on n1", r.GetSuccess(), lastNode(r.GetResult()))
		}
	})
}

// lastNode is the node of an execution's last attempt.
func lastNode(r *pb.ExecutionResult) string {
	h := r.GetAttemptHistory()
	if len(h) == 0 {
		return ""
	}
	return h[len(h)-1].GetNode()
}

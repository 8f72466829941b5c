package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestNodeRegistry: two nodes sharing a nats-server see each other in
// ListNodes, `spear node list`, GetHealth and /metrics, each with its
// address, runtimes and slots; a third node with a live node's id is
// refused; a SIGKILLed node disappears from the others' view, and comes
// back when restarted on its data dir (at once: its own stale entry does
// not hold it up).
func TestNodeRegistry(t *testing.T) {
	url := startNATS(t)
	start := func(id, dataDir string) *node {
		return startNode(t, dataDir, nodeOpts{noSamples: true, workers: 3, args: []string{"--nats-url", url, "--node-id", id}})
	}
	a, b := start("node-a", ""), start("node-b", "")
	nodes := waitNodes(t, a, "node-a", "node-b")
	for _, n := range nodes {
		want := map[string]string{"node-a": a.addr, "node-b": b.addr}[n.GetNodeId()]
		if n.GetAddress() != want || !slices.Contains(n.GetRuntimes(), "process") || n.GetSlotsTotal() != 3 ||
			n.GetVersion() == "" || n.GetSelf() != (n.GetNodeId() == "node-a") {
			t.Errorf("node entry %v (want address %s, process runtime, 3 slots, a version, self on node-a)", n, want)
		}
	}
	out := string(runCLI(t, b, "node", "list"))
	if !strings.Contains(out, "node-a ") || !strings.Contains(out, "node-b *") || !strings.Contains(out, a.addr) {
		t.Errorf("spear node list at node-b:\n%s", out)
	}
	h, err := b.client.GetHealth(ctx(t, callTimeout), &pb.GetHealthRequest{})
	if err != nil || h.GetCluster().GetNodeCount() != 2 {
		t.Errorf("GetHealth cluster %v, %v; want 2 nodes", h.GetCluster(), err)
	}
	if m := scrape(t, a); !strings.Contains(m, "spear_cluster_nodes 2") || !strings.Contains(m, `spear_cluster_node_slots{node="node-b"} 3`) {
		t.Errorf("/metrics lacks the cluster gauges:\n%s", grepLines(m, "spear_cluster"))
	}

	out, code := serveRefused(t, "--nats-url", url, "--node-id", "node-a", "--listen", freeAddr(t))
	if code == 0 || !strings.Contains(out, "NODE_ID_IN_USE") && !strings.Contains(out, "in use by a live node") {
		t.Errorf("a second node-a: exit %d\n%s", code, out)
	}

	b.kill()
	killed := time.Now()
	waitNodes(t, a, "node-a")
	t.Logf("node-b left node-a's view %v after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	restarted := start("node-b", b.dataDir)
	waitNodes(t, restarted, "node-a", "node-b")
}

// waitNodes waits until n's ListNodes lists exactly ids, and returns them.
func waitNodes(t *testing.T, n *node, ids ...string) []*pb.NodeInfo {
	t.Helper()
	deadline := time.Now().Add(finishBound)
	for {
		resp, err := n.client.ListNodes(ctx(t, callTimeout), &pb.ListNodesRequest{})
		var got []string
		for _, e := range resp.GetNodes() {
			got = append(got, e.GetNodeId())
		}
		if err == nil && slices.Equal(got, ids) {
			return resp.GetNodes()
		}
		if time.Now().After(deadline) {
			t.Fatalf("ListNodes at %s: %v, %v; want %v", n.addr, got, err, ids)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serveRefused runs `spear serve` with args, which must exit, and returns
// its output and exit code.
func serveRefused(t *testing.T, args ...string) (string, int) {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	cmd := exec.CommandContext(c, spearBin(t), append([]string{"serve", "--data-dir", filepath.Join(t.TempDir(), "data"),
		"--docker", "off"}, args...)...)
	cmd.Env = withoutSpearEnv(os.Environ())
	out, _ := cmd.CombinedOutput()
	if c.Err() != nil {
		t.Fatalf("spear serve %v still serving after %v:\n%s", args, readyTimeout, out)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// scrape returns n's /metrics.
func scrape(t *testing.T, n *node) string {
	t.Helper()
	resp, err := http.Get(n.httpURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestFencedNode: a node cut off (SIGSTOP) for longer than the ack wait
// while it runs an execution: the execution runs again on the other node
// and completes there; when the cut-off node wakes it stops its stale run,
// logs that it was fenced, and does not overwrite the result. The record
// lists both attempts, the lost one with its node.
func TestFencedNode(t *testing.T) {
	url := startNATS(t)
	start := func(id string) *node {
		return startNode(t, "", nodeOpts{noSamples: true, workers: 2, args: []string{"--nats-url", url, "--node-id", id}})
	}
	a := start("node-a")
	path, _ := writeScript(t, t.TempDir(), "slow.sh", "sleep 4\necho \"done on $SPEAR_NODE_ID\"\n")
	a.registerProcess(t, "e2e-fenced", path)
	id := a.invoke(t, invocation(t, "e2e-fenced", pb.ExecutionMode_EXECUTION_MODE_ASYNC, nil)).GetExecutionId()
	a.waitStatus(t, id, finishBound, func(s pb.ExecutionStatus) bool { return s == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING })
	b := start("node-b")
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	res := b.waitFinal(t, id, finishBound).GetResult()
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if res.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || output(t, res.GetResult()) != "done on node-b\n" {
		t.Fatalf("result %v %s %q", res.GetStatus(), res.GetErrorCode(), output(t, res.GetResult()))
	}
	deadline := time.Now().Add(finishBound)
	for !strings.Contains(a.log.String(), "fenced") {
		if time.Now().After(deadline) {
			t.Fatalf("node-a did not log that it was fenced:\n%s", tail(a.log.String(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	final := b.status(t, id).GetResult()
	h := final.GetAttemptHistory()
	if final.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || output(t, final.GetResult()) != "done on node-b\n" ||
		len(h) != 2 || h[0].GetNode() != "node-a" || h[0].GetErrorCode() != "ATTEMPT_LOST" || h[1].GetNode() != "node-b" {
		t.Fatalf("after node-a woke: %v %q, history %v", final.GetStatus(), output(t, final.GetResult()), h)
	}
}

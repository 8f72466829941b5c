package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "github.com/spear-go/spear/api/spearlet"
)

// Cluster-wide limits (issue #12): a task's max_concurrency and max_queued
// hold across the nodes, not per node. See docs/CLUSTER.md.

// startLimitsCluster starts 3 nodes with workers slots each on a 3-server
// JetStream cluster, and registers a process task of body with limits on
// the first; every node knows it on return.
func startLimitsCluster(t *testing.T, workers int, taskID, body string, limits *pb.TaskLimits) []*node {
	t.Helper()
	nats := startNATSCluster(t, 3)
	var opts []nodeOpts
	for i := range 3 {
		o := clusterNodeOpts(i, workers, "--nats-url", nats.url())
		// Node ids of their own: a node that starts kills the processes
		// left by an earlier run of its id (process.Reconcile), so nodes
		// of tests run at once on one machine must not share one.
		o.args[1] = fmt.Sprintf("lim%d-n%d", os.Getpid(), i+1)
		opts = append(opts, o)
	}
	nodes := startNodes(t, opts)
	path, _ := writeScript(t, t.TempDir(), taskID+".sh", body)
	nodes[0].ctlRegister(t, &pb.RegisterTaskRequest{TaskId: taskID,
		ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: path}, Limits: limits})
	waitTaskEverywhere(t, nodes, taskID)
	return nodes
}

// TestClusterLimitsConcurrency: a task with max_concurrency 2, and 20
// one-second async executions submitted through all three nodes (with
// sync calls at every node meanwhile): all complete, and at no time do more
// than 2 run in the whole cluster, though each node has 4 free slots.
func TestClusterLimitsConcurrency(t *testing.T) {
	const limit, total, syncPerNode = 2, 20, 2
	nodes := startLimitsCluster(t, 4, "limited", "sleep 1\necho done\n", &pb.TaskLimits{MaxConcurrency: limit})

	start := time.Now()
	var syncResults sync.Map
	var wg sync.WaitGroup
	for i := range len(nodes) * syncPerNode {
		wg.Go(func() {
			n := nodes[i%len(nodes)]
			c, cancel := context.WithTimeout(t.Context(), 3*finishBound)
			defer cancel()
			resp, err := n.client.InvokeFunction(c, invocation(t, "limited", modeSync, nil))
			if err != nil {
				t.Errorf("sync call %d at %s: %v", i, n.addr, err)
				return
			}
			syncResults.Store(resp.GetExecutionId(), resp.GetResult())
		})
	}
	ids := submitAsync(t, nodes, "limited", total, 0)
	results := waitAllFinal(t, nodes, ids, 3*finishBound)
	wg.Wait()
	syncResults.Range(func(id, r any) bool {
		results[id.(string)] = r.(*pb.ExecutionResult)
		return true
	})
	t.Logf("%d executions done %v after the first submission", len(results), time.Since(start).Round(time.Millisecond))

	ran := map[string]int{}
	for id, r := range results {
		if r.GetStatus() != statusCompleted || r.GetAttempts() != 1 {
			t.Errorf("execution %s: %v %s %s after %d attempts; want COMPLETED at the first", id, r.GetStatus(), r.GetErrorCode(), r.GetErrorMessage(), r.GetAttempts())
			continue
		}
		h := r.GetAttemptHistory()
		ran[h[len(h)-1].GetNode()]++
	}
	spans := runSpans(results)
	overlap := clusterOverlap(spans)
	t.Logf("runs by node: %v; most runs at once: %d in the cluster, %v by node", ran, overlap, maxOverlap(spans))
	if len(results) != total+len(nodes)*syncPerNode {
		t.Errorf("%d results; want %d", len(results), total+len(nodes)*syncPerNode)
	}
	if overlap > limit {
		t.Errorf("%d runs at once in the cluster; the task's max_concurrency is %d", overlap, limit)
	}
}

// clusterOverlap is the most runs that overlapped in time, on all nodes
// together.
func clusterOverlap(spans []runSpan) int {
	all := make([]runSpan, len(spans))
	for i, s := range spans {
		s.node = "cluster"
		all[i] = s
	}
	return maxOverlap(all)["cluster"]
}

// TestClusterLimitsQueued: a task with max_queued 5 whose runs wait for a
// gate, and 30 async submissions at once, 10 through each node: exactly 5
// are accepted (all of them complete once the gate opens), the other 25 are
// refused with QUEUE_FULL.
func TestClusterLimitsQueued(t *testing.T) {
	const limit, perNode = 5, 10
	gate := filepath.Join(t.TempDir(), "gate")
	body := fmt.Sprintf("while [ ! -e %q ]; do sleep 0.05; done\necho done\n", gate)
	nodes := startLimitsCluster(t, 2, "quota", body, &pb.TaskLimits{MaxQueued: limit})

	var mu sync.Mutex
	var accepted []string
	refused := 0
	ready := make(chan struct{})
	var wg sync.WaitGroup
	for i := range len(nodes) * perNode {
		wg.Go(func() {
			n := nodes[i%len(nodes)]
			<-ready
			var trailer metadata.MD
			resp, err := n.client.InvokeFunction(ctx(t, callTimeout), invocation(t, "quota", modeAsync, nil), grpc.Trailer(&trailer))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				accepted = append(accepted, resp.GetExecutionId())
				return
			}
			if e := asRPCError(t, err, trailer); e.code != codes.ResourceExhausted || e.reason != "QUEUE_FULL" {
				t.Errorf("submission %d at %s: %v %q (%s); want RESOURCE_EXHAUSTED QUEUE_FULL", i, n.addr, e.code, e.reason, e.msg)
				return
			}
			refused++
		})
	}
	close(ready)
	wg.Wait()
	t.Logf("%d accepted, %d refused with QUEUE_FULL", len(accepted), refused)
	if len(accepted) != limit || refused != len(nodes)*perNode-limit {
		t.Fatalf("%d accepted and %d refused of %d submissions to 3 nodes; want exactly max_queued %d accepted",
			len(accepted), refused, len(nodes)*perNode, limit)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for id, r := range waitAllFinal(t, nodes, accepted, finishBound) {
		if r.GetStatus() != statusCompleted {
			t.Errorf("accepted execution %s: %v %s %s", id, r.GetStatus(), r.GetErrorCode(), r.GetErrorMessage())
		}
	}
	// Finished, they left the queue: there is room again.
	if _, err := submitOne(t, nodes[2], "quota", 0); err != nil {
		t.Errorf("a submission after the queue emptied: %v", err)
	}
}

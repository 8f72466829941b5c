package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
)

// The cluster (issue #12): three nodes share the work on a JetStream
// cluster, external (three nats-server processes) or formed by the nodes'
// embedded servers. See docs/CLUSTER.md.

// TestClusterSpreadsWork: 240 async executions of a 300 ms function on
// three nodes with 4 slots each, against a 3-server JetStream cluster: all
// complete, each node runs 80±20 of them, and no node ever runs more than
// its 4 at once.
func TestClusterSpreadsWork(t *testing.T) {
	const (
		total, workers = 240, 4
		fair, slack    = total / 3, 20
	)
	_, nodes := startCluster(t, 3, workers)
	for _, n := range nodes {
		if got := n.health(t).GetDetails().GetSystemInfo()["replicas"]; got != "3" {
			t.Fatalf("node %s keeps %s copies of its streams; want 3 (auto, on a 3-server cluster)", n.addr, got)
		}
	}
	path, _ := writeScript(t, t.TempDir(), "short.sh", "sleep 0.3\necho done\n")
	nodes[0].registerProcess(t, "short", path)
	waitTaskEverywhere(t, nodes, "short")

	start := time.Now()
	ids := submitAsync(t, nodes, "short", total, 0)
	results := waitAllFinal(t, nodes, ids, 3*finishBound)
	t.Logf("%d executions done %v after the first submission", total, time.Since(start).Round(time.Millisecond))

	ran := map[string]int{}
	attempts := map[int32]int{}
	for id, r := range results {
		if r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
			t.Errorf("execution %s: %v %s %s", id, r.GetStatus(), r.GetErrorCode(), r.GetErrorMessage())
			continue
		}
		h := r.GetAttemptHistory()
		ran[h[len(h)-1].GetNode()]++
		attempts[r.GetAttempts()]++
	}
	overlap := maxOverlap(runSpans(results))
	t.Logf("executions completed by node: %v; most runs at once by node: %v; executions by attempts: %v", ran, overlap, attempts)
	for i := range 3 {
		id := clusterNodeID(i)
		if c := ran[id]; c < fair-slack || c > fair+slack {
			t.Errorf("node %s completed %d executions; want %d±%d (all: %v)", id, c, fair, slack, ran)
		}
		if overlap[id] > workers {
			t.Errorf("node %s ran %d executions at once; it has %d slots", id, overlap[id], workers)
		}
	}
}

// embeddedClusterOpts are the options of three nodes, 2 slots each, whose
// embedded NATS servers form one cluster (routes on free loopback ports).
func embeddedClusterOpts(t *testing.T) []nodeOpts {
	routes := make([]string, 3)
	for i := range routes {
		routes[i] = freeAddr(t)
	}
	var opts []nodeOpts
	for i := range 3 {
		opts = append(opts, clusterNodeOpts(i, 2, "--nats-cluster", routes[i],
			"--nats-routes", "nats://"+strings.Join(routes, ",nats://")))
	}
	return opts
}

// TestClusterEmbedded: three `spear serve` processes, nothing else, form a
// JetStream cluster of their embedded servers (3 copies of everything);
// when one is SIGKILLed, the other two keep accepting work and finish it,
// and what the dead one was running runs again on them.
func TestClusterEmbedded(t *testing.T) {
	nodes := startNodes(t, embeddedClusterOpts(t))
	for _, n := range nodes {
		info := n.health(t).GetDetails().GetSystemInfo()
		if info["store"] != "embedded-cluster" || info["replicas"] != "3" {
			t.Fatalf("node %s: store %q with %s copies; want embedded-cluster with 3", n.addr, info["store"], info["replicas"])
		}
	}
	path, _ := writeScript(t, t.TempDir(), "second.sh", "sleep 1\necho done\n")
	nodes[0].registerProcess(t, "second", path)
	waitTaskEverywhere(t, nodes, "second")

	before := submitAsync(t, nodes, "second", 12, 0)
	victim, survivors := nodes[2], nodes[:2]
	waitRunsUnder(t, victim, path)
	victim.kill()
	killedAt := time.Now()

	// The survivors accept work again once the streams whose leader was
	// on n3 have elected another (seconds; meanwhile they answer
	// UNAVAILABLE, and the client tries again).
	first, err := submitOne(t, survivors[0], "second", finishBound)
	if err != nil {
		t.Fatalf("no survivor accepted work within %v of n3's death: %v", finishBound, err)
	}
	t.Logf("the survivors accept work again %v after n3's death", time.Since(killedAt).Round(time.Millisecond))
	after := append(submitAsync(t, survivors, "second", 11, finishBound), first)
	results := waitAllFinal(t, survivors, slices.Concat(before, after), 3*finishBound)
	rerun := 0
	for id, r := range results {
		h := r.GetAttemptHistory()
		switch {
		case r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED:
			t.Errorf("execution %s: %v %s %s", id, r.GetStatus(), r.GetErrorCode(), r.GetErrorMessage())
		case h[len(h)-1].GetNode() == clusterNodeID(2) && h[len(h)-1].GetCompletedAt().AsTime().After(killedAt):
			t.Errorf("execution %s: completed on the killed node n3 after its death", id)
		case slices.Contains(after, id) && h[len(h)-1].GetNode() == clusterNodeID(2):
			t.Errorf("execution %s, submitted after n3's death, ran on n3", id)
		}
		if r.GetAttempts() > 1 {
			rerun++
			t.Logf("execution %s ran %d times: %s", id, r.GetAttempts(), attemptNodes(r))
		}
	}
	if rerun == 0 {
		t.Errorf("no execution ran again, though n3 ran one when it was killed")
	}
	t.Logf("all %d executions completed, %d of them run again after n3's death (%v after the kill)",
		len(results), rerun, time.Since(killedAt).Round(time.Millisecond))
}

// TestClusterEmbeddedRestart: an embedded cluster that lost two of its
// three nodes (SIGKILL) has no quorum; restarting one of them on its data
// dir brings the quorum back: it starts, and the two serve and finish
// work accepted before the loss and after; the third rejoins later.
func TestClusterEmbeddedRestart(t *testing.T) {
	opts := embeddedClusterOpts(t)
	nodes := startNodes(t, opts)
	path, _ := writeScript(t, t.TempDir(), "short.sh", "sleep 0.2\necho done\n")
	nodes[0].registerProcess(t, "short", path)
	waitTaskEverywhere(t, nodes, "short")
	before := submitAsync(t, nodes, "short", 6, 0)
	waitAllFinal(t, nodes, before, finishBound)

	nodes[1].kill()
	nodes[2].kill()
	lostAt := time.Now()
	for i := range opts {
		opts[i].addr = nodes[i].addr
	}
	back := startNode(t, nodes[1].dataDir, opts[1])
	t.Logf("n2 serves again %v after two of three were killed", time.Since(lostAt).Round(time.Millisecond))
	live := []*node{nodes[0], back}
	first, err := submitOne(t, back, "short", finishBound)
	if err != nil {
		t.Fatalf("no work accepted after n2's restart: %v", err)
	}
	after := append(submitAsync(t, live, "short", 6, finishBound), first)
	for id, r := range waitAllFinal(t, live, slices.Concat(before, after), 3*finishBound) {
		if r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
			t.Errorf("execution %s: %v %s", id, r.GetStatus(), r.GetErrorMessage())
		}
	}
	third := startNode(t, nodes[2].dataDir, opts[2])
	if _, err := submitOne(t, third, "short", finishBound); err != nil {
		t.Fatalf("the third node, restarted last, accepts no work: %v", err)
	}
}

// TestClusterReplicasRefused: a node refuses to start, saying why, when the
// cluster it is told to use cannot be: more copies than a single server
// keeps, NATS URLs where nothing answers, routes exposed without
// authentication.
func TestClusterReplicasRefused(t *testing.T) {
	single := startNATSCluster(t, 1)
	dead1, dead2 := freeAddr(t), freeAddr(t)
	deadURL := "nats://" + dead1 + ",nats://" + dead2
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"3 copies on one nats-server", []string{"--nats-url", single.url(), "--replicas", "3"},
			[]string{"--replicas 3", single.url(), "not part of a JetStream cluster"}},
		{"3 copies on the embedded server", []string{"--replicas", "3"},
			[]string{"--replicas 3", "embedded NATS server is a single server"}},
		{"nothing answers at the URLs", []string{"--nats-url", deadURL},
			[]string{"no NATS server answers at " + deadURL}},
		{"routes on a public address", []string{"--nats-cluster", "0.0.0.0:" + port(freeAddr(t)), "--nats-routes", "nats://" + dead1},
			[]string{"refusing to accept NATS cluster routes on 0.0.0.0", "--insecure"}},
		{"routes without a route address", []string{"--nats-routes", "nats://" + dead1},
			[]string{"--nats-routes needs --nats-cluster"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := serveFails(t, tt.args...)
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("spear serve %s exited %d with:\n%s\nwant it to say %q", strings.Join(tt.args, " "), code, out, w)
				}
			}
		})
	}
}

// attemptNodes lists an execution's attempts: number, node, status.
func attemptNodes(r *pb.ExecutionResult) string {
	var out []string
	for _, a := range r.GetAttemptHistory() {
		out = append(out, fmt.Sprintf("#%d on %s %v", a.GetAttempt(), a.GetNode(), a.GetStatus()))
	}
	return strings.Join(out, ", ")
}

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/runtime/conformance"
)

// natsServerBin builds nats-server from the module the repository
// depends on (so the tests need nothing installed, and run the version
// Spear embeds) and returns its path.
func natsServerBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nats-server")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	cmd.Dir = moduleRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building nats-server: %v\n%s", err, out)
	}
	return bin
}

// natsProc is one nats-server process.
type natsProc struct {
	name   string
	addr   string // client HOST:PORT
	cmd    *exec.Cmd
	log    *conformance.Buffer
	exited chan struct{}
}

// kill SIGKILLs the server and waits until it is gone.
func (p *natsProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// natsCluster is nats-server processes on loopback with JetStream: one
// alone, or several routed to each other as one cluster.
type natsCluster struct {
	servers []*natsProc
}

// url is the servers' client URLs, comma-separated, as --nats-url takes
// them.
func (c *natsCluster) url() string {
	var urls []string
	for _, s := range c.servers {
		urls = append(urls, "nats://"+s.addr)
	}
	return strings.Join(urls, ",")
}

// startNATSCluster starts n nats-server processes with JetStream (n > 1:
// clustered), stopped when the test ends, and waits until each accepts
// clients. JetStream itself may not be ready yet: a new cluster elects
// its leader within seconds, and the nodes wait for it.
func startNATSCluster(t *testing.T, n int) *natsCluster {
	t.Helper()
	bin := natsServerBin(t)
	clients, routes := make([]string, n), make([]string, n)
	for i := range n {
		clients[i], routes[i] = freeAddr(t), freeAddr(t)
	}
	c := &natsCluster{}
	for i := range n {
		p := &natsProc{name: fmt.Sprintf("s%d", i+1), addr: clients[i], log: &conformance.Buffer{}, exited: make(chan struct{})}
		host, port, _ := net.SplitHostPort(p.addr)
		args := []string{"-js", "-n", p.name, "-a", host, "-p", port, "-sd", t.TempDir()}
		if n > 1 {
			args = append(args, "--cluster_name", "spear-e2e", "--cluster", "nats://"+routes[i],
				"--routes", "nats://"+strings.Join(routes, ",nats://"))
		}
		p.cmd = exec.Command(bin, args...)
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("starting nats-server: %v", err)
		}
		go func() { _ = p.cmd.Wait(); close(p.exited) }()
		t.Cleanup(func() {
			p.kill()
			if t.Failed() {
				t.Logf("log of nats-server %s:\n%s", p.name, tail(p.log.String(), 30))
			}
		})
		c.servers = append(c.servers, p)
	}
	for _, p := range c.servers {
		waitListening(t, p.addr, p.log)
	}
	return c
}

// waitListening waits until addr accepts TCP connections.
func waitListening(t *testing.T, addr string, log *conformance.Buffer) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after %v: %v\n%s", addr, readyTimeout, err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startNodes starts `spear serve` processes at once (an embedded cluster
// is ready only once its peers are up) on fresh data dirs and waits until
// each serves.
func startNodes(t *testing.T, opts []nodeOpts) []*node {
	t.Helper()
	start := time.Now()
	defer func() {
		t.Logf("%d nodes serving %v after they were started", len(opts), time.Since(start).Round(time.Millisecond))
	}()
	nodes := make([]*node, len(opts))
	errs := make([]error, len(opts))
	var wg sync.WaitGroup
	for i, o := range opts {
		dataDir := filepath.Join(t.TempDir(), "data")
		wg.Go(func() {
			for range 3 { // the API port may be taken meanwhile: see startNode
				if nodes[i], errs[i] = tryStartNode(t, dataDir, o); errs[i] == nil {
					return
				}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("starting node %d of %d: %v", i+1, len(opts), err)
		}
	}
	return nodes
}

// clusterNodeOpts are the options of node i (from 0) of a cluster: its id
// (clusterNodeID), workers and the flags that join it to the others.
func clusterNodeOpts(i, workers int, join ...string) nodeOpts {
	return nodeOpts{workers: workers, noSamples: true,
		args: append([]string{"--node-id", clusterNodeID(i), "--shutdown-grace", "1s"}, join...)}
}

// startCluster starts 3 clustered nats-server processes and n nodes with
// workers slots each on them.
func startCluster(t *testing.T, n, workers int) (*natsCluster, []*node) {
	t.Helper()
	nats := startNATSCluster(t, 3)
	var opts []nodeOpts
	for i := range n {
		opts = append(opts, clusterNodeOpts(i, workers, "--nats-url", nats.url()))
	}
	return nats, startNodes(t, opts)
}

// clusterNodeID is the id of node i (from 0) of a cluster: n<i+1>, and
// this test process's pid. A node that starts kills the processes left on
// the machine by a node of its id (process.Reconcile), so ids are unique
// to the test run: tests run at once (by other checkouts, or the bench)
// must not kill each other's functions.
func clusterNodeID(i int) string { return fmt.Sprintf("n%d-%d", i+1, os.Getpid()) }

// waitTaskEverywhere waits until every node knows the task (registered on
// one, it reaches the others through the shared store).
func waitTaskEverywhere(t *testing.T, nodes []*node, taskID string) {
	t.Helper()
	deadline := time.Now().Add(finishBound)
	for _, n := range nodes {
		for {
			c, cancel := context.WithTimeout(t.Context(), callTimeout)
			_, err := n.client.GetTask(c, &pb.GetTaskRequest{TaskId: taskID})
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s does not know task %s after %v: %v", n.addr, taskID, finishBound, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// submitAsync submits count async executions of taskID, spread over the
// nodes in turn, a few at a time, and returns their ids. A submission the
// node refuses as UNAVAILABLE, or does not answer in time, is made again
// for up to retryFor (a cluster electing new leaders after losing a
// server refuses writes for a few seconds).
func submitAsync(t *testing.T, nodes []*node, taskID string, count int, retryFor time.Duration) []string {
	t.Helper()
	ids := make([]string, count)
	errs := make(chan error, count)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 12)
	for i := range count {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			n := nodes[i%len(nodes)]
			var err error
			if ids[i], err = submitOne(t, n, taskID, retryFor); err != nil {
				errs <- fmt.Errorf("async submission %d to %s: %w", i, n.addr, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return ids
}

// submitOne submits one async execution (see submitAsync).
func submitOne(t *testing.T, n *node, taskID string, retryFor time.Duration) (string, error) {
	deadline := time.Now().Add(retryFor)
	timeout := callTimeout
	if retryFor > 0 {
		timeout = 5 * time.Second
	}
	for {
		c, cancel := context.WithTimeout(t.Context(), timeout)
		resp, err := n.client.InvokeFunction(c, invocation(t, taskID, pb.ExecutionMode_EXECUTION_MODE_ASYNC, nil))
		cancel()
		if err == nil {
			return resp.GetExecutionId(), nil
		}
		if code := status.Code(err); (code != codes.Unavailable && code != codes.DeadlineExceeded) || time.Now().After(deadline) {
			return "", err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitAllFinal waits until every execution is terminal, asking the nodes
// in turn, and returns the results by id.
func waitAllFinal(t *testing.T, nodes []*node, ids []string, bound time.Duration) map[string]*pb.ExecutionResult {
	t.Helper()
	out := map[string]*pb.ExecutionResult{}
	for i, id := range ids {
		out[id] = nodes[i%len(nodes)].waitFinal(t, id, bound).GetResult()
	}
	return out
}

// runSpan is one run of an execution on a node.
type runSpan struct {
	node       string
	start, end time.Time
}

// runSpans are the runs of the executions, from their attempt histories.
func runSpans(results map[string]*pb.ExecutionResult) []runSpan {
	var spans []runSpan
	for _, r := range results {
		for _, a := range r.GetAttemptHistory() {
			spans = append(spans, runSpan{node: a.GetNode(), start: a.GetStartedAt().AsTime(), end: a.GetCompletedAt().AsTime()})
		}
	}
	return spans
}

// maxOverlap is, per node, the most runs that overlapped in time.
func maxOverlap(spans []runSpan) map[string]int {
	type event struct {
		at    time.Time
		delta int
	}
	byNode := map[string][]event{}
	for _, s := range spans {
		byNode[s.node] = append(byNode[s.node], event{s.start, 1}, event{s.end, -1})
	}
	out := map[string]int{}
	for nodeID, evs := range byNode {
		// At the same instant an end comes before a start: a slot freed
		// and taken again is not two runs at once.
		slices.SortFunc(evs, func(a, b event) int {
			if c := a.at.Compare(b.at); c != 0 {
				return c
			}
			return a.delta - b.delta
		})
		cur := 0
		for _, e := range evs {
			cur += e.delta
			out[nodeID] = max(out[nodeID], cur)
		}
	}
	return out
}

// serveFails runs `spear serve` with args, which must refuse to start:
// it returns the exit status and output once it exited (bounded by
// readyTimeout, a hang guard).
func serveFails(t *testing.T, args ...string) (int, string) {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	args = append([]string{"serve", "--data-dir", filepath.Join(t.TempDir(), "data"), "--listen", freeAddr(t), "--docker", "off"}, args...)
	cmd := exec.CommandContext(c, spearBin(t), args...)
	cmd.Env = withoutSpearEnv(os.Environ())
	out, err := cmd.CombinedOutput()
	if c.Err() != nil {
		t.Fatalf("spear %s still ran after %v; output:\n%s", strings.Join(args, " "), readyTimeout, out)
	}
	if err == nil {
		t.Fatalf("spear %s exited 0; want a refusal; output:\n%s", strings.Join(args, " "), out)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// health is the node's GetHealth with details.
func (n *node) health(t *testing.T) *pb.GetHealthResponse {
	t.Helper()
	h, err := n.client.GetHealth(ctx(t, callTimeout), &pb.GetHealthRequest{IncludeDetails: true})
	if err != nil {
		t.Fatalf("GetHealth of %s: %v", n.addr, err)
	}
	return h
}

// waitRunsUnder waits until a process running script is a descendant of
// the node's process: the node runs one of its executions.
func waitRunsUnder(t *testing.T, n *node, script string) {
	t.Helper()
	deadline := time.Now().Add(finishBound)
	for time.Now().Before(deadline) {
		for _, pid := range processesRunning(script) {
			if descendantOf(pid, n.cmd.Process.Pid) {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("node %s ran nothing of %s within %v", n.addr, script, finishBound)
}

// descendantOf says whether process pid descends from ancestor.
func descendantOf(pid, ancestor int) bool {
	for pid > 1 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after
		// its closing parenthesis.
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(fields) < 2 {
			return false
		}
		if pid, err = strconv.Atoi(fields[1]); err != nil {
			return false
		}
		if pid == ancestor {
			return true
		}
	}
	return false
}

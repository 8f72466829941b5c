package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/testwait"
)

// Faults in a cluster (issue #12, "Done when" tests 2, 3, 6, 7 and 9):
// each test starts 3 clustered nats-server processes and 3 `spear serve`
// nodes on loopback, and checks what survives a lost node, a lost NATS
// server, concurrent idempotent calls and cancels through another node.
// Timings are measured and logged, never asserted beyond generous
// sanity bounds (the bench owns the targets).

// faultAckWait is the nodes' --ack-wait: a lost node's executions run
// again elsewhere after about this long.
const faultAckWait = 3 * time.Second

// startFaultCluster starts 3 nats-servers and 3 nodes (clusterNodeID 0..2)
// with workers slots each and a short ack wait, connected to all three
// servers.
func startFaultCluster(t *testing.T, workers int) (*natsCluster, []nodeOpts, []*node) {
	t.Helper()
	nats := startNATSCluster(t, 3)
	var opts []nodeOpts
	for i := range 3 {
		opts = append(opts, nodeOpts{workers: workers, noSamples: true, args: []string{"--node-id", clusterNodeID(i),
			"--shutdown-grace", "1s", "--nats-url", nats.url(), "--ack-wait", faultAckWait.String()}})
	}
	return nats, opts, startNodes(t, opts)
}

// nodeIndex is the index of the node whose id is id (clusterNodeID).
func nodeIndex(id string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(strings.Split(id, "-")[0], "n"))
	return n - 1
}

// runLine is one line a test function writes to its run log: which
// execution ran, the attempt it was told (SPEAR_ATTEMPT), and where.
type runLine struct {
	id      string
	attempt int
	node    string
}

// runLogBody is a script line that appends a runLine to log.
func runLogBody(log string) string {
	return fmt.Sprintf("echo \"$SPEAR_EXECUTION_ID $SPEAR_ATTEMPT $SPEAR_NODE_ID\" >> %s\n", log)
}

// readRunLog reads a run log, by execution id.
func readRunLog(t *testing.T, log string) map[string][]runLine {
	t.Helper()
	out := map[string][]runLine{}
	for _, l := range readLines(t, log) {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("run log %s: bad line %q", log, l)
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			t.Fatalf("run log %s: line %q: SPEAR_ATTEMPT is not a number", log, l)
		}
		out[f[0]] = append(out[f[0]], runLine{id: f[0], attempt: n, node: f[2]})
	}
	return out
}

// TestClusterNodeLoss (tests 2 and 9): 30 async 5 s executions on three
// nodes with 15 slots each (so the two survivors can run all 30 at once);
// 2 s after the submissions began (all running), the node running the
// most is SIGKILLed. All 30 complete; exactly those that were running on
// the dead node ran twice (attempt 2, which the function is told as
// SPEAR_ATTEMPT), restarted on a survivor about an ack wait after the
// kill (logged; asserted only within a generous bound); every record
// lists each attempt with its node (the lost one FAILED / ATTEMPT_LOST
// with its node and start), and the task's execution counter settles at
// the number of records.
func TestClusterNodeLoss(t *testing.T) {
	const total, workers = 30, 15
	_, _, nodes := startFaultCluster(t, workers)
	dir := t.TempDir()
	starts := filepath.Join(dir, "starts")
	path, _ := writeScript(t, dir, "five.sh", runLogBody(starts)+"echo \"attempt $SPEAR_ATTEMPT\"\nsleep 5\n")
	nodes[0].registerProcess(t, "five", path)
	waitTaskEverywhere(t, nodes, "five")

	submitted := time.Now()
	ids := submitAsync(t, nodes, "five", total, 0)
	testwait.Until(t, "the first execution to start", func() bool { return fileLines(starts) >= 1 })
	firstStart := time.Now()
	// The scenario: the kill comes 2 s into the runs, after the nodes
	// signalled progress on them (a kill before would be redelivered an
	// ack wait after delivery instead), and before any of them ends: 2 s
	// after the first one started, all 30 normally, fewer on a loaded
	// machine (the others start later, on the survivors).
	time.Sleep(time.Until(firstStart.Add(2 * time.Second)))
	running := map[string]int{}
	for _, runs := range readRunLog(t, starts) {
		running[runs[0].node]++
	}
	victim := clusterNodeID(0)
	for i := range nodes {
		if id := clusterNodeID(i); running[id] > running[victim] {
			victim = id
		}
	}
	nodes[nodeIndex(victim)].kill()
	killedAt := time.Now()
	t.Logf("%d of %d running %v after the first submission (by node: %v); SIGKILLed %s", fileLines(starts), total,
		killedAt.Sub(submitted).Round(time.Millisecond), running, victim)

	var survivors []*node
	for i, n := range nodes {
		if i != nodeIndex(victim) {
			survivors = append(survivors, n)
		}
	}
	results := waitAllFinal(t, survivors, ids, 3*finishBound)
	delays := checkNodeLoss(t, results, readRunLog(t, starts), victim, killedAt)
	if len(delays) != running[victim] {
		t.Errorf("%d executions ran again; %s was running %d", len(delays), victim, running[victim])
	}
	slices.Sort(delays)
	if len(delays) > 0 {
		t.Logf("restart delay after the kill (second attempt's start - kill; ack wait %v), %d executions: min %v, median %v, max %v",
			faultAckWait, len(delays), delays[0].Round(time.Millisecond), delays[len(delays)/2].Round(time.Millisecond),
			delays[len(delays)-1].Round(time.Millisecond))
	}
	if counted := checkCounters(t, survivors, "five", total); counted != total {
		t.Errorf("task five: execution_count %d; want %d", counted, total)
	}
}

// checkNodeLoss checks each execution of TestClusterNodeLoss against the
// runs its function logged, and returns the restart delays of those that
// ran again.
func checkNodeLoss(t *testing.T, results map[string]*pb.ExecutionResult, runs map[string][]runLine, victim string, killedAt time.Time) []time.Duration {
	t.Helper()
	var delays []time.Duration
	for id, r := range results {
		ran, h := runs[id], r.GetAttemptHistory()
		if r.GetStatus() != statusCompleted || len(ran) == 0 {
			t.Errorf("execution %s: %v %s %s; its runs: %v", id, r.GetStatus(), r.GetErrorCode(), r.GetErrorMessage(), ran)
			continue
		}
		want := 1
		if ran[0].node == victim {
			want = 2
		}
		checkHistory(t, id, r, ran, want)
		if got := output(t, r.GetResult()); got != fmt.Sprintf("attempt %d\n", want) {
			t.Errorf("execution %s: output %q; want the function told attempt %d", id, got, want)
		}
		if want == 1 || len(h) != 2 {
			continue
		}
		lost, rerun := h[0], h[1]
		if lost.GetStatus() != statusFailed || lost.GetErrorCode() != "ATTEMPT_LOST" || lost.GetNode() != victim ||
			lost.GetStartedAt() == nil || lost.GetStartedAt().AsTime().After(killedAt) {
			t.Errorf("execution %s: lost attempt %v; want FAILED ATTEMPT_LOST on %s, started before the kill", id, lost, victim)
		}
		delay := rerun.GetStartedAt().AsTime().Sub(killedAt)
		if delay <= 0 || delay > faultAckWait+10*time.Second {
			t.Errorf("execution %s: second attempt started %v after the kill (ack wait %v)", id, delay, faultAckWait)
		}
		delays = append(delays, delay)
	}
	return delays
}

// checkHistory checks that an execution ran want times, and that its
// record (attempts, attempt_history) tells the runs its function logged:
// each attempt by number and node, only the last COMPLETED.
func checkHistory(t *testing.T, id string, r *pb.ExecutionResult, ran []runLine, want int) {
	t.Helper()
	h := r.GetAttemptHistory()
	if int(r.GetAttempts()) != want || len(h) != want || len(ran) != want {
		t.Errorf("execution %s: attempts %d, history %s, runs %v; want %d of each", id, r.GetAttempts(), attemptNodes(r), ran, want)
		return
	}
	for i, a := range h {
		wantStatus := statusFailed
		if i == len(h)-1 {
			wantStatus = statusCompleted
		}
		if int(a.GetAttempt()) != i+1 || a.GetStatus() != wantStatus || a.GetNode() != ran[i].node || ran[i].attempt != i+1 ||
			a.GetStartedAt() == nil || a.GetCompletedAt() == nil {
			t.Errorf("execution %s: attempt %d is %v; the function logged %v", id, i+1, a, ran[i])
		}
	}
}

// counterSettle is how long the execution counters must stay unchanged,
// and agree at every node, to be taken as settled: the nodes add their
// shares to the store every second and read the others' every 5 s.
const counterSettle = 12 * time.Second

// checkCounters checks that the task has want records, all terminal, and
// waits until its execution counter, read at every node, equals their
// number, or settles at another value (see counterSettle); it returns the
// counter (at the first node). A counter above the records, or nodes that
// do not agree, fail the test; one below is the caller's to judge.
func checkCounters(t *testing.T, nodes []*node, taskID string, want int) int {
	t.Helper()
	recs := listRecords(t, nodes[0], taskID)
	byStatus := map[pb.ExecutionStatus]int{}
	for _, r := range recs {
		byStatus[r.GetStatus()]++
		if !r.GetStatus().Terminal() {
			t.Errorf("execution %s is left %v", r.GetExecutionId(), r.GetStatus())
		}
	}
	if len(recs) != want {
		t.Errorf("task %s has %d records (%v); want %d", taskID, len(recs), byStatus, want)
	}
	var counts, last []int32
	changed, deadline := time.Now(), time.Now().Add(finishBound)
	for {
		counts = taskCounts(t, nodes, taskID)
		if !slices.Equal(counts, last) {
			last, changed = counts, time.Now()
		}
		agree := slices.Min(counts) == slices.Max(counts)
		if agree && int(counts[0]) == len(recs) || agree && time.Since(changed) > counterSettle || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("task %s: %d records %v; execution_count %v at the nodes", taskID, len(recs), byStatus, counts)
	if slices.Max(counts) > int32(len(recs)) || slices.Min(counts) != slices.Max(counts) {
		t.Errorf("task %s: execution_count %v at the nodes; want %d, its records (%v)", taskID, counts, len(recs), byStatus)
	}
	return int(counts[0])
}

// checkListed fails the test for each of ids missing from its task's
// listing at n.
func checkListed(t *testing.T, n *node, taskID string, ids []string) {
	t.Helper()
	listed := map[string]bool{}
	for _, r := range listRecords(t, n, taskID) {
		listed[r.GetExecutionId()] = true
	}
	for _, id := range ids {
		if !listed[id] {
			t.Errorf("execution %s is missing from task %s's listing", id, taskID)
		}
	}
}

// taskCounts is the task's execution_count at each node.
func taskCounts(t *testing.T, nodes []*node, taskID string) []int32 {
	t.Helper()
	counts := make([]int32, len(nodes))
	for i, n := range nodes {
		resp, err := n.client.GetTask(ctx(t, callTimeout), &pb.GetTaskRequest{TaskId: taskID})
		if err != nil {
			t.Fatalf("GetTask(%s) at %s: %v", taskID, n.addr, err)
		}
		counts[i] = resp.GetTask().GetExecutionCount()
	}
	return counts
}

// listRecords lists every execution of taskID, page by page.
func listRecords(t *testing.T, n *node, taskID string) []*pb.ExecutionInfo {
	t.Helper()
	var out []*pb.ExecutionInfo
	after := ""
	for {
		resp, err := n.client.ListExecutions(ctx(t, callTimeout), &pb.ListExecutionsRequest{TaskId: taskID, Limit: 1000, StartAfter: after})
		if err != nil {
			t.Fatalf("ListExecutions(%s) at %s: %v", taskID, n.addr, err)
		}
		out = append(out, resp.GetExecutions()...)
		if !resp.GetHasMore() {
			return out
		}
		after = resp.GetNextStartAfter()
	}
}

// TestClusterIdempotency (test 6): 50 concurrent async calls with one
// idempotency key, released at once and spread over the three nodes, get
// one execution id, and the function runs once; the key keeps answering
// with that execution once it finished, at every node, running nothing.
func TestClusterIdempotency(t *testing.T) {
	const callers = 50
	_, _, nodes := startFaultCluster(t, 4)
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	path, _ := writeScript(t, dir, "once.sh", runLogBody(runs)+"sleep 1\necho once\n")
	nodes[0].registerProcess(t, "once", path)
	waitTaskEverywhere(t, nodes, "once")
	call := func(n *node) (string, error) {
		req := invocation(t, "once", modeAsync, nil)
		req.IdempotencyKey = "e2e-cluster-once"
		resp, err := n.client.InvokeFunction(ctx(t, callTimeout), req)
		return resp.GetExecutionId(), err
	}

	ids := make([]string, callers)
	errs := make([]error, callers)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-release
			ids[i], errs[i] = call(nodes[i%len(nodes)])
		})
	}
	close(release)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("InvokeFunction with the key: %v", err)
	}
	id := ids[0]
	for i, got := range ids {
		if got != id || got == "" {
			t.Fatalf("caller %d (at %s) got execution %q, caller 0 %q", i, nodes[i%len(nodes)].addr, got, id)
		}
	}
	res := nodes[1].waitFinal(t, id, finishBound).GetResult()
	if res.GetStatus() != statusCompleted || res.GetAttempts() != 1 || output(t, res.GetResult()) != "once\n" {
		t.Errorf("keyed execution: %v attempts %d output %q, want COMPLETED 1 \"once\\n\"", res.GetStatus(), res.GetAttempts(), output(t, res.GetResult()))
	}
	for _, n := range nodes {
		if got, err := call(n); err != nil || got != id {
			t.Errorf("the key at %s once it finished: execution %q, %v; want %q", n.addr, got, err, id)
		}
	}
	waitIdle(t, nodes)
	ran := readRunLog(t, runs)
	if len(ran) != 1 || len(ran[id]) != 1 || ran[id][0].attempt != 1 {
		t.Errorf("the function ran %v; want once, execution %s attempt 1", ran, id)
	}
	if counted := checkCounters(t, nodes, "once", 1); counted != 1 {
		t.Errorf("task once: execution_count %d; want 1", counted)
	}
}

// waitIdle waits until no node runs anything and the shared queue is
// empty (GetStats: running and pending 0 at every node).
func waitIdle(t *testing.T, nodes []*node) {
	t.Helper()
	testwait.Until(t, "the nodes to be idle and the queue empty", func() bool {
		for _, n := range nodes {
			resp, err := n.client.GetStats(ctx(t, callTimeout), &pb.GetStatsRequest{})
			if es := resp.GetExecutionStats(); err != nil || es.GetRunningExecutions() != 0 || es.GetPendingExecutions() != 0 {
				return false
			}
		}
		return true
	})
}

// cancelBody is a function that writes its pid to $DIR/<execution>.pid,
// and on SIGTERM waits $STOP_DELAY seconds, writes
// $DIR/<execution>.term and exits.
const cancelBody = `echo $$ > "$DIR/$SPEAR_EXECUTION_ID.pid"
trap 'sleep ${STOP_DELAY:-0}; echo term > "$DIR/$SPEAR_EXECUTION_ID.term"; exit 143' TERM
sleep 60 &
wait
`

// TestClusterCrossNodeCancel (test 7): an execution running on one node,
// cancelled through another, ends CANCELLED and its processes are gone:
// gracefully (the function gets SIGTERM and runs its handler, quick or
// taking a second) and by force (SIGKILL, no handler). A queued
// execution cancelled through another node never starts. The time from
// the cancel call to the process being gone is logged.
func TestClusterCrossNodeCancel(t *testing.T) {
	_, _, nodes := startFaultCluster(t, 1)
	dir := t.TempDir()
	path, _ := writeScript(t, dir, "sleeper.sh", cancelBody)
	nodes[0].registerProcess(t, "sleeper", path)
	waitTaskEverywhere(t, nodes, "sleeper")
	cases := []struct {
		name, stopDelay string
		force, wantTerm bool
	}{
		{"graceful", "0", false, true},
		{"graceful, a second to stop", "1", false, true},
		{"force", "0", true, false},
	}
	var latencies []string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := invocation(t, "sleeper", modeAsync, nil)
			req.Context.Environment = map[string]string{"DIR": dir, "STOP_DELAY": tc.stopDelay}
			id := nodes[0].invoke(t, req).GetExecutionId()
			pidFile := filepath.Join(dir, id+".pid")
			waitFile(t, pidFile, finishBound)
			on := runningOn(t, nodes[0], id)
			via := nodes[(nodeIndex(on)+1)%len(nodes)]
			pid := readPid(t, pidFile)

			start := time.Now()
			resp := via.ctlCancel(t, id, tc.force)
			answered := time.Since(start)
			gone := waitPidGone(t, pid, 10*time.Second).Sub(start)
			waitExecGone(t, id, finishBound)
			latencies = append(latencies, fmt.Sprintf("%s: answered %v, process gone %v", tc.name,
				answered.Round(time.Millisecond), gone.Round(time.Millisecond)))
			t.Logf("running on %s, cancelled through the node after it: the call answered in %v, the process was gone %v after the call",
				on, answered.Round(time.Millisecond), gone.Round(time.Millisecond))

			if !resp.GetSuccess() || resp.GetFinalStatus() != statusCancelled {
				t.Errorf("CancelExecution through another node: %v", resp)
			}
			res := via.waitFinal(t, id, finishBound).GetResult()
			if h := res.GetAttemptHistory(); res.GetStatus() != statusCancelled || res.GetErrorCode() != "CANCELLED" ||
				len(h) != 1 || h[0].GetNode() != on || h[0].GetStatus() != statusCancelled {
				t.Errorf("record after the cancel: %v %s %q, history %s", res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage(), attemptNodes(res))
			}
			if _, err := os.Stat(filepath.Join(dir, id+".term")); (err == nil) != tc.wantTerm {
				t.Errorf("the function's SIGTERM handler ran: %v; want %v (force %v)", err == nil, tc.wantTerm, tc.force)
			}
		})
	}
	t.Logf("cross-node cancel latency: %s", strings.Join(latencies, "; "))
	t.Run("queued", func(t *testing.T) { testCancelQueued(t, nodes) })
}

// runningOn waits until execution id runs and returns the node its
// record names (the running attempt's).
func runningOn(t *testing.T, n *node, id string) string {
	t.Helper()
	h := n.waitStatus(t, id, finishBound, func(s pb.ExecutionStatus) bool { return s == statusRunning }).GetResult().GetAttemptHistory()
	if len(h) == 0 || h[len(h)-1].GetStatus() != statusRunning || h[len(h)-1].GetNode() == "" {
		t.Fatalf("running execution %s: history %v; want the running attempt with its node", id, h)
	}
	return h[len(h)-1].GetNode()
}

// readPid reads the pid a function wrote to path.
func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %q is no pid", path, b)
	}
	return pid
}

// waitPidGone polls (every 2 ms, for a fine measurement) until process
// pid is gone or a zombie, and returns when it saw it gone; it fails the
// test after bound.
func waitPidGone(t *testing.T, pid int, bound time.Duration) time.Time {
	t.Helper()
	stat := fmt.Sprintf("/proc/%d/stat", pid)
	deadline := time.Now().Add(bound)
	for {
		b, err := os.ReadFile(stat)
		now := time.Now()
		if err != nil || strings.Contains(string(b), ") Z ") {
			return now
		}
		if now.After(deadline) {
			t.Fatalf("process %d still runs %v after the cancel", pid, bound)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// testCancelQueued: with every node's one slot taken by a function that
// waits for a gate, an execution queued through n1 and cancelled through
// another node ends CANCELLED and never starts, also once the slots are
// free again.
func testCancelQueued(t *testing.T, nodes []*node) {
	dir := t.TempDir()
	starts, gate := filepath.Join(dir, "starts"), filepath.Join(dir, "gate")
	path, _ := writeScript(t, dir, "gated.sh", runLogBody(starts)+"while [ ! -e "+gate+" ]; do sleep 0.05; done\n")
	nodes[0].registerProcess(t, "gated", path)
	waitTaskEverywhere(t, nodes, "gated")
	blockers := fillSlots(t, nodes, "gated", starts)

	target := nodes[0].invoke(t, invocation(t, "gated", modeAsync, nil)).GetExecutionId()
	h := nodes[0].status(t, target).GetResult().GetAttemptHistory()
	via := nodes[1]
	if len(h) > 0 && h[len(h)-1].GetNode() == clusterNodeID(1) { // claimed by nodes[1], waiting for its slot
		via = nodes[2]
	}
	start := time.Now()
	resp := via.ctlCancel(t, target, false)
	t.Logf("%d blockers hold the slots; the target, %s (history %v), cancelled through %s in %v", len(blockers),
		nodes[0].status(t, target).GetResult().GetStatus(), h, via.addr, time.Since(start).Round(time.Millisecond))
	if !resp.GetSuccess() || resp.GetFinalStatus() != statusCancelled {
		t.Errorf("CancelExecution of a queued execution through another node: %v", resp)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Once the blockers are done and as many executions queued after
	// the target have run, the target would have run, were it to.
	after := submitAsync(t, nodes, "gated", len(nodes), 0)
	for id, r := range waitAllFinal(t, nodes, slices.Concat(blockers, after), finishBound) {
		if r.GetStatus() != statusCompleted {
			t.Errorf("execution %s: %v %s", id, r.GetStatus(), r.GetErrorMessage())
		}
	}
	res := nodes[2].status(t, target).GetResult()
	if ran := readRunLog(t, starts)[target]; len(ran) > 0 || res.GetStatus() != statusCancelled || len(res.GetAttemptHistory()) != 0 {
		t.Errorf("cancelled queued execution: %v, attempts %d, history %s; its function ran %v; want CANCELLED, never started",
			res.GetStatus(), res.GetAttempts(), attemptNodes(res), ran)
	}
	if res.GetAttempts() != 0 {
		t.Errorf("cancelled queued execution: attempts %d; it never started", res.GetAttempts())
	}
}

// fillSlots submits executions of taskID (a function that logs its start
// to starts, then waits) until each node runs one (their one slot taken),
// and returns their ids. A node takes work ahead of its free slots, so an
// execution may wait on a busy node: another is submitted when no more
// started for a while.
func fillSlots(t *testing.T, nodes []*node, taskID, starts string) []string {
	t.Helper()
	var ids []string
	for len(ids) < 4*len(nodes) {
		ids = append(ids, submitAsync(t, nodes[:1], taskID, 1, 0)...)
		deadline := time.Now().Add(2 * time.Second)
		for fileLines(starts) < min(len(ids), len(nodes)) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if fileLines(starts) >= len(nodes) {
			return ids
		}
	}
	t.Fatalf("after %d executions, %d run (want one on each of the %d nodes): %v", len(ids), fileLines(starts), len(nodes), readRunLog(t, starts))
	return nil
}

// chaosCluster is the cluster of TestClusterChaos: its nodes are killed
// and restarted while it serves, so they are read under a lock.
type chaosCluster struct {
	t     *testing.T
	nats  *natsCluster
	opts  []nodeOpts
	mu    sync.Mutex
	nodes []*node
}

// node is node i as it runs now (dead while it restarts).
func (c *chaosCluster) node(i int) *node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i%len(c.nodes)]
}

// all is the nodes as they run now.
func (c *chaosCluster) all() []*node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// restart SIGKILLs node i and starts it again on its data dir, with its
// node id, and returns once it serves.
func (c *chaosCluster) restart(i int) error {
	old := c.node(i)
	old.kill()
	var err error
	for range 3 { // a fresh port may be taken meanwhile: see startNode
		var n *node
		if n, err = tryStartNode(c.t, old.dataDir, c.opts[i]); err == nil {
			c.mu.Lock()
			c.nodes[i] = n
			c.mu.Unlock()
			return nil
		}
	}
	return fmt.Errorf("restarting n%d: %w", i+1, err)
}

// chaos kills and restarts a random node every 5 s for d, and SIGKILLs
// one nats-server (for good) once, half-way; it returns what it did.
func (c *chaosCluster) chaos(d time.Duration) ([]string, error) {
	var done []string
	start := time.Now()
	natsKilled := false
	for k := 1; time.Since(start) < d; k++ {
		for time.Until(start.Add(time.Duration(k)*5*time.Second)) < 0 {
			k++ // a slow restart took a turn: the next kill keeps to the 5 s beat
		}
		time.Sleep(time.Until(start.Add(time.Duration(k) * 5 * time.Second)))
		if !natsKilled && time.Since(start) >= d/2 {
			c.nats.servers[1].kill()
			natsKilled = true
			done = append(done, fmt.Sprintf("%v: SIGKILL nats-server %s", time.Since(start).Round(100*time.Millisecond), c.nats.servers[1].name))
			time.Sleep(2500 * time.Millisecond) // the node kills go on in between
		}
		i := rand.IntN(len(c.opts))
		killed := time.Since(start)
		if err := c.restart(i); err != nil {
			return done, err
		}
		done = append(done, fmt.Sprintf("%v: SIGKILL n%d, serving again after %v", killed.Round(100*time.Millisecond), i+1,
			(time.Since(start)-killed).Round(100*time.Millisecond)))
	}
	return done, nil
}

// submitKeyed submits execution i of taskID with idempotency key
// "chaos-<i>", through the nodes in turn, trying again (another node,
// the same key) on any failure until bound: a call may fail, or time out
// after the node accepted it, while nodes and servers die; the key makes
// the retries one execution.
func (c *chaosCluster) submitKeyed(taskID string, i int, bound time.Duration) (string, error) {
	deadline := time.Now().Add(bound)
	for try := i; ; try++ {
		req := invocation(c.t, taskID, modeAsync, nil)
		req.IdempotencyKey = fmt.Sprintf("chaos-%d", i)
		cctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Second)
		resp, err := c.node(try).client.InvokeFunction(cctx, req)
		cancel()
		if err == nil {
			return resp.GetExecutionId(), nil
		}
		if time.Now().After(deadline) || c.t.Context().Err() != nil {
			return "", fmt.Errorf("submission %d: %w", i, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// submitPaced submits total executions evenly over d (see submitKeyed)
// and returns their ids.
func (c *chaosCluster) submitPaced(taskID string, total int, d time.Duration) ([]string, error) {
	ids := make([]string, total)
	errs := make([]error, total)
	sem := make(chan struct{}, 16)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range total {
		time.Sleep(time.Until(start.Add(time.Duration(i) * d / time.Duration(total))))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ids[i], errs[i] = c.submitKeyed(taskID, i, 2*finishBound)
		})
	}
	wg.Wait()
	return ids, errors.Join(errs...)
}

// recordWatch follows every write of the execution records in the store
// (the KV bucket's updates), to catch an execution written again once
// terminal: two terminal writes, or a terminal record overwritten.
type recordWatch struct {
	mu      sync.Mutex
	writes  int
	last    map[string]uint64 // per execution: last revision seen
	final   map[string]string // per execution: the terminal write seen
	doubled map[string]string // executions written again once terminal
}

// watchRecords starts a recordWatch on the cluster at url.
func watchRecords(t *testing.T, url string) *recordWatch {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connecting to NATS at %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx(t, callTimeout), store.BucketExecutions)
	if err != nil {
		t.Fatalf("the execution records' bucket: %v", err)
	}
	w, err := kv.WatchAll(t.Context(), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatalf("watching the execution records: %v", err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	rw := &recordWatch{last: map[string]uint64{}, final: map[string]string{}, doubled: map[string]string{}}
	go func() {
		for e := range w.Updates() {
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				rw.add(e.Key(), e.Revision(), e.Value())
			}
		}
	}()
	return rw
}

// add notes one write of execution id's record.
func (w *recordWatch) add(id string, rev uint64, value []byte) {
	var r execution.Record
	if json.Unmarshal(value, &r) != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if rev <= w.last[id] {
		return // seen (a watcher that resumed after a lost server)
	}
	w.last[id] = rev
	w.writes++
	what := fmt.Sprintf("rev %d: %v, attempt %d on %s", rev, r.Status, r.Attempts, r.Node)
	if first, ok := w.final[id]; ok {
		w.doubled[id] = first + "; then " + what
	}
	if r.Status.Terminal() {
		w.final[id] = what
	}
}

// TestClusterChaos (test 3): async executions of a short function (0.5 s)
// are submitted at a steady pace while a random node is SIGKILLed and
// restarted every 5 s and one of the 3 nats-servers is SIGKILLed once,
// half-way. In the end every execution has exactly one terminal record
// (none left PENDING or RUNNING, the queue empty), COMPLETED, with an
// attempt history that tells one completed attempt, the last, and lost
// ones before it; no record was written again once terminal (seen by
// watching the records' bucket); the task's counter equals the records.
//
// By default (and so in `make test` and .ci/run) it runs the short
// variant: 300 executions over 20 s. SPEAR_E2E_FULL=1 runs the full one
// of issue #12: 1000 executions over 60 s (about two minutes in all).
func TestClusterChaos(t *testing.T) {
	total, d := 300, 20*time.Second
	if os.Getenv("SPEAR_E2E_FULL") == "1" {
		total, d = 1000, 60*time.Second
	}
	servers, opts, nodes := startFaultCluster(t, 4)
	c := &chaosCluster{t: t, nats: servers, opts: opts, nodes: nodes}
	dir := t.TempDir()
	starts := filepath.Join(dir, "starts")
	// Half a second: at this pace some 7 run at any time, so a killed
	// node is mostly running some (lost attempts, run again).
	path, _ := writeScript(t, dir, "short.sh", runLogBody(starts)+"sleep 0.5\necho \"attempt $SPEAR_ATTEMPT\"\n")
	nodes[0].registerProcess(t, "short", path)
	waitTaskEverywhere(t, nodes, "short")
	// The watch follows the records through a server chaos never kills:
	// a watcher whose server died does not always resume (it missed half
	// the records once in a make test run), and it is the records it must
	// see, not the client's recovery.
	watch := watchRecords(t, "nats://"+servers.servers[0].addr)

	var ids []string
	var subErr error
	submitted := make(chan struct{})
	go func() {
		defer close(submitted)
		ids, subErr = c.submitPaced("short", total, d)
	}()
	events, err := c.chaos(d)
	t.Logf("chaos:\n%s", strings.Join(events, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	<-submitted
	if subErr != nil {
		t.Fatalf("submitting: %v", subErr)
	}
	live := c.all()
	results := waitAllFinal(t, live, ids, 3*finishBound)
	waitIdle(t, live)
	checkChaos(t, results, readRunLog(t, starts))
	watch.check(t, ids)
	// Counters are never above the records (checkCounters); a node killed
	// with -9 takes along what it counted in its last second and had not
	// added to the store yet (docs/CLUSTER.md), so they may be below.
	counted := checkCounters(t, live, "short", total)
	checkListed(t, live[0], "short", ids)
	t.Logf("task counter %d for %d executions (the killed nodes' last second of counts is lost)", counted, total)
}

// check fails the test for every execution the watch saw written again
// once terminal, and checks that it saw the terminal write of every one
// of ids (it missed none: it followed the whole test). Writes in quick
// succession may be missed (the bucket keeps one revision per record),
// so two terminal writes a moment apart can escape it; the attempt
// histories are checked besides.
func (w *recordWatch) check(t *testing.T, ids []string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Logf("the watch saw %d writes of %d records, %d terminal", w.writes, len(w.last), len(w.final))
	for id, what := range w.doubled {
		t.Errorf("execution %s written again once terminal: %s", id, what)
	}
	for _, id := range ids {
		if _, ok := w.final[id]; !ok {
			t.Errorf("the watch saw no terminal write of execution %s (last revision seen %d)", id, w.last[id])
		}
	}
}

// checkChaos checks the final records of TestClusterChaos against the
// runs their function logged.
func checkChaos(t *testing.T, results map[string]*pb.ExecutionResult, runs map[string][]runLine) {
	t.Helper()
	byAttempts := map[int32]int{}
	phantom := 0 // lost attempts whose function never started
	for id, r := range results {
		byAttempts[r.GetAttempts()]++
		h, n := r.GetAttemptHistory(), r.GetAttempts()
		if r.GetStatus() != statusCompleted || len(h) != int(n) || n == 0 {
			t.Errorf("execution %s: %v %s %q, attempts %d, history %s", id, r.GetStatus(), r.GetErrorCode(), r.GetErrorMessage(), n, attemptNodes(r))
			continue
		}
		if got := output(t, r.GetResult()); got != fmt.Sprintf("attempt %d\n", n) {
			t.Errorf("execution %s: output %q of attempt %d", id, got, n)
		}
		for i, a := range h {
			last := i == len(h)-1
			ok := int(a.GetAttempt()) == i+1 && (last && a.GetStatus() == statusCompleted ||
				!last && a.GetStatus() == statusFailed && a.GetErrorCode() == "ATTEMPT_LOST")
			if !ok {
				t.Errorf("execution %s: attempt %d of %d is %v %s; want the last COMPLETED, the others ATTEMPT_LOST", id, i+1, n, a.GetStatus(), a.GetErrorCode())
			}
			if !slices.Contains(runs[id], runLine{id: id, attempt: i + 1, node: a.GetNode()}) {
				if last {
					t.Errorf("execution %s: completed attempt %d on %s, which its function never started (runs %v)", id, i+1, a.GetNode(), runs[id])
				}
				phantom++
			}
		}
	}
	t.Logf("%d executions by attempts: %v; %d lost attempts whose function had not started (claimed ahead of a slot)",
		len(results), byAttempts, phantom)
}

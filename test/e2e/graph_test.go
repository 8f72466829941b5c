package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/testwait"
)

// Graph steps' scripts. Each appends "<step> start|end <unix ns>" to
// $LOG (when set) so that tests see when and how often a step ran.
const (
	// stepSleep reads its whole input, then marks $MARK (when set),
	// sleeps $SLEEP seconds (default 1) and echoes the input.
	stepSleepBody = `in=$(mktemp); cat > "$in"
[ -n "$LOG" ] && echo "$STEP start $(date +%s%N)" >> "$LOG"
[ -n "$MARK" ] && : > "$MARK"
sleep "${SLEEP:-1}"
cat "$in"; rm -f "$in"
[ -n "$LOG" ] && echo "$STEP end $(date +%s%N)" >> "$LOG"
exit 0
`
	// stepFailBody fails after $SLEEP seconds (default 0).
	stepFailBody = `[ -n "$LOG" ] && echo "$STEP start $(date +%s%N)" >> "$LOG"
sleep "${SLEEP:-0}"
echo "step $STEP gives up" >&2
exit 3
`
	// stepFlakyBody reads its input, then fails until it has run $FAILS
	// times (counted in $COUNT), then echoes the input.
	stepFlakyBody = `in=$(mktemp); cat > "$in"
n=$(cat "$COUNT" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$COUNT"
[ "$n" -le "${FAILS:-2}" ] && exit 1
cat "$in"
`
	// stepBigBody writes $BYTES bytes of "abc\n" lines.
	stepBigBody = `yes abc | head -c "$BYTES"
`
)

// graphNode is a node with the graph tests' tasks registered.
func graphNode(t *testing.T, dataDir string, workers int) (*node, string) {
	t.Helper()
	n := startNode(t, dataDir, nodeOpts{workers: workers})
	dir := t.TempDir()
	for name, body := range map[string]string{"g-sleep": stepSleepBody, "g-fail": stepFailBody, "g-flaky": stepFlakyBody, "g-big": stepBigBody} {
		path, _ := writeScript(t, dir, name+".sh", body)
		n.registerProcess(t, name, path)
	}
	path, _ := writeScript(t, dir, "g-sum.sh", "sha256sum | cut -d' ' -f1\n")
	n.registerProcess(t, "g-sum", path)
	return n, dir
}

func step(id, task string, deps ...string) *pb.GraphStep {
	return &pb.GraphStep{Id: id, TaskId: task, DependsOn: deps, Environment: map[string]string{"STEP": id}}
}

func (n *node) invokeGraph(t *testing.T, req *pb.InvokeGraphRequest) *pb.InvokeFunctionResponse {
	t.Helper()
	resp, err := n.client.InvokeGraph(ctx(t, finishBound), req)
	if err != nil {
		t.Fatalf("InvokeGraph: %v", err)
	}
	return resp
}

// stepsOf returns a graph's steps by id, as its status reports them.
func (n *node) stepsOf(t *testing.T, id string) map[string]*pb.StepInfo {
	t.Helper()
	out := map[string]*pb.StepInfo{}
	for _, s := range n.status(t, id).GetSteps() {
		out[s.GetStepId()] = s
	}
	return out
}

// stepLog reads a $LOG file: the times each step started and ended.
func stepLog(t *testing.T, path string) map[string][]time.Time {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string][]time.Time{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		var ns int64
		for _, c := range f[2] {
			ns = ns*10 + int64(c-'0')
		}
		out[f[0]+" "+f[1]] = append(out[f[0]+" "+f[1]], time.Unix(0, ns))
	}
	return out
}

// TestGraphPipe: `spear pipe upper rev wc --input abc` prints the count
// of "CBA", and the graph has three child executions.
func TestGraphPipe(t *testing.T) {
	n := startNode(t, "", nodeOpts{})
	got := strings.TrimSpace(string(runCLI(t, n, "pipe", "upper", "rev", "wc", "--input", "abc")))
	if got != "3" {
		t.Fatalf("spear pipe upper rev wc: %q, want 3", got)
	}
	id := strings.TrimSpace(string(runCLI(t, n, "pipe", "upper", "rev", "upper", "--input", "abc", "--mode", "async", "-q")))
	st := n.waitFinal(t, id, finishBound)
	if r := st.GetResult(); r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || output(t, r.GetResult()) != "CBA" {
		t.Fatalf("async pipe: %v %q %s", r.GetStatus(), output(t, r.GetResult()), r.GetErrorMessage())
	}
	list, err := n.client.ListExecutions(ctx(t, callTimeout), &pb.ListExecutionsRequest{ParentId: id})
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, e := range list.GetExecutions() {
		if e.GetParentId() != id || e.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
			t.Errorf("child %s: parent %q status %v", e.GetExecutionId(), e.GetParentId(), e.GetStatus())
		}
		steps = append(steps, e.GetStepId())
	}
	if strings.Join(steps, " ") != "upper rev upper-2" {
		t.Fatalf("children's steps %v, want upper rev upper-2", steps)
	}
	table := string(runCLI(t, n, "exec", "list", "--parent", id))
	if strings.Count(table, id+"_") != 3 {
		t.Fatalf("spear exec list --parent: want the 3 steps:\n%s", table)
	}
}

// TestGraphDiamond: A→(B,C)→D: D's input is {"B":...,"C":...}, and B and C
// run at the same time.
func TestGraphDiamond(t *testing.T) {
	n, dir := graphNode(t, "", 4)
	log := filepath.Join(dir, "diamond.log")
	b, c := step("B", "g-sleep", "A"), step("C", "g-sleep", "A")
	for _, s := range []*pb.GraphStep{b, c} {
		s.Environment["LOG"] = log
	}
	resp := n.invokeGraph(t, &pb.InvokeGraphRequest{
		ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
		Parameters:    []*pb.FunctionParameter{{Name: "input", Value: pb.BytesAny([]byte("abc"))}},
		Steps:         []*pb.GraphStep{step("A", "upper"), b, c, step("D", "echo", "B", "C")},
	})
	if !resp.GetSuccess() {
		t.Fatalf("diamond: %s", resp.GetMessage())
	}
	var in map[string]string
	if err := json.Unmarshal([]byte(output(t, resp.GetResult().GetResult())), &in); err != nil || in["B"] != "ABC" || in["C"] != "ABC" || len(in) != 2 {
		t.Fatalf("D's input %q (%v), want {\"B\":\"ABC\",\"C\":\"ABC\"}", output(t, resp.GetResult().GetResult()), err)
	}
	times := stepLog(t, log)
	bs, be, cs, ce := times["B start"], times["B end"], times["C start"], times["C end"]
	if len(bs) != 1 || len(be) != 1 || len(cs) != 1 || len(ce) != 1 || !bs[0].Before(ce[0]) || !cs[0].Before(be[0]) {
		t.Fatalf("B and C did not overlap: %v", times)
	}
}

// TestGraphFailure: C fails (max_retries 1) while B sleeps 10 s: the graph
// is FAILED naming C, D never starts and B's process is stopped.
func TestGraphFailure(t *testing.T) {
	n, dir := graphNode(t, "", 4)
	b, c := step("B", "g-sleep", "A"), step("C", "g-fail", "A")
	b.Environment["SLEEP"], b.Environment["MARK"] = "10", dir+"/b-started"
	c.MaxRetries = 1
	c.Environment["SLEEP"] = "0.3"
	start := time.Now()
	resp := n.invokeGraph(t, &pb.InvokeGraphRequest{
		ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
		Steps:         []*pb.GraphStep{step("A", "echo"), b, c, step("D", "echo", "B", "C")},
	})
	ended := time.Now()
	r := resp.GetResult()
	if r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_FAILED || r.GetErrorCode() != "STEP_FAILED" || !strings.Contains(r.GetErrorMessage(), `step "C"`) {
		t.Fatalf("graph: %v %s %q; want FAILED STEP_FAILED naming C", r.GetStatus(), r.GetErrorCode(), r.GetErrorMessage())
	}
	if ended.Sub(start) > 8*time.Second {
		t.Fatalf("the graph took %v: it waited for B instead of failing fast", ended.Sub(start))
	}
	steps := n.stepsOf(t, resp.GetExecutionId())
	if d := steps["D"]; d.GetExecutionId() != "" || d.GetErrorCode() != "UPSTREAM_FAILED" {
		t.Fatalf("D: %v; want never started, UPSTREAM_FAILED", d)
	}
	if a := steps["C"].GetAttempts(); a != 2 {
		t.Fatalf("C ran %d times, want 2 (max_retries 1)", a)
	}
	if logs := strings.Join(n.status(t, resp.GetExecutionId()).GetLogs(), "\n"); !strings.Contains(logs, "[C] step C gives up") {
		t.Fatalf("the graph's logs do not have C's standard error:\n%s", logs)
	}
	bst := n.waitFinal(t, steps["B"].GetExecutionId(), finishBound).GetResult()
	if bst.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
		t.Fatalf("B: %v, want CANCELLED", bst.GetStatus())
	}
	gone := time.Now()
	waitNoProcesses(t, "g-sleep.sh", 10*time.Second)
	t.Logf("graph failed %v after its start; B's process gone %v after the graph's answer", ended.Sub(start), time.Since(gone)+gone.Sub(ended))
}

// TestGraphRetries: a step failing twice then succeeding, max_retries 2:
// COMPLETED, that step ran 3 times and the others once.
func TestGraphRetries(t *testing.T) {
	n, dir := graphNode(t, "", 2)
	// The flaky step is the last: a step reading its output as it is
	// written would run again with it.
	f := step("F", "g-flaky", "B")
	f.MaxRetries = 2
	f.Environment["COUNT"] = filepath.Join(dir, "count")
	resp := n.invokeGraph(t, &pb.InvokeGraphRequest{
		ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
		Parameters:    []*pb.FunctionParameter{{Name: "input", Value: pb.BytesAny([]byte("x"))}},
		Steps:         []*pb.GraphStep{step("A", "echo"), step("B", "upper", "A"), f},
	})
	if !resp.GetSuccess() || output(t, resp.GetResult().GetResult()) != "X" {
		t.Fatalf("graph: %s %q", resp.GetMessage(), output(t, resp.GetResult().GetResult()))
	}
	for id, want := range map[string]int32{"A": 1, "B": 1, "F": 3} {
		if got := n.stepsOf(t, resp.GetExecutionId())[id].GetAttempts(); got != want {
			t.Errorf("step %s: %d attempts, want %d", id, got, want)
		}
	}
}

// TestGraphCancel: cancelling a graph mid-run stops every running step,
// and the steps not started never start.
func TestGraphCancel(t *testing.T) {
	n, dir := graphNode(t, "", 4)
	b, c := step("B", "g-sleep", "A"), step("C", "g-sleep", "A")
	b.Environment["SLEEP"], c.Environment["SLEEP"] = "30", "30"
	b.Environment["MARK"], c.Environment["MARK"] = dir+"/b", dir+"/c"
	resp := n.invokeGraph(t, &pb.InvokeGraphRequest{
		ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_ASYNC,
		Steps:         []*pb.GraphStep{step("A", "echo"), b, c, step("D", "echo", "B", "C")},
	})
	id := resp.GetExecutionId()
	waitFile(t, dir+"/b", finishBound)
	waitFile(t, dir+"/c", finishBound)
	cancelled := time.Now()
	out, err := n.client.CancelExecution(ctx(t, callTimeout), &pb.CancelExecutionRequest{ExecutionId: id})
	if err != nil || !out.GetSuccess() {
		t.Fatalf("cancel: %v %v", out, err)
	}
	waitNoProcesses(t, "g-sleep.sh", 10*time.Second)
	t.Logf("every step's process gone %v after the cancel", time.Since(cancelled))
	st := n.waitFinal(t, id, finishBound)
	if st.GetResult().GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
		t.Fatalf("graph: %v", st.GetResult().GetStatus())
	}
	steps := n.stepsOf(t, id)
	if steps["D"].GetExecutionId() != "" {
		t.Fatalf("D started after the cancel: %v", steps["D"])
	}
	for _, s := range []string{"B", "C"} {
		if r := n.waitFinal(t, steps[s].GetExecutionId(), finishBound).GetResult(); r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
			t.Errorf("step %s: %v, want CANCELLED", s, r.GetStatus())
		}
	}
}

// TestGraphTimeout: a graph of timeout_ms 1500 over three 1 s steps ends
// TIMEOUT at about 1.5 s.
func TestGraphTimeout(t *testing.T) {
	n, _ := graphNode(t, "", 2)
	resp := n.invokeGraph(t, &pb.InvokeGraphRequest{
		ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC, TimeoutMs: 1500,
		Steps: []*pb.GraphStep{step("a", "g-sleep"), step("b", "g-sleep", "a"), step("c", "g-sleep", "b")},
	})
	r := resp.GetResult()
	if r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_TIMEOUT {
		t.Fatalf("graph: %v %s %s; want TIMEOUT", r.GetStatus(), r.GetErrorCode(), r.GetErrorMessage())
	}
	took := r.GetCompletedAt().AsTime().Sub(r.GetStartedAt().AsTime())
	t.Logf("the graph timed out after %v (timeout 1.5 s)", took)
	if took < 1400*time.Millisecond || took > 5*time.Second {
		t.Fatalf("the graph ended after %v; want about 1.5 s", took)
	}
	// The graph ends as soon as it is past its deadline: b, running, ends
	// by itself at that deadline, and says so in the graph a moment later.
	var steps map[string]*pb.StepInfo
	testwait.Until(t, "step b to end", func() bool {
		steps = n.stepsOf(t, resp.GetExecutionId())
		return steps["b"].GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_RUNNING
	})
	if steps["a"].GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || steps["b"].GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_TIMEOUT {
		t.Fatalf("steps: a %v, b %v; want a COMPLETED, b TIMEOUT", steps["a"], steps["b"])
	}
}

// TestGraphKill: five 1 s steps async, the node killed -9 during step 3
// and restarted: the graph completes, steps 1 and 2 were not run again.
func TestGraphKill(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	n, dir := graphNode(t, data, 2)
	log := filepath.Join(dir, "kill.log")
	id := startChain(t, n, log)
	n.kill()
	n2 := startNode(t, data, nodeOpts{workers: 2})
	st := n2.waitFinal(t, id, 2*finishBound)
	if r := st.GetResult(); r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || output(t, r.GetResult()) != "through" {
		t.Fatalf("graph after the kill: %v %q %s", r.GetStatus(), output(t, r.GetResult()), r.GetErrorMessage())
	}
	got := n2.stepsOf(t, id)
	for _, s := range []string{"s1", "s2"} {
		if got[s].GetAttempts() != 1 || len(stepLog(t, log)[s+" start"]) != 1 {
			t.Errorf("step %s ran again: %d attempts", s, got[s].GetAttempts())
		}
	}
	if got["s3"].GetAttempts() != 2 {
		t.Errorf("step 3: %d attempts, want 2 (the one the kill cut, and its rerun)", got["s3"].GetAttempts())
	}
}

// TestGraphIdempotent: the same idempotency key twice is one graph whose
// steps each ran once.
func TestGraphIdempotent(t *testing.T) {
	n, dir := graphNode(t, "", 2)
	log := filepath.Join(dir, "idem.log")
	req := func() *pb.InvokeGraphRequest {
		a, b := step("a", "g-sleep"), step("b", "g-sleep", "a")
		a.Environment["LOG"], b.Environment["LOG"] = log, log
		a.Environment["SLEEP"], b.Environment["SLEEP"] = "0", "0"
		return &pb.InvokeGraphRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC, IdempotencyKey: "order-17", Steps: []*pb.GraphStep{a, b}}
	}
	first, second := n.invokeGraph(t, req()), n.invokeGraph(t, req())
	if first.GetExecutionId() != second.GetExecutionId() || !second.GetSuccess() {
		t.Fatalf("two graphs for one key: %s, %s (%s)", first.GetExecutionId(), second.GetExecutionId(), second.GetMessage())
	}
	for _, s := range []string{"a", "b"} {
		if runs := len(stepLog(t, log)[s+" start"]); runs != 1 {
			t.Errorf("step %s ran %d times", s, runs)
		}
	}
}

// TestGraphLargeEdge: a 20 MB output arrives whole at the next step.
func TestGraphLargeEdge(t *testing.T) {
	n, _ := graphNode(t, "", 2)
	const size = 20 << 20
	big := step("gen", "g-big")
	big.Environment["BYTES"] = "20971520"
	resp := n.invokeGraph(t, &pb.InvokeGraphRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
		Steps: []*pb.GraphStep{big, step("sum", "g-sum", "gen")}})
	want := sha256.Sum256([]byte(strings.Repeat("abc\n", size/4)))
	if got := strings.TrimSpace(output(t, resp.GetResult().GetResult())); got != hex.EncodeToString(want[:]) {
		t.Fatalf("sha256 of the 20 MB edge as the next step read it: %q, want %x (%s)", got, want, resp.GetMessage())
	}
}

// TestGraphBadInput: graphs refused before anything runs, each with a
// clear code.
func TestGraphBadInput(t *testing.T) {
	n := startNode(t, "", nodeOpts{})
	many := make([]*pb.GraphStep, 1001)
	for i := range many {
		many[i] = &pb.GraphStep{Id: "s" + strings.Repeat("x", i/26) + string(rune('a'+i%26)), TaskId: "echo"}
	}
	for _, tc := range []struct {
		name  string
		steps []*pb.GraphStep
		code  string
		says  string
	}{
		{"cycle", []*pb.GraphStep{step("a", "echo", "c"), step("b", "echo", "a"), step("c", "echo", "b")}, "GRAPH_CYCLE", "a -> c -> b -> a"},
		{"unknown task", []*pb.GraphStep{step("a", "echo"), step("b", "nope", "a")}, "TASK_NOT_FOUND", `step "b"`},
		{"missing dependency", []*pb.GraphStep{step("a", "echo", "x")}, "UNKNOWN_DEPENDENCY", `"x"`},
		{"duplicate ids", []*pb.GraphStep{step("a", "echo"), step("a", "upper")}, "DUPLICATE_STEP", `"a"`},
		{"empty", nil, "GRAPH_EMPTY", "no steps"},
		{"too many", many, "GRAPH_TOO_LARGE", "1001"},
		{"self", []*pb.GraphStep{step("a", "echo", "a")}, "SELF_DEPENDENCY", `"a"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := n.client.InvokeGraph(ctx(t, callTimeout), &pb.InvokeGraphRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC, Steps: tc.steps})
			e := asRPCError(t, err, nil)
			if e.reason != tc.code || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("%v (code %s); want %s saying %s", err, e.reason, tc.code, tc.says)
			}
		})
	}
}

// TestGraphStreamed: a step printing a line every 200 ms for 2 s piped
// into an echo step: the graph's output streams, its first chunk long
// before the first step ends.
func TestGraphStreamed(t *testing.T) {
	n := startNode(t, "", nodeOpts{})
	ticker := step("ticker", "ticker")
	ticker.Environment["TICKS"] = "10"
	start := time.Now()
	stream, err := n.client.StreamGraph(ctx(t, finishBound), &pb.InvokeGraphRequest{
		Steps: []*pb.GraphStep{ticker, step("echo", "echo", "ticker")}})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var first time.Duration
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("stream: %v (so far %q)", err, out.String())
		}
		if c := output(t, msg.GetChunkData()); c != "" {
			if out.Len() == 0 {
				first = time.Since(start)
			}
			out.WriteString(c)
		}
		if msg.GetIsFinal() {
			if msg.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
				t.Fatalf("final: %v %s %s", msg.GetStatus(), msg.GetErrorCode(), msg.GetErrorMessage())
			}
			break
		}
	}
	t.Logf("first chunk %v after the call; all %v", first, time.Since(start))
	if want := "tick 1\n"; !strings.HasPrefix(out.String(), want) || strings.Count(out.String(), "\n") != 10 {
		t.Fatalf("output %q: want tick 1 to tick 10", out.String())
	}
	if first > 1500*time.Millisecond {
		t.Fatalf("first chunk after %v: the echo step waited for the ticker to end instead of streaming", first)
	}
}

// TestGraphStreamedRetry: a streamed pair is retried as one unit: the
// parent writes, fails and runs again; its reader starts over with it, and
// the graph's output is the last attempt's, once.
func TestGraphStreamedRetry(t *testing.T) {
	n := startNode(t, "", nodeOpts{workers: 2})
	dir := t.TempDir()
	path, _ := writeScript(t, dir, "g-half.sh", `n=$(cat "$COUNT" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$COUNT"
echo "first half $n"
sleep 0.5
[ "$n" -le 1 ] && exit 1
echo "second half"
`)
	n.registerProcess(t, "g-half", path)
	p := step("p", "g-half")
	p.MaxRetries = 1
	p.Environment["COUNT"] = filepath.Join(dir, "count")
	resp := n.invokeGraph(t, &pb.InvokeGraphRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
		Steps: []*pb.GraphStep{p, step("c", "echo", "p")}})
	if got := output(t, resp.GetResult().GetResult()); !resp.GetSuccess() || got != "first half 2\nsecond half\n" {
		t.Fatalf("graph: %s; output %q, want the second attempt's only", resp.GetMessage(), got)
	}
	steps := n.stepsOf(t, resp.GetExecutionId())
	if steps["p"].GetAttempts() != 2 {
		t.Fatalf("p ran %d times, want 2", steps["p"].GetAttempts())
	}
	h := n.status(t, steps["c"].GetExecutionId()).GetResult().GetAttemptHistory()
	for _, a := range h[:len(h)-1] {
		if a.GetErrorCode() != "UPSTREAM_RESTARTED" {
			t.Errorf("c's attempt %d ended %s; want only restarts before its last", a.GetAttempt(), a.GetErrorCode())
		}
	}
	t.Logf("c ran %d times", len(h))
}

// TestClusterGraphNodeLoss: an async chain of five 1 s steps in a
// 3-node cluster; the node running step 3 is killed -9 (and stays down):
// the graph completes on the others, steps 1 and 2 not run again, step 3
// run again after its lost attempt.
func TestClusterGraphNodeLoss(t *testing.T) {
	_, _, nodes := startFaultCluster(t, 2)
	dir := t.TempDir()
	path, _ := writeScript(t, dir, "g-sleep.sh", stepSleepBody)
	nodes[0].registerProcess(t, "g-sleep", path)
	waitTaskEverywhere(t, nodes, "g-sleep")
	log := filepath.Join(dir, "steps.log")
	id := startChain(t, nodes[0], log)
	victim := nodeIndex(runningOn(t, nodes[0], execution.StepExecutionID(id, "s3")))
	nodes[victim].kill()
	alive := nodes[(victim+1)%3]
	st := alive.waitFinal(t, id, 2*finishBound)
	if r := st.GetResult(); r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || output(t, r.GetResult()) != "through" {
		t.Fatalf("graph after losing n%d: %v %q %s", victim+1, r.GetStatus(), output(t, r.GetResult()), r.GetErrorMessage())
	}
	got := alive.stepsOf(t, id)
	for _, s := range []string{"s1", "s2"} {
		if got[s].GetAttempts() != 1 || len(stepLog(t, log)[s+" start"]) != 1 {
			t.Errorf("step %s ran again: %d attempts", s, got[s].GetAttempts())
		}
	}
	h := alive.status(t, got["s3"].GetExecutionId()).GetResult().GetAttemptHistory()
	if len(h) < 2 || h[0].GetErrorCode() != "ATTEMPT_LOST" || h[len(h)-1].GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
		t.Errorf("step 3's history %v: want its lost attempt, then a completed one", h)
	}
}

// TestGraphRequeue: a graph that failed is requeued: its completed steps
// are not run again, the failed one runs again with its retries anew, and
// the one it skipped runs for the first time.
func TestGraphRequeue(t *testing.T) {
	n, dir := graphNode(t, "", 2)
	log := filepath.Join(dir, "requeue.log")
	a, f, z := step("A", "g-sleep"), step("F", "g-flaky", "A"), step("Z", "upper", "F")
	a.Environment["LOG"], a.Environment["SLEEP"] = log, "0"
	f.Environment["COUNT"], f.Environment["FAILS"] = filepath.Join(dir, "count"), "1"
	resp := n.invokeGraph(t, &pb.InvokeGraphRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
		Parameters: []*pb.FunctionParameter{{Name: "input", Value: pb.BytesAny([]byte("x"))}}, Steps: []*pb.GraphStep{a, f, z}})
	id := resp.GetExecutionId()
	if r := resp.GetResult(); r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_FAILED || !strings.Contains(r.GetErrorMessage(), `step "F"`) {
		t.Fatalf("first run: %v %s; want FAILED naming F", r.GetStatus(), r.GetErrorMessage())
	}
	// The graph answers FAILED as the steps it cancels stop: until they
	// did, a requeue is refused (GRAPH_STOPPING).
	deadline := time.Now().Add(finishBound)
	for {
		_, err := n.client.RequeueExecution(ctx(t, callTimeout), &pb.RequeueExecutionRequest{ExecutionId: id})
		if err == nil {
			break
		}
		if asRPCError(t, err, nil).reason != "GRAPH_STOPPING" || time.Now().After(deadline) {
			t.Fatalf("requeue: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := n.waitFinal(t, id, finishBound)
	if r := st.GetResult(); r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || output(t, r.GetResult()) != "X" {
		t.Fatalf("after the requeue: %v %q %s", r.GetStatus(), output(t, r.GetResult()), r.GetErrorMessage())
	}
	steps := n.stepsOf(t, id)
	if runs := len(stepLog(t, log)["A start"]); runs != 1 || steps["A"].GetAttempts() != 1 {
		t.Errorf("A ran %d times (%d attempts): want once", runs, steps["A"].GetAttempts())
	}
	if steps["F"].GetAttempts() != 2 {
		t.Errorf("F: %d attempts; want 2", steps["F"].GetAttempts())
	}
	if _, err := n.client.RequeueExecution(ctx(t, callTimeout), &pb.RequeueExecutionRequest{ExecutionId: id}); asRPCError(t, err, nil).reason != "NOT_DEAD_LETTERED" {
		t.Fatalf("requeue of a completed graph: %v; want NOT_DEAD_LETTERED", err)
	}
}

// TestGraphContinue: a step with on_failure CONTINUE that fails lets its
// dependents run, given null and its error in place of its output; with
// fail_fast off, a failing step's running sibling finishes.
func TestGraphContinue(t *testing.T) {
	n, _ := graphNode(t, "", 4)
	c := step("C", "g-fail", "A")
	c.OnFailure = pb.OnFailure_ON_FAILURE_CONTINUE
	resp := n.invokeGraph(t, &pb.InvokeGraphRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
		Parameters: []*pb.FunctionParameter{{Name: "input", Value: pb.BytesAny([]byte("abc"))}},
		Steps:      []*pb.GraphStep{step("A", "upper"), step("B", "rev", "A"), c, step("D", "echo", "B", "C")}})
	if !resp.GetSuccess() {
		t.Fatalf("graph: %s", resp.GetMessage())
	}
	var in struct {
		B      *string
		C      *string
		Errors map[string]struct{ Code, Message string } `json:"$errors"`
	}
	out := output(t, resp.GetResult().GetResult())
	if err := json.Unmarshal([]byte(out), &in); err != nil || in.B == nil || *in.B != "CBA" || in.C != nil ||
		in.Errors["C"].Code != "FUNCTION_FAILED" || !strings.Contains(in.Errors["C"].Message, "gives up") {
		t.Fatalf("D's input %s (%v): want B's output, C null and C's error", out, err)
	}

	noFailFast := false
	b, f := step("B", "g-sleep", "A"), step("F", "g-fail", "A")
	b.Environment["SLEEP"] = "1"
	resp = n.invokeGraph(t, &pb.InvokeGraphRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC, FailFast: &noFailFast,
		Steps: []*pb.GraphStep{step("A", "echo"), b, f, step("D", "echo", "B", "F")}})
	if r := resp.GetResult(); r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_FAILED || !strings.Contains(r.GetErrorMessage(), `step "F"`) {
		t.Fatalf("graph without fail_fast: %v %s", r.GetStatus(), r.GetErrorMessage())
	}
	steps := n.stepsOf(t, resp.GetExecutionId())
	if steps["B"].GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || steps["D"].GetExecutionId() != "" {
		t.Fatalf("without fail_fast: B %v (want it finished), D %v (want never started)", steps["B"], steps["D"])
	}
}

// startChain starts an async chain of five 1 s steps s1..s5 (logging to
// log) with input "through" at n, and returns once step 3 started.
func startChain(t *testing.T, n *node, log string) string {
	t.Helper()
	var steps []*pb.GraphStep
	prev := []string{}
	for _, id := range []string{"s1", "s2", "s3", "s4", "s5"} {
		s := step(id, "g-sleep", prev...)
		s.Environment["LOG"] = log
		steps, prev = append(steps, s), []string{id}
	}
	resp := n.invokeGraph(t, &pb.InvokeGraphRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_ASYNC,
		Parameters: []*pb.FunctionParameter{{Name: "input", Value: pb.BytesAny([]byte("through"))}}, Steps: steps})
	deadline := time.Now().Add(finishBound)
	for len(stepLog(t, log)["s3 start"]) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("step 3 never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return resp.GetExecutionId()
}

// TestGraphChainsNeverStall: sync chains of ten fast steps, one after
// another, all complete. A step can run and end before the advance that
// queued it has stored the graph's record; its report was once taken as
// done, and about one chain in a thousand waited for that step for good.
func TestGraphChainsNeverStall(t *testing.T) {
	n := startNode(t, "", nodeOpts{})
	steps := make([]*pb.GraphStep, 10)
	for i := range steps {
		steps[i] = &pb.GraphStep{Id: fmt.Sprintf("s%d", i), TaskId: "wasm-echo"}
		if i > 0 {
			steps[i].DependsOn = []string{steps[i-1].Id}
		}
	}
	for i := range 300 {
		resp, err := n.client.InvokeGraph(ctx(t, callTimeout), &pb.InvokeGraphRequest{
			ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC, Steps: steps,
			Parameters: []*pb.FunctionParameter{{Name: "input", Value: pb.BytesAny([]byte("x"))}},
		})
		if err != nil {
			t.Fatalf("chain %d: %v", i, err)
		}
		if !resp.GetSuccess() || output(t, resp.GetResult().GetResult()) != "x" {
			t.Fatalf("chain %d (%s): %s, output %q", i, resp.GetExecutionId(), resp.GetMessage(), output(t, resp.GetResult().GetResult()))
		}
	}
}

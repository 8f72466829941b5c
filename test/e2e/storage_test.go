package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "github.com/spear-go/spear/api/spearlet"
)

// The store is a resource (issue #20): a node whose store fills up refuses
// new work with STORAGE_FULL, finishes what it accepted (some of it FAILED
// with OUTPUT_NOT_STORED), reports itself degraded, and is healthy again
// once retention by size has freed space.

// storageOutput is what each execution of the storage tests prints: 3 MB,
// so that a few dozen of them overflow a 64 MiB store.
const storageOutput = 3_000_000

// storageBody prints $SIZE bytes and counts its runs in $RUNS (a file
// outside the store), then stays running for a moment: the output of
// running work is not retention's to drop, so concurrent executions fill
// the store whatever retention does.
const storageBody = `echo run >> "$RUNS"
yes "spear output line" | head -c "$SIZE"
sleep 1
`

// Bounds of the storage tests: hang guards, not timing assertions.
const (
	storageBurst     = 40              // async executions submitted at once
	storageMoreMax   = 200             // more, one at a time, until one is refused
	storageSettle    = 2 * time.Minute // for every accepted execution to end
	storageRecovered = 2 * time.Minute // for health to be healthy again
)

// TestStorageFullEmbedded: the node's data dir is a 64 MiB tmpfs mounted
// by the test (so the embedded JetStream's budget is 90% of it, and the
// disk really fills). A burst of async executions printing 3 MB each:
// every accepted one ends in exactly one terminal state readable by id,
// every refused one got STORAGE_FULL, at least one was refused; health
// went degraded during the burst and is healthy again afterwards; the log
// shows no endless retry loop; /metrics reports the usage and the budget.
//
// Mounting needs root: without it the test skips (fails on CI).
func TestStorageFullEmbedded(t *testing.T) {
	if os.Geteuid() != 0 {
		msg := "mounting a tmpfs for the data dir needs root"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	const fsSize = 64 << 20
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", dataDir).CombinedOutput(); err != nil {
		t.Fatalf("mount -t tmpfs -o size=64m tmpfs %s: %v: %s", dataDir, err, out)
	}
	// Registered before startNode, so it runs after the node is stopped.
	t.Cleanup(func() {
		if err := syscall.Unmount(dataDir, 0); err != nil {
			t.Errorf("unmounting the tmpfs %s: %v", dataDir, err)
		}
	})
	// No --max-store-bytes: the budget is derived from the tmpfs. The
	// default --retention (24h) stays: retention by size alone must bring
	// the node back to healthy.
	n := startNode(t, dataDir, nodeOpts{noSamples: true, workers: 16})
	t.Cleanup(func() {
		if t.Failed() { // what the filesystem holds, against what the node counts
			out, _ := exec.Command("sh", "-c", "df -B1 "+dataDir+"; du -ab "+dataDir+" | sort -n | tail -12").CombinedOutput()
			t.Logf("the tmpfs at the end:\n%s", out)
			h, err := n.client.GetHealth(context.Background(), &pb.GetHealthRequest{IncludeDetails: true})
			t.Logf("GetHealth: %v %v", h, err)
		}
	})
	budget, err := n.metric("spear_store_budget_bytes")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	// 90% of the free space of an empty 64 MiB tmpfs (plus what the store
	// already holds, a few KiB).
	if budget < 0.8*fsSize || budget > 0.9*fsSize {
		t.Fatalf("spear_store_budget_bytes %.0f: want 90%% of the 64 MiB tmpfs (%.0f), give or take its metadata", budget, 0.9*fsSize)
	}
	fillStore(t, n)
	checkStoreMetrics(t, n, func(b float64) bool { return b == budget }, fmt.Sprintf("unchanged at %.0f", budget))
}

// TestStorageFullExternal: the same against a stock nats-server whose
// JetStream may hold 64 MiB of files, and a node started without
// --max-store-bytes: the server has no account limit, so the node learns
// its budget from the first write the server refuses.
func TestStorageFullExternal(t *testing.T) {
	// The stock server, with a configuration file for the store's limit
	// (its command line has no flag for it).
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("jetstream {\n  max_file_store: %d\n}\n", 64<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	url := startNATS(t, "-c", conf)
	n := startNode(t, "", nodeOpts{noSamples: true, workers: 16, args: []string{"--nats-url", url}})
	if b, err := n.metric("spear_store_budget_bytes"); err != nil || b != 0 {
		t.Fatalf("spear_store_budget_bytes %.0f (%v) before any refused write; want 0, not known yet", b, err)
	}
	fillStore(t, n)
	// The learned budget is the most the streams held when the server
	// refused a write, measured at once: the server's limit, less what
	// was deleted in between (it came out 26 to 94 MB when it was the
	// usage measured up to a second before, with output in flight).
	checkStoreMetrics(t, n, func(b float64) bool { return b >= 0.8*(64<<20) && b <= 1.1*(64<<20) }, "learned, about the server's 64 MiB")
}

// storageFigures are what fillStore saw.
type storageFigures struct {
	accepted, refused int
	outcomes          map[string]int // terminal status (and error code) -> count
	health            []string       // health statuses in the order they changed
	runs              int
	retryLines        int
}

func (f storageFigures) String() string {
	return fmt.Sprintf("%d accepted, %d refused (STORAGE_FULL); outcomes %v; health %s; %d runs; %d retry log lines",
		f.accepted, f.refused, f.outcomes, strings.Join(f.health, " -> "), f.runs, f.retryLines)
}

// fillStore submits a burst of large-output async executions to n (then
// more, one at a time, until one is refused) and checks what the storage
// tests share; it logs what it saw.
func fillStore(t *testing.T, n *node) {
	t.Helper()
	dir := t.TempDir()
	path, _ := writeScript(t, dir, "fill.sh", storageBody)
	n.registerProcess(t, "fill", path)
	runs := filepath.Join(dir, "runs")
	if err := os.WriteFile(runs, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	hw := watchHealth(n)
	ew := watchExecutions(n)
	var fig storageFigures
	submit := func() {
		req := invocation(t, "fill", pb.ExecutionMode_EXECUTION_MODE_ASYNC, nil)
		req.Context.Environment = map[string]string{"SIZE": strconv.Itoa(storageOutput), "RUNS": runs}
		var trailer metadata.MD
		resp, err := n.client.InvokeFunction(ctx(t, callTimeout), req, grpc.Trailer(&trailer))
		if err == nil {
			if resp.GetExecutionId() == "" {
				t.Fatalf("async submit answered without an execution id: %v", resp)
			}
			fig.accepted++
			ew.add(resp.GetExecutionId())
			return
		}
		e := asRPCError(t, err, trailer)
		if e.code != codes.ResourceExhausted || e.reason != "STORAGE_FULL" || e.trailer != "STORAGE_FULL" {
			t.Fatalf("submit #%d refused with %v, reason %q, trailer %q (%s); want RESOURCE_EXHAUSTED STORAGE_FULL",
				fig.accepted+fig.refused+1, e.code, e.reason, e.trailer, e.msg)
		}
		if e.msg == "" {
			t.Fatal("STORAGE_FULL without a message")
		}
		fig.refused++
	}
	for range storageBurst {
		submit()
	}
	// The burst is accepted faster than its output is written: go on, one
	// at a time, until the full store refuses one.
	for i := 0; fig.refused == 0 && i < storageMoreMax; i++ {
		time.Sleep(100 * time.Millisecond)
		submit()
	}
	if fig.refused == 0 {
		t.Errorf("%d async executions of 3 MB each accepted into a 64 MiB store; none refused with STORAGE_FULL", fig.accepted)
	}

	// Every accepted execution ends, once, readable by id.
	outcomes, problems := ew.wait(storageSettle)
	fig.outcomes = outcomes
	for _, p := range problems {
		t.Error(p)
	}

	// Health went degraded, and comes back once retention freed space.
	deadline := time.Now().Add(storageRecovered)
	for {
		if st, _ := hw.last(); st == "healthy" && hw.seen("degraded") {
			break
		}
		if time.Now().After(deadline) {
			st, msg := hw.last()
			t.Errorf("health %q (%s) %v after every execution ended; want degraded during the burst, then healthy (seen: %s)",
				st, msg, storageRecovered, strings.Join(hw.transitions(), " -> "))
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	hw.stop()
	fig.health = hw.transitions()
	for _, m := range hw.degradedMessages() {
		if m == "" {
			t.Error("GetHealth degraded without a message saying why")
		}
	}

	// Nothing ran twice (some may not have run at all).
	fig.runs = countLines(t, runs)
	if fig.runs > fig.accepted {
		t.Errorf("the function ran %d times for %d accepted executions", fig.runs, fig.accepted)
	}
	// No endless retry loop: retries are bounded per execution.
	for _, line := range strings.Split(n.log.String(), "\n") {
		if strings.Contains(line, "retrying") || strings.Contains(line, "will be read again") {
			fig.retryLines++
		}
	}
	if total := fig.accepted + fig.refused; fig.retryLines > total {
		t.Errorf("the node logged %d retry lines for %d submissions: a retry loop?\n%s", fig.retryLines, total, retryExcerpt(n.log.String(), 20))
	}
	t.Logf("%s", fig)
	if !n.running() {
		t.Fatalf("the node exited: %v", n.waitErr)
	}
}

// checkStoreMetrics checks /metrics: the store holds something, and the
// budget is as the test expects.
func checkStoreMetrics(t *testing.T, n *node, budgetOK func(float64) bool, want string) {
	t.Helper()
	used, err := n.metric("spear_store_bytes")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	budget, err := n.metric("spear_store_budget_bytes")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	if used <= 0 {
		t.Errorf("spear_store_bytes %.0f after the burst; want > 0", used)
	}
	if !budgetOK(budget) {
		t.Errorf("spear_store_budget_bytes %.0f; want %s", budget, want)
	}
	t.Logf("/metrics: spear_store_bytes %.0f, spear_store_budget_bytes %.0f", used, budget)
}

func retryExcerpt(log string, max int) string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if (strings.Contains(line, "retrying") || strings.Contains(line, "will be read again")) && len(out) < max {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// healthWatch polls GetHealth until stopped and keeps its transitions.
type healthWatch struct {
	mu       sync.Mutex
	changes  []string // status changes, in order
	messages []string // messages of degraded answers (distinct)
	status   string
	message  string
	cancel   context.CancelFunc
	done     chan struct{}
}

func watchHealth(n *node) *healthWatch {
	c, cancel := context.WithCancel(n.t.Context())
	w := &healthWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for c.Err() == nil {
			rc, rcancel := context.WithTimeout(c, callTimeout)
			resp, err := n.client.GetHealth(rc, &pb.GetHealthRequest{})
			rcancel()
			if c.Err() != nil {
				return // stopped
			}
			st, msg := resp.GetStatus(), resp.GetMessage()
			if err != nil {
				st, msg = "error", err.Error()
			}
			w.mu.Lock()
			if st != w.status {
				w.changes = append(w.changes, st)
			}
			if st == "degraded" && (len(w.messages) == 0 || w.messages[len(w.messages)-1] != msg) && len(w.messages) < 20 {
				w.messages = append(w.messages, msg)
			}
			w.status, w.message = st, msg
			w.mu.Unlock()
			select {
			case <-c.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *healthWatch) stop() { w.cancel(); <-w.done }

func (w *healthWatch) last() (string, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status, w.message
}

func (w *healthWatch) seen(status string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.changes {
		if s == status {
			return true
		}
	}
	return false
}

func (w *healthWatch) transitions() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.changes...)
}

func (w *healthWatch) degradedMessages() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.messages...)
}

// execWatch polls the status of accepted executions so that each is seen
// in its terminal state before retention by size may drop it (retention
// drops the oldest terminal executions first, so one that has just ended
// is the last it would drop).
type execWatch struct {
	n        *node
	mu       sync.Mutex
	open     map[string]string // accepted, not yet seen terminal -> last status seen
	final    map[string]string // terminal outcome as first seen
	problems []string
}

func watchExecutions(n *node) *execWatch {
	return &execWatch{n: n, open: map[string]string{}, final: map[string]string{}}
}

func (w *execWatch) add(id string) {
	w.mu.Lock()
	w.open[id] = "accepted"
	w.mu.Unlock()
	// Started per execution: the first look comes right after acceptance.
	go w.follow(id)
}

func (w *execWatch) problem(format string, args ...any) {
	w.mu.Lock()
	w.problems = append(w.problems, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

// follow polls id until it is seen terminal (or the test ends), then looks
// once more to check the outcome is final.
func (w *execWatch) follow(id string) {
	c := w.n.t.Context()
	var outcome string
	for c.Err() == nil {
		st, err := w.look(c, id, false)
		switch {
		case err != nil:
			if c.Err() == nil {
				w.problem("GetExecutionStatus(%s): %v", id, err)
			}
			return
		case !st.GetFound():
			w.problem("execution %s: not found (%q) before it was seen ending; its id was returned by an accepted submit", id, st.GetMessage())
			w.close(id, "NOT FOUND")
			return
		}
		w.mu.Lock()
		w.open[id] = fmt.Sprintf("%v %q", st.GetResult().GetStatus(), st.GetMessage())
		w.mu.Unlock()
		if st.GetResult().GetStatus().Terminal() {
			// Once more with the result, for the output's size and sha256.
			if full, err := w.look(c, id, true); err == nil && full.GetFound() {
				st = full
			}
			o, bad := outcomeOf(id, st.GetResult())
			if bad != "" {
				w.problem("%s", bad)
			}
			outcome = o
			break
		}
		select {
		case <-c.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	if outcome == "" {
		return
	}
	w.close(id, outcome)
	// Exactly one terminal state: a second look finds the same, or nothing
	// (retention by size dropped it).
	time.Sleep(time.Second)
	if st, err := w.look(c, id, false); err == nil && st.GetFound() {
		if o := outcomeName(st.GetResult()); o != outcome {
			w.problem("execution %s: ended %s, then read as %s %s", id, outcome, st.GetResult().GetStatus(), st.GetResult().GetErrorCode())
		}
	}
}

func (w *execWatch) close(id, outcome string) {
	w.mu.Lock()
	delete(w.open, id)
	w.final[id] = outcome
	w.mu.Unlock()
}

func (w *execWatch) look(c context.Context, id string, result bool) (*pb.GetExecutionStatusResponse, error) {
	rc, cancel := context.WithTimeout(c, callTimeout)
	defer cancel()
	return w.n.client.GetExecutionStatus(rc, &pb.GetExecutionStatusRequest{ExecutionId: id, IncludeResult: result})
}

// outcomeOf names a terminal result ("" while it is not) and describes
// what is wrong with it: the storage tests' executions complete with the
// whole output, or fail with OUTPUT_NOT_STORED; either record keeps the
// output's size and sha256.
func outcomeOf(id string, r *pb.ExecutionResult) (outcome, bad string) {
	if !r.GetStatus().Terminal() {
		return "", ""
	}
	outcome = outcomeName(r)
	wantSum := sha256Hex(bigOutput(storageOutput))
	switch {
	case outcome != "COMPLETED" && outcome != "FAILED/OUTPUT_NOT_STORED":
		bad = fmt.Sprintf("execution %s ended %s (%s); want COMPLETED or FAILED OUTPUT_NOT_STORED", id, outcome, r.GetErrorMessage())
	case r.GetOutputSize() != storageOutput || r.GetOutputSha256() != wantSum:
		bad = fmt.Sprintf("execution %s ended %s with output size %d sha256 %q; want the size and sha256 of the whole %d-byte output",
			id, outcome, r.GetOutputSize(), r.GetOutputSha256(), storageOutput)
	}
	return outcome, bad
}

// outcomeName is a result's status and error code, e.g.
// "FAILED/OUTPUT_NOT_STORED".
func outcomeName(r *pb.ExecutionResult) string {
	o := strings.TrimPrefix(r.GetStatus().String(), "EXECUTION_STATUS_")
	if r.GetErrorCode() != "" {
		o += "/" + r.GetErrorCode()
	}
	return o
}

// wait waits until every accepted execution was seen terminal (and looked
// at once more), and returns the count of each outcome and the problems.
func (w *execWatch) wait(bound time.Duration) (map[string]int, []string) {
	deadline := time.Now().Add(bound)
	for {
		w.mu.Lock()
		open := len(w.open)
		var ids []string
		for id, last := range w.open {
			if len(ids) < 10 {
				ids = append(ids, id+" ("+last+")")
			}
		}
		w.mu.Unlock()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			w.problem("%d accepted executions still not ended after %v (stuck PENDING/RUNNING?), e.g. %v", open, bound, ids)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // the second looks
	w.mu.Lock()
	defer w.mu.Unlock()
	counts := map[string]int{}
	for _, o := range w.final {
		counts[o]++
	}
	return counts, append([]string(nil), w.problems...)
}

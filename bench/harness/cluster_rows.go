package harness

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

// scaleRow compares the throughput of slot-bound work (async
// executions of a function that sleeps 200 ms) on the cluster's three
// nodes with that on its first node alone (the other two stopped), in
// interleaved rounds: per round, 3 nodes x 4 slots x 10 waves executions
// submitted through the nodes in turn, timed from the first submission to
// the last completion.
func (c *cluster) scaleRow(ctx context.Context) Row {
	row := Row{ID: "cluster-scale", BaselineName: "1 node (" + c.ids[0] + ", the others stopped)"}
	const waves = 10
	n := len(c.nodes) * clusterWorkers * waves
	cpu0 := readCPU()
	time.Sleep(time.Second)
	idle := readCPU().busySince(cpu0)
	// Warm-up: the first runs of the script, and of a restarted node.
	if _, err := c.scaleRound(ctx, len(c.nodes)*clusterWorkers); err != nil {
		return errorRow(row, err)
	}
	var rates [2][]float64
	var last [2]batch
	for range c.e.p.rounds {
		bs, err := c.scaleRound(ctx, n)
		if err != nil {
			return errorRow(row, err)
		}
		for i, b := range bs {
			rates[i], last[i] = append(rates[i], b.rate), b
		}
	}
	row.Spear = &Stat{PerSec: medianF(rates[0]), Samples: n * len(rates[0])}
	row.Baseline = &Stat{PerSec: medianF(rates[1]), Samples: n * len(rates[1])}
	row.ratios()
	target{minThr: 2.5}.judge(&row)
	rs := fetchResults(ctx, c.nodes[0], last[0].ids)
	row.Note = fmt.Sprintf("%d async executions of `sleep 0.2` (process) a round, %d slots a node, submitted at concurrency 16 through the nodes in turn; "+
		"executions/s from first submission to last completion, median of %d interleaved rounds; one 3-server JetStream cluster (R3) for both sides; "+
		"last rounds (3 nodes, 1 node): submitting took %s and %s, CPU of the nodes (with their functions) and NATS servers %.1f and %.1f ms per execution, machine CPU busy %.0f%% and %.0f%% (%.0f%% before the rounds, the 3 nodes idle: the machine is shared), runs (started to completed) p50 %.0f ms and %.0f ms; the 3 nodes ran %s",
		n, clusterWorkers, len(rates[0]), last[0].submit.Round(time.Millisecond), last[1].submit.Round(time.Millisecond), ms(last[0].own), ms(last[1].own), 100*last[0].cpu, 100*last[1].cpu, 100*idle,
		ms(runTime(rs)), ms(runTime(fetchResults(ctx, c.nodes[0], last[1].ids))), fmtCounts(ranOn(rs)))
	return row
}

// scaleRound runs size executions on all the cluster's nodes, then on the
// first alone (the others stopped, then started again).
func (c *cluster) scaleRound(ctx context.Context, size int) ([2]batch, error) {
	var out [2]batch
	var err error
	if out[0], err = c.slotBound(ctx, c.nodes, size); err != nil {
		return out, err
	}
	others := make([]int, 0, len(c.nodes)-1)
	for i := 1; i < len(c.nodes); i++ {
		c.e.stopNode(c.nodes[i])
		others = append(others, i)
	}
	if err = waitListed(ctx, c.nodes[:1], c.ids[:1]); err == nil {
		out[1], err = c.slotBound(ctx, c.nodes[:1], size)
	}
	return out, errors.Join(err, c.startAgain(ctx, others...))
}

func errorRow(r Row, err error) Row {
	r.Status, r.Note = StatusError, err.Error()
	return r
}

// batch is what slotBound measured.
type batch struct {
	rate   float64       // executions/s, first submission to last completion
	submit time.Duration // first submission to last acceptance
	cpu    float64       // the machine's CPU busy share meanwhile
	own    time.Duration // CPU time of the nodes (with their functions) and NATS servers per execution
	ids    []string
}

// slotBound submits n async executions of the 200 ms sleeper through
// nodes (of the cluster) in turn and waits until all completed.
func (c *cluster) slotBound(ctx context.Context, nodes []*node, n int) (batch, error) {
	var (
		mu sync.Mutex
		b  batch
		k  atomic.Int64
	)
	pids := make([]int, 0, len(nodes)+len(c.nats.procs))
	for _, n := range nodes {
		pids = append(pids, n.c.pid())
	}
	for _, p := range c.nats.procs {
		pids = append(pids, p.pid())
	}
	t0, cpu0, own0 := time.Now(), readCPU(), cpuOf(pids)
	r := drive(ctx, 16, 0, n, func(ctx context.Context, _ int) error {
		id, err := nodes[int(k.Add(1))%len(nodes)].submit(ctx, taskSleep200, nil)
		if err == nil {
			mu.Lock()
			b.ids = append(b.ids, id)
			mu.Unlock()
		}
		return err
	})
	b.submit = time.Since(t0)
	if r.errs > 0 {
		return b, fmt.Errorf("%s: %d submissions failed: %w", c.name, r.errs, r.firstErr)
	}
	done, last, err := waitInOrder(ctx, nodes[0], b.ids, 2*time.Minute)
	if err != nil {
		return b, fmt.Errorf("%s: %w", c.name, err)
	}
	b.rate, b.cpu = float64(done)/last.Sub(t0).Seconds(), readCPU().busySince(cpu0)
	b.own = (cpuOf(pids) - own0) / time.Duration(max(done, 1))
	return b, nil
}

// cpuOf is the CPU time processes pids and their reaped children used.
func cpuOf(pids []int) time.Duration {
	var ticks uint64
	for _, pid := range pids {
		f := statFields(pid) // utime, stime, cutime, cstime are fields 14-17
		if len(f) < 15 {
			continue
		}
		for _, v := range f[11:15] {
			t, _ := strconv.ParseUint(v, 10, 64)
			ticks += t
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// cpuTimes are the machine's CPU time counters (/proc/stat, all CPUs).
type cpuTimes struct{ busy, total uint64 }

func readCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var t cpuTimes
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		t.total += v
		if i != 3 && i != 4 { // idle, iowait
			t.busy += v
		}
	}
	return t
}

// busySince is the share of CPU time busy between then and t.
func (t cpuTimes) busySince(then cpuTimes) float64 {
	if t.total <= then.total {
		return 0
	}
	return float64(t.busy-then.busy) / float64(t.total-then.total)
}

// waitInOrder waits until every execution completed, reading them in
// submission order and stopping at the first one still going (they finish
// about in that order), so that waiting costs the machine next to nothing
// (waitAll reads every pending one at each pass); it returns how many
// completed and the latest completion time.
func waitInOrder(ctx context.Context, n *node, ids []string, timeout time.Duration) (int, time.Time, error) {
	deadline := time.Now().Add(timeout)
	var last time.Time
	for i := 0; i < len(ids); {
		r, err := n.status(ctx, ids[i])
		if err == nil && r.Status.Terminal() {
			if r.Status != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
				return i, last, fmt.Errorf("execution %s: %s %s: %w", ids[i], r.Status, r.ErrorMessage, errdefs.ErrInternal)
			}
			last = later(last, r.CompletedAt.AsTime())
			i++
			continue
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return i, last, fmt.Errorf("%d executions not finished after %s: %w", len(ids)-i, timeout, errdefs.ErrUnavailable)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return len(ids), last, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// fetchResults reads the executions' records (nil for one it cannot).
func fetchResults(ctx context.Context, n *node, ids []string) []*pb.ExecutionResult {
	out := make([]*pb.ExecutionResult, len(ids))
	for i, id := range ids {
		out[i], _ = n.status(ctx, id)
	}
	return out
}

// ranOn counts the executions by the node of their last attempt.
func ranOn(rs []*pb.ExecutionResult) map[string]int {
	out := map[string]int{}
	for _, r := range rs {
		if r == nil {
			out["?"]++
			continue
		}
		out[lastNode(r)]++
	}
	return out
}

// runTime is the median time from started_at to completed_at.
func runTime(rs []*pb.ExecutionResult) time.Duration {
	var ds []time.Duration
	for _, r := range rs {
		if r != nil && r.StartedAt != nil && r.CompletedAt != nil {
			ds = append(ds, r.CompletedAt.AsTime().Sub(r.StartedAt.AsTime()))
		}
	}
	return quantile(ds, 0.5)
}

func fmtCounts(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d on %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

// lastNode is the node of an execution's last attempt.
func lastNode(r *pb.ExecutionResult) string {
	h := r.GetAttemptHistory()
	if len(h) == 0 {
		return ""
	}
	return h[len(h)-1].GetNode()
}

// forwardRow compares, at concurrency 1, a sync call of the
// process echo made at a node whose slots are all taken (so it is handed
// on to a node with a free one and relayed back) with
// the same call made at, and run on, a node with free slots.
func (c *cluster) forwardRow(ctx context.Context) Row {
	row := Row{ID: "cluster-forward"}
	a, b := c.nodes[0], c.nodes[1]
	var held []*pinned
	defer func() { c.release(ctx, a, held...) }()
	for range clusterWorkers {
		p, err := pin(ctx, a, c.ids[0])
		if p != nil {
			held = append(held, p)
		}
		if err != nil {
			return errorRow(row, fmt.Errorf("filling %s's slots: %w", c.ids[0], err))
		}
	}
	var fwd, local timedCalls
	in := c.e.p.payload
	row = c.e.compare(ctx, row.ID, 1, fwd.call(a, taskEcho, in), "the same call at "+c.ids[1]+", run there",
		local.call(b, taskEcho, in), target{})
	if row.Spear == nil || row.Baseline == nil {
		return row
	}
	over := row.Spear.P50ms - row.Baseline.P50ms
	row.Spear.Value, row.Spear.Unit = over, "ms over local"
	row.Target, row.Status = "p50 +≤2 ms", StatusPass
	if over > 2 {
		row.Status = StatusMiss
	}
	pub, perr := r3Publish(ctx, c.nats.urls)
	fids, lids := fwd.ids(50), local.ids(50)
	fr, lr := fetchResults(ctx, a, fids), fetchResults(ctx, a, lids)
	fwdRan, localRan := ranOn(fr), ranOn(lr)
	if fwdRan[c.ids[0]] > 0 || localRan[c.ids[1]] != len(lr) {
		row.Status = StatusError
		row.Note = "a forwarded call ran where it was made, or a local one elsewhere: "
	}
	row.Note = joinNote(row.Note, fmt.Sprintf("process echo, sync, concurrency 1; %s's %d slots held by sleepers, so its calls are handed on to a peer; "+
		"forwarded p50 %.2f ms - local p50 %.2f ms = %+.2f ms; the last forwarded calls ran %s, the last local ones %s; "+
		"p50 call to started_at / run / completed_at to answer: forwarded %s, local %s; one R3 JetStream publish on this cluster (nats.go, alone) p50 %.2f ms",
		c.ids[0], clusterWorkers, row.Spear.P50ms, row.Baseline.P50ms, over, fmtCounts(fwdRan), fmtCounts(localRan),
		fwd.phases(fids, fr), local.phases(lids, lr), ms(pub)))
	if perr != nil {
		row.Note += fmt.Sprintf(" (%v)", perr)
	}
	return row
}

// timedCalls records sync calls: their ids and when each was made and
// answered.
type timedCalls struct {
	mu    sync.Mutex
	calls []timedCall
}

type timedCall struct {
	id     string
	t0, t1 time.Time
}

// call is a load generator call of task at n that records itself.
func (tc *timedCalls) call(n *node, task string, in []byte) call {
	return func(ctx context.Context, _ int) error {
		t0 := time.Now()
		id, err := n.invokeSyncID(ctx, task, in)
		if err == nil {
			tc.mu.Lock()
			tc.calls = append(tc.calls, timedCall{id, t0, time.Now()})
			tc.mu.Unlock()
		}
		return err
	}
}

// ids are the last k calls' execution ids.
func (tc *timedCalls) ids(k int) []string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	var out []string
	for _, c := range tc.calls[len(tc.calls)-min(k, len(tc.calls)):] {
		out = append(out, c.id)
	}
	return out
}

// phases says where the time of the calls ids, whose records are rs,
// went: the medians of call to started_at, the run, and completed_at to
// answer.
func (tc *timedCalls) phases(ids []string, rs []*pb.ExecutionResult) string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	at := map[string]timedCall{}
	for _, c := range tc.calls {
		at[c.id] = c
	}
	var toStart, run, back []time.Duration
	for i, r := range rs {
		c, ok := at[ids[i]]
		if !ok || r.StartedAt == nil || r.CompletedAt == nil {
			continue
		}
		s, d := r.StartedAt.AsTime(), r.CompletedAt.AsTime()
		toStart, run, back = append(toStart, s.Sub(c.t0)), append(run, d.Sub(s)), append(back, c.t1.Sub(d))
	}
	return fmt.Sprintf("%.2f / %.2f / %.2f ms", ms(quantile(toStart, 0.5)), ms(quantile(run, 0.5)), ms(quantile(back, 0.5)))
}

// pinned is a sync call of the sleeper running on the node it was made at.
type pinned struct {
	id   string
	done chan error // the call's outcome
}

// pin makes a sync call of the sleeper at n (node id nodeID) under an id
// of its own, in the background, and waits until it runs there (a node
// with a free slot runs its own sync calls). On error the call, when it
// was made, is returned too, for release.
func pin(ctx context.Context, n *node, nodeID string) (*pinned, error) {
	p := &pinned{id: fmt.Sprintf("bench-pin-%s-%d", nodeID, time.Now().UnixNano()), done: make(chan error, 1)}
	go func() {
		_, err := n.api.InvokeFunction(ctx, &pb.InvokeFunctionRequest{
			InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
			TaskId:         taskSleeper, ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
			Context: &pb.ExecutionContext{ExecutionId: p.id},
		})
		p.done <- err
	}()
	r, err := n.waitStatus(ctx, p.id, 2*time.Millisecond, 30*time.Second, func(s pb.ExecutionStatus) bool {
		return s == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING || s.Terminal()
	})
	if err != nil {
		return p, err
	}
	if r.Status != pb.ExecutionStatus_EXECUTION_STATUS_RUNNING || lastNode(r) != nodeID {
		return p, fmt.Errorf("sleeper %s: %s on %q, want RUNNING on %s: %w", p.id, r.Status, lastNode(r), nodeID, errdefs.ErrInternal)
	}
	return p, nil
}

// release cancels pinned calls through via and waits for their answers.
func (c *cluster) release(ctx context.Context, via *node, ps ...*pinned) {
	for _, p := range ps {
		// It may have ended already: a refused cancel is no matter.
		_, _ = via.api.CancelExecution(ctx, &pb.CancelExecutionRequest{ExecutionId: p.id, Reason: "bench", Force: true})
	}
	for _, p := range ps {
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			c.e.logf("  sleeper %s: no answer 30s after its cancel", p.id)
		}
	}
}

// r3Publish is the p50 of a durable publish (acknowledged once stored on
// a quorum) to a stream of 3 replicas on the NATS servers urls, one at a
// time: the unit the forwarding path is made of.
func r3Publish(ctx context.Context, urls []string) (time.Duration, error) {
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	const name = "bench-probe"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"bench.probe"}, Replicas: 3}); err != nil {
		return 0, err
	}
	defer func() { _ = js.DeleteStream(context.WithoutCancel(ctx), name) }()
	var lat []time.Duration
	for range 300 {
		t0 := time.Now()
		if _, err := js.Publish(ctx, "bench.probe", []byte("spear-bench")); err != nil {
			return 0, err
		}
		lat = append(lat, time.Since(t0))
	}
	return quantile(lat[50:], 0.5), nil
}

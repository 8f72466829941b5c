package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

// cancelRow measures, for a sleeper running on the third node, the
// time from a CancelExecution made through the first node until the
// execution is CANCELLED as the third node reports it and its process is
// gone.
func (c *cluster) cancelRow(ctx context.Context) Row {
	row := Row{ID: "cluster-cancel", Target: "p99 ≤200 ms", Status: StatusPass}
	via, on := c.nodes[0], c.nodes[2]
	n := 30
	if c.e.opts.Quick {
		n = 10
	}
	var lat, rpc []time.Duration
	var firstErr error
	unseen := 0
	for range n {
		total, r, sawProc, err := c.crossCancelOne(ctx, via, on, c.ids[2])
		if err != nil {
			firstErr = err
			continue
		}
		lat, rpc = append(lat, total), append(rpc, r)
		if !sawProc {
			unseen++
		}
	}
	if len(lat) == 0 {
		return errorRow(row, firstErr)
	}
	row.Spear = &Stat{P50ms: ms(quantile(lat, 0.5)), P99ms: ms(quantile(lat, 0.99)), Samples: len(lat)}
	if row.Spear.P99ms > 200 {
		row.Status = StatusMiss
	}
	row.Note = fmt.Sprintf("process sleeper running on %s, cancelled through %s, until CANCELLED (read through %s) and its process gone; %d samples (p99 of few samples is their max); cancel RPC returned after p50 %.1f ms",
		c.ids[2], c.ids[0], c.ids[2], len(lat), ms(quantile(rpc, 0.5)))
	if unseen > 0 {
		row.Note += fmt.Sprintf("; %d times the process was not found (terminal status only)", unseen)
	}
	if firstErr != nil {
		row.Note += fmt.Sprintf("; %d failed: %v", n-len(lat), firstErr)
	}
	return row
}

// crossCancelOne runs the sleeper on node on (id onID), cancels it
// through via and returns the time until it is CANCELLED and its process
// gone, the cancel RPC's own time, and whether the process was seen.
func (c *cluster) crossCancelOne(ctx context.Context, via, on *node, onID string) (total, rpc time.Duration, sawProc bool, err error) {
	p, err := pin(ctx, on, onID)
	defer c.release(ctx, on, p)
	if err != nil {
		return 0, 0, false, err
	}
	pid := 0
	for deadline := time.Now().Add(2 * time.Second); pid == 0 && time.Now().Before(deadline); {
		if pid = funcPID(on.c.pid(), c.e.bins["sleep"]); pid == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	time.Sleep(20 * time.Millisecond) // let it really start
	t0 := time.Now()
	if _, err := via.api.CancelExecution(ctx, &pb.CancelExecutionRequest{ExecutionId: p.id, Reason: "bench"}); err != nil {
		return 0, 0, false, err
	}
	rpc = time.Since(t0)
	var r *pb.ExecutionResult
	for {
		if r == nil || !r.Status.Terminal() {
			if r, err = on.status(ctx, p.id); err != nil {
				return 0, 0, false, err
			}
		}
		if r.Status.Terminal() && (pid == 0 || !alive(pid)) {
			break
		}
		if time.Since(t0) > 30*time.Second {
			return 0, 0, false, fmt.Errorf("%s: %s 30s after the cancel (process alive: %v): %w", p.id, r.Status, pid != 0 && alive(pid), errdefs.ErrUnavailable)
		}
		time.Sleep(time.Millisecond)
	}
	total = time.Since(t0)
	if r.Status != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
		return 0, 0, false, fmt.Errorf("%s ended %s, not CANCELLED: %w", p.id, r.Status, errdefs.ErrInternal)
	}
	return total, rpc, pid != 0, nil
}

// funcPID is a process descending from ancestor whose command line
// mentions needle, or 0.
func funcPID(ancestor int, needle string) int {
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == ancestor {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(needle)) && descendantOf(pid, ancestor) {
			return pid
		}
	}
	return 0
}

// statFields are the fields of /proc/PID/stat after the command name
// (state, ppid, ...), or nil when the process is gone.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	// The command name may hold spaces: read after its closing parenthesis.
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
}

// alive says whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	f := statFields(pid)
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// descendantOf says whether process pid descends from ancestor.
func descendantOf(pid, ancestor int) bool {
	for pid > 1 {
		f := statFields(pid)
		if len(f) < 2 {
			return false
		}
		var err error
		if pid, err = strconv.Atoi(f[1]); err != nil {
			return false
		}
		if pid == ancestor {
			return true
		}
	}
	return false
}

// failoverRow measures how soon the executions a SIGKILLed node
// was running start again elsewhere: per execution, from the kill to its
// next attempt's started_at. Each round runs 8 sleepers on the 12 slots
// of three nodes (so the survivors have room for the dead node's), kills
// the node running the most, and starts it again.
func (c *cluster) failoverRow(ctx context.Context) Row {
	bound := clusterAckWait + time.Second
	row := Row{ID: "cluster-failover", Target: fmt.Sprintf("max ≤%d ms (AckWait + 1 s)", bound.Milliseconds()), Status: StatusPass}
	rounds := 3
	if c.e.opts.Quick {
		rounds = 1
	}
	var delays []time.Duration
	for i := range rounds {
		ds, err := c.failoverOnce(ctx)
		delays = append(delays, ds...)
		if err != nil {
			row.Status, row.Note = StatusError, fmt.Sprintf("round %d: %v; ", i+1, err)
			break
		}
	}
	if len(delays) == 0 {
		row.Status = StatusError
		return row
	}
	worst := quantile(delays, 1)
	row.Spear = &Stat{P50ms: ms(quantile(delays, 0.5)), P99ms: ms(worst), Samples: len(delays)}
	if row.Status == StatusPass && worst > bound {
		row.Status = StatusMiss
	}
	row.Note += fmt.Sprintf("--ack-wait %s; %d executions restarted over %d rounds (the p99 column is the max), from SIGKILL of their node to the next attempt's started_at on a survivor",
		clusterAckWait, len(delays), rounds)
	return row
}

// failoverOnce is one round of failoverRow.
func (c *cluster) failoverOnce(ctx context.Context) ([]time.Duration, error) {
	const k = 8
	ids := make([]string, 0, k)
	for i := range k {
		id, err := c.nodes[i%len(c.nodes)].submit(ctx, taskSleeper, nil)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	on := map[string][]string{} // node id -> executions running there
	for _, id := range ids {
		r, err := c.nodes[0].waitStatus(ctx, id, 10*time.Millisecond, 30*time.Second, func(s pb.ExecutionStatus) bool {
			return s == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING || s.Terminal()
		})
		if err != nil {
			return nil, err
		}
		on[lastNode(r)] = append(on[lastNode(r)], id)
	}
	vi := 0
	for i, id := range c.ids {
		if len(on[id]) > len(on[c.ids[vi]]) {
			vi = i
		}
	}
	victim, lost := c.nodes[vi], on[c.ids[vi]]
	survivor := c.nodes[(vi+1)%len(c.nodes)]
	killedAt := time.Now()
	c.e.killNode(victim)
	delays, err := waitRestarted(ctx, survivor, c.ids[vi], lost, killedAt)
	c.e.logf("  killed %s running %d of %d sleepers: restarted after %v", c.ids[vi], len(lost), k, delays)
	for _, id := range ids {
		_, _ = survivor.api.CancelExecution(ctx, &pb.CancelExecutionRequest{ExecutionId: id, Reason: "bench", Force: true})
	}
	for _, id := range ids {
		if _, werr := survivor.waitStatus(ctx, id, 10*time.Millisecond, 30*time.Second, pb.ExecutionStatus.Terminal); werr != nil && err == nil {
			err = werr
		}
	}
	if serr := c.startAgain(ctx, vi); serr != nil && err == nil {
		err = serr
	}
	return delays, err
}

// waitRestarted waits until each of the executions the node dead ran has
// a later attempt started elsewhere, and returns, per execution, the time
// from killedAt to that start.
func waitRestarted(ctx context.Context, via *node, dead string, ids []string, killedAt time.Time) ([]time.Duration, error) {
	var delays []time.Duration
	pending := ids
	deadline := time.Now().Add(30 * time.Second)
	for len(pending) > 0 {
		var next []string
		for _, id := range pending {
			r, err := via.status(ctx, id)
			if err != nil {
				return delays, err
			}
			if h := r.GetAttemptHistory(); len(h) > 1 {
				if a := h[len(h)-1]; a.GetNode() != dead && a.GetStartedAt() != nil {
					delays = append(delays, a.GetStartedAt().AsTime().Sub(killedAt))
					continue
				}
			}
			next = append(next, id)
		}
		pending = next
		if len(pending) > 0 {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return delays, fmt.Errorf("%d executions of the killed node %s not started again after 30s: %w", len(pending), dead, errdefs.ErrUnavailable)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return delays, nil
}

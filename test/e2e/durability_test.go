package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestDurability checks that accepted async executions survive the node:
// a SIGKILL while one runs and others wait in the queue, and a graceful
// SIGTERM with work still queued. Every accepted execution completes after a
// restart on the same data directory.
func TestDurability(t *testing.T) {
	tests := []struct {
		name string
		stop func(t *testing.T, n *node)
	}{
		{"sigkill", func(t *testing.T, n *node) { n.kill() }},
		{"sigterm", func(t *testing.T, n *node) {
			if err := n.stop(); err != nil {
				t.Fatalf("graceful stop: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			// A slow task: sleeps a second, then echoes its input. The
			// script's path is unique to this test, so its processes can be
			// found in /proc.
			path, _ := writeScript(t, t.TempDir(), "slow-"+tc.name+".sh", "sleep 1\ncat\n")
			n := startNode(t, dataDir, nodeOpts{workers: 1})
			n.registerProcess(t, "e2e-slow", path)

			const jobs = 4
			ids := make([]string, jobs)
			want := map[string]string{}
			for i := range jobs {
				in := fmt.Sprintf("job-%d", i)
				resp := n.invoke(t, invocation(t, "e2e-slow", pb.ExecutionMode_EXECUTION_MODE_ASYNC, []byte(in)))
				if !resp.GetSuccess() || resp.GetExecutionId() == "" {
					t.Fatalf("async invoke %d: success=%v %s", i, resp.GetSuccess(), resp.GetMessage())
				}
				ids[i] = resp.GetExecutionId()
				want[ids[i]] = in
			}
			// With one worker, the first runs while the others wait.
			n.waitStatus(t, ids[0], finishBound, func(s pb.ExecutionStatus) bool {
				return s == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING || s.Terminal()
			})
			if st := n.status(t, ids[jobs-1]).GetResult().GetStatus(); st != pb.ExecutionStatus_EXECUTION_STATUS_PENDING {
				t.Logf("last execution is %v before the stop (want it queued; the machine is slow?)", st)
			}

			nodeID := n.nodeID(t)
			tc.stop(t, n)
			if n.running() {
				t.Fatal("node still running after stop")
			}

			n2 := startNode(t, dataDir, nodeOpts{workers: 1})
			for _, id := range ids {
				st := n2.waitFinal(t, id, finishBound)
				res := st.GetResult()
				if res.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
					t.Errorf("execution %s (%s): %v %s %s", id, want[id], res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage())
					continue
				}
				if got := output(t, res.GetResult()); got != want[id] {
					t.Errorf("execution %s: output %q, want %q", id, got, want[id])
				}
			}
			if tc.name == "sigkill" {
				// The run the kill cut short is in the history, lost, with
				// its node; the next attempt completed.
				h := n2.status(t, ids[0]).GetResult().GetAttemptHistory()
				if len(h) != 2 || h[0].GetErrorCode() != "ATTEMPT_LOST" || h[0].GetNode() != nodeID ||
					h[0].GetStartedAt() == nil || h[1].GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
					t.Errorf("attempt history of the execution running at the kill: %v", h)
				}
			}
			// Nothing of the stopped node's runs may keep going for good.
			// A SIGKILLed node cannot stop its children (they run in their
			// own process groups and are orphaned); this script ends by
			// itself within about a second.
			waitNoProcesses(t, path, finishBound)
			if err := n2.stop(); err != nil {
				t.Errorf("stopping the restarted node: %v", err)
			}
		})
	}
}

// TestOrphansKilledOnRestart: a SIGKILLed node cannot stop the processes of
// the function it was running; the child dies with it (parent-death
// signal), and whatever the child started is killed when the node restarts
// on its data directory, before the execution runs again.
func TestOrphansKilledOnRestart(t *testing.T) {
	dir := t.TempDir()
	// A copy of sleep under a unique name, so the grandchild can be found.
	sleeper := filepath.Join(dir, "orphan-sleeper")
	b, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skipf("no /bin/sleep to copy: %v", err)
	}
	if err := os.WriteFile(sleeper, b, 0o755); err != nil {
		t.Fatal(err)
	}
	path, _ := writeScript(t, dir, "orphan-parent.sh", sleeper+" 600\necho done\n")
	dataDir := t.TempDir()
	n := startNode(t, dataDir, nodeOpts{workers: 1})
	n.registerProcess(t, "e2e-orphan", path)
	resp := n.invoke(t, invocation(t, "e2e-orphan", pb.ExecutionMode_EXECUTION_MODE_ASYNC, nil))
	id := resp.GetExecutionId()
	n.waitStatus(t, id, finishBound, func(s pb.ExecutionStatus) bool { return s == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING })
	var before []int
	deadline := time.Now().Add(finishBound)
	for len(before) == 0 && time.Now().Before(deadline) {
		before = processesRunning(sleeper)
		time.Sleep(20 * time.Millisecond)
	}
	if len(before) == 0 {
		t.Fatal("the function's grandchild never showed up")
	}
	t.Cleanup(func() { // whatever the outcome, leave nothing running
		for _, pid := range processesRunning(sleeper) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	n.kill()

	n2 := startNode(t, dataDir, nodeOpts{workers: 1})
	// Well below the sleeper's 600 s, so only a kill ends it in time.
	deadline = time.Now().Add(30 * time.Second)
	for {
		alive := 0
		for _, pid := range before {
			if slices.Contains(processesRunning(sleeper), pid) {
				alive++
			}
		}
		if alive == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes of the killed node's run still alive after the restart", alive)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The execution runs again on the restarted node; stop it.
	if _, err := n2.client.CancelExecution(ctx(t, 30*time.Second), &pb.CancelExecutionRequest{ExecutionId: id, Force: true}); err != nil {
		t.Fatalf("cancel the re-run: %v", err)
	}
	st := n2.waitFinal(t, id, finishBound)
	if s := st.GetResult().GetStatus(); s != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
		t.Fatalf("re-run ended %v, want CANCELLED", s)
	}
	waitNoProcesses(t, sleeper, finishBound)
}

// nodeID is the node's id, as GetHealth says.
func (n *node) nodeID(t *testing.T) string {
	t.Helper()
	h, err := n.client.GetHealth(ctx(t, callTimeout), &pb.GetHealthRequest{IncludeDetails: true})
	if err != nil {
		t.Fatal(err)
	}
	return h.GetDetails().GetSystemInfo()["node_id"]
}

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/testwait"
)

// TestSecondSignalStopsNow: on a first SIGINT the node says at once what
// it waits for; a second stops it at once, the running async execution
// goes back to the queue, and the next start of the node runs it again
// right away (not after the queue's ack wait).
func TestSecondSignalStopsNow(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	// The ack wait is far longer than any bound below: an execution that
	// waited for it would fail the test.
	opts := nodeOpts{workers: 1, noSamples: true, args: []string{"--ack-wait", "2m", "--shutdown-grace", "5m"}}
	n := startNode(t, dataDir, opts)
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	path, _ := writeScript(t, dir, "long.sh", "echo run >> "+runs+"\nsleep 300\n")
	n.registerProcess(t, "long", path)
	resp := n.invoke(t, invocation(t, "long", pb.ExecutionMode_EXECUTION_MODE_ASYNC, nil))
	id := resp.GetExecutionId()
	testwait.Until(t, "the first run to start", func() bool { return fileLines(runs) >= 1 })

	_ = n.cmd.Process.Signal(syscall.SIGINT)
	testwait.Until(t, "the node to say what it waits for", func() bool {
		return strings.Contains(n.log.String(), "waiting up to 5m0s for 1 running executions")
	})
	_ = n.cmd.Process.Signal(syscall.SIGINT)
	signalled := time.Now()
	select {
	case <-n.exited:
	case <-time.After(stopTimeout):
		t.Fatalf("the node did not exit within %v of the second signal; log:\n%s", stopTimeout, n.log.String())
	}
	t.Logf("exited %v after the second signal", time.Since(signalled))

	restart := time.Now()
	next := startNode(t, dataDir, opts)
	ready := time.Now()
	t.Logf("restarted node ready after %v", ready.Sub(restart))
	st := next.waitStatus(t, id, time.Minute, func(s pb.ExecutionStatus) bool { return s == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING })
	t.Logf("running again %v after the restarted node was ready (attempt %d)", time.Since(ready), st.GetResult().GetAttempts())
	defer next.kill() // its run sleeps for minutes
	testwait.Until(t, "the second run to start", func() bool {
		if fileLines(runs) >= 2 {
			return true
		}
		if st := next.status(t, id); st.GetResult().GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_RUNNING {
			t.Fatalf("execution %s is %v (%s %s) and its second run did not start", id,
				st.GetResult().GetStatus(), st.GetResult().GetErrorCode(), st.GetResult().GetErrorMessage())
		}
		return false
	})
	t.Logf("second run started %v after the restarted node was ready", time.Since(ready))
	if got := countLines(t, runs); got != 2 {
		t.Errorf("the function ran %d times, want 2 (once per node start)", got)
	}
}

// fileLines counts the lines of the file at path (0 when there is none).
func fileLines(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

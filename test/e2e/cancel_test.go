package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestCancel covers CancelExecution on running sync and stream executions,
// on a queued async execution, and on a finished one. The node has one
// worker, so a second async execution waits behind a running one.
func TestCancel(t *testing.T) {
	n := startNode(t, "", nodeOpts{workers: 1})
	dir := t.TempDir()
	path, _ := writeScript(t, dir, "sleeper.sh", sleeperBody)
	n.registerProcess(t, "e2e-sleeper", path)

	// Each case starts a long sleeper in some mode, cancels it while it
	// runs from another goroutine, and checks how the invocation ended.
	running := []struct {
		mode pb.ExecutionMode
	}{
		{pb.ExecutionMode_EXECUTION_MODE_SYNC},
		{pb.ExecutionMode_EXECUTION_MODE_STREAM},
	}
	for _, tc := range running {
		t.Run("running-"+tc.mode.String(), func(t *testing.T) {
			id := fmt.Sprintf("e2e-cancel-%d-%d", tc.mode, time.Now().UnixNano())
			req := invocation(t, "e2e-sleeper", tc.mode, nil)
			req.Context.ExecutionId = id
			callCtx := ctx(t, 45*time.Second) // hang guard; the sleeper sleeps 30 s
			done := make(chan callOutcome, 1)
			go func() {
				if tc.mode == pb.ExecutionMode_EXECUTION_MODE_STREAM {
					done <- streamOutcome(callCtx, n, req)
					return
				}
				resp, err := n.client.InvokeFunction(callCtx, req)
				done <- callOutcome{status: resp.GetResult().GetStatus(), err: err}
			}()

			n.waitStatus(t, id, finishBound, func(s pb.ExecutionStatus) bool {
				return s == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING || s.Terminal()
			})
			resp, err := n.client.CancelExecution(ctx(t, callTimeout), &pb.CancelExecutionRequest{ExecutionId: id, Reason: "e2e"})
			if err != nil {
				t.Fatalf("CancelExecution: %v", err)
			}
			if !resp.GetSuccess() || resp.GetFinalStatus() != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
				t.Errorf("CancelExecution: success=%v final_status=%v (%s)", resp.GetSuccess(), resp.GetFinalStatus(), resp.GetMessage())
			}
			select {
			case out := <-done:
				if out.err != nil {
					t.Errorf("the cancelled invocation returned an RPC error: %v", out.err)
				} else if out.status != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
					t.Errorf("the cancelled invocation returned status %v, want CANCELLED", out.status)
				}
				if tc.mode == pb.ExecutionMode_EXECUTION_MODE_STREAM && !out.final {
					t.Error("the cancelled stream ended without an is_final message")
				}
			case <-callCtx.Done():
				t.Fatal("the cancelled invocation did not return")
			}
			if st := n.status(t, id).GetResult().GetStatus(); st != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
				t.Errorf("status after cancel %v, want CANCELLED", st)
			}
		})
	}

	t.Run("queued-async", func(t *testing.T) {
		busy := invocation(t, "e2e-sleeper", pb.ExecutionMode_EXECUTION_MODE_ASYNC, nil)
		busyID := n.invoke(t, busy).GetExecutionId()
		n.waitStatus(t, busyID, finishBound, func(s pb.ExecutionStatus) bool {
			return s == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING || s.Terminal()
		})

		mark := filepath.Join(dir, "queued-ran")
		queued := invocation(t, "e2e-sleeper", pb.ExecutionMode_EXECUTION_MODE_ASYNC, nil)
		queued.Context.Environment = map[string]string{"MARK": mark, "SLEEP": "0"}
		queuedID := n.invoke(t, queued).GetExecutionId()
		resp, err := n.client.CancelExecution(ctx(t, callTimeout), &pb.CancelExecutionRequest{ExecutionId: queuedID})
		if err != nil {
			t.Fatalf("CancelExecution(queued): %v", err)
		}
		if !resp.GetSuccess() || resp.GetFinalStatus() != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
			t.Errorf("CancelExecution(queued): success=%v final_status=%v (%s)", resp.GetSuccess(), resp.GetFinalStatus(), resp.GetMessage())
		}

		// Free the worker, then run one more execution through the queue:
		// once it completed, the worker has passed the cancelled one.
		if resp, err := n.client.CancelExecution(ctx(t, callTimeout), &pb.CancelExecutionRequest{ExecutionId: busyID}); err != nil || !resp.GetSuccess() {
			t.Fatalf("CancelExecution(busy): %v %v", resp, err)
		}
		after := n.invoke(t, invocation(t, "echo", pb.ExecutionMode_EXECUTION_MODE_ASYNC, []byte("after")))
		if st := n.waitFinal(t, after.GetExecutionId(), finishBound); st.GetResult().GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
			t.Fatalf("execution after the cancelled one: %v", st.GetResult().GetStatus())
		}
		st := n.status(t, queuedID).GetResult()
		if st.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
			t.Errorf("cancelled queued execution is now %v", st.GetStatus())
		}
		if _, err := os.Stat(mark); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the cancelled queued execution ran (marker %s: %v)", mark, err)
		}
	})

	t.Run("finished", func(t *testing.T) {
		done := n.invoke(t, invocation(t, "echo", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("done")))
		resp, err := n.client.CancelExecution(ctx(t, callTimeout), &pb.CancelExecutionRequest{ExecutionId: done.GetExecutionId()})
		if err != nil {
			t.Fatalf("CancelExecution(finished): %v", err)
		}
		if resp.GetSuccess() || resp.GetFinalStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
			t.Errorf("CancelExecution(finished): success=%v final_status=%v, want false COMPLETED", resp.GetSuccess(), resp.GetFinalStatus())
		}
	})
}

// callOutcome is how an invocation running in a goroutine ended.
type callOutcome struct {
	status pb.ExecutionStatus
	final  bool // the stream's last message had is_final
	err    error
}

// streamOutcome runs StreamFunction to its end and reports the status of its
// last message. It must not call t's fatal methods: it runs in a goroutine.
func streamOutcome(ctx context.Context, n *node, req *pb.InvokeFunctionRequest) (out callOutcome) {
	stream, err := n.client.StreamFunction(ctx, req)
	if err != nil {
		out.err = err
		return out
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			out.err = err
			return out
		}
		out.status, out.final = m.GetStatus(), m.GetIsFinal()
	}
}

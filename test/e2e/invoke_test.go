package e2e

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestInvoke covers invocation over gRPC against one node: sync, async,
// stream, mode errors, failures, error codes, new tasks and timeouts.
func TestInvoke(t *testing.T) {
	n := startNode(t, "", nodeOpts{})

	t.Run("sync", func(t *testing.T) {
		tests := []struct {
			name, task, in, want string
		}{
			{"echo", "echo", "hello", "hello"},
			{"upper", "upper", "hello", "HELLO"},
			{"upper-lines", "upper", "Mixed case\nsecond line\n", "MIXED CASE\nSECOND LINE\n"},
			{"echo-binary", "echo", "bin\x00\xff\x01", "bin\x00\xff\x01"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				resp := n.invoke(t, invocation(t, tc.task, pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte(tc.in)))
				res := resp.GetResult()
				if !resp.GetSuccess() || res.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
					t.Fatalf("success=%v status=%v message=%q error=%q/%q", resp.GetSuccess(), res.GetStatus(),
						resp.GetMessage(), res.GetErrorCode(), res.GetErrorMessage())
				}
				if got := output(t, res.GetResult()); got != tc.want {
					t.Errorf("output %q, want %q", got, tc.want)
				}
				if resp.GetStatusEndpoint() != "" {
					t.Errorf("status_endpoint %q, want empty for sync", resp.GetStatusEndpoint())
				}
				if resp.GetEstimatedCompletionMs() != 0 {
					t.Errorf("estimated_completion_ms %d, want 0 for sync", resp.GetEstimatedCompletionMs())
				}
				if resp.GetExecutionId() == "" || resp.GetTaskId() != tc.task {
					t.Errorf("execution_id %q task_id %q", resp.GetExecutionId(), resp.GetTaskId())
				}
			})
		}
	})

	t.Run("async", func(t *testing.T) {
		tests := []struct {
			task, in, want string
		}{
			{"upper", "async hello", "ASYNC HELLO"},
			{"echo", "queued", "queued"},
		}
		for _, tc := range tests {
			t.Run(tc.task, func(t *testing.T) {
				resp := n.invoke(t, invocation(t, tc.task, pb.ExecutionMode_EXECUTION_MODE_ASYNC, []byte(tc.in)))
				id := resp.GetExecutionId()
				if !resp.GetSuccess() || id == "" {
					t.Fatalf("success=%v id=%q message=%q", resp.GetSuccess(), id, resp.GetMessage())
				}
				if got := resp.GetResult().GetStatus(); got != pb.ExecutionStatus_EXECUTION_STATUS_PENDING {
					t.Errorf("accepted status %v, want PENDING", got)
				}
				if want := "/api/v1/executions/" + id + "/status"; resp.GetStatusEndpoint() != want {
					t.Errorf("status_endpoint %q, want %q", resp.GetStatusEndpoint(), want)
				}
				if resp.GetEstimatedCompletionMs() <= 0 {
					t.Errorf("estimated_completion_ms %d, want > 0", resp.GetEstimatedCompletionMs())
				}

				final := n.waitFinal(t, id, finishBound)
				if got := final.GetResult().GetStatus(); got != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
					t.Fatalf("final status %v (%s), want COMPLETED", got, final.GetResult().GetErrorMessage())
				}
				if got := output(t, final.GetResult().GetResult()); got != tc.want {
					t.Errorf("output %q, want %q", got, tc.want)
				}

				// The status endpoint over plain HTTP answers the JSON form
				// of GetExecutionStatusResponse.
				st := getStatusHTTP(t, n.httpURL()+resp.GetStatusEndpoint())
				if !st.GetFound() || st.GetResult().GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
					t.Fatalf("HTTP status: found=%v status=%v", st.GetFound(), st.GetResult().GetStatus())
				}
				if got := output(t, st.GetResult().GetResult()); got != tc.want {
					t.Errorf("HTTP status output %q, want %q", got, tc.want)
				}
			})
		}
	})

	t.Run("stream/ticker", func(t *testing.T) {
		req := invocation(t, "ticker", pb.ExecutionMode_EXECUTION_MODE_STREAM, nil)
		req.Context.Environment = map[string]string{"TICKS": "4"}
		msgs := collectStream(t, n, req, nil)
		var out strings.Builder
		firstTick, final, dataMsgs := -1, -1, 0
		for i, m := range msgs {
			if d := output(t, m.GetChunkData()); d != "" {
				dataMsgs++
				out.WriteString(d)
				if firstTick < 0 && strings.Contains(d, "tick 1") {
					firstTick = i
				}
			}
			if m.GetIsFinal() {
				final = i
			}
		}
		if want := "tick 1\ntick 2\ntick 3\ntick 4\n"; out.String() != want {
			t.Errorf("stream output %q, want %q", out.String(), want)
		}
		if dataMsgs < 2 {
			t.Errorf("%d chunk messages carried data, want at least 2 (output must not be buffered to the end)", dataMsgs)
		}
		if firstTick < 0 || final < 0 || firstTick > final {
			t.Errorf("first tick chunk at %d, final message at %d: want the tick before the final message", firstTick, final)
		}
		last := msgs[len(msgs)-1]
		if final != len(msgs)-1 || last.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
			t.Errorf("last message is_final=%v status=%v (final index %d of %d)", last.GetIsFinal(), last.GetStatus(), final, len(msgs))
		}
	})

	t.Run("stream/incremental", func(t *testing.T) {
		// The function prints "first", then waits for a gate file that the
		// test creates only after it has received "first": if the node
		// buffered output to the end, the gate would never open (the script
		// gives up after 30 s and says so).
		dir := t.TempDir()
		path, _ := writeScript(t, dir, "gated.sh", `echo first
i=0
while [ ! -e "$GATE" ]; do
  i=$((i + 1))
  if [ "$i" -gt 300 ]; then echo gate-timeout; exit 1; fi
  sleep 0.1
done
echo second
`)
		n.registerProcess(t, "e2e-gated", path)
		gate := filepath.Join(dir, "gate")
		req := invocation(t, "e2e-gated", pb.ExecutionMode_EXECUTION_MODE_STREAM, nil)
		req.Context.Environment = map[string]string{"GATE": gate}
		var seen strings.Builder
		msgs := collectStream(t, n, req, func(m *pb.StreamExecutionResult) {
			seen.WriteString(output(t, m.GetChunkData()))
			if strings.Contains(seen.String(), "first\n") {
				if err := os.WriteFile(gate, nil, 0o644); err != nil {
					t.Error(err)
				}
			}
		})
		last := msgs[len(msgs)-1]
		if seen.String() != "first\nsecond\n" || !last.GetIsFinal() || last.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
			t.Errorf("output %q, last is_final=%v status=%v: want first, second, COMPLETED", seen.String(), last.GetIsFinal(), last.GetStatus())
		}
	})

	t.Run("mode-errors", func(t *testing.T) {
		tests := []struct {
			name     string
			mode     pb.ExecutionMode
			code     string
			mentions string
		}{
			{"stream", pb.ExecutionMode_EXECUTION_MODE_STREAM, "STREAM_MODE_NOT_SUPPORTED", "StreamFunction"},
			{"unknown-0", pb.ExecutionMode_EXECUTION_MODE_UNKNOWN, "UNKNOWN_EXECUTION_MODE", ""},
			{"unknown-99", pb.ExecutionMode(99), "UNKNOWN_EXECUTION_MODE", ""},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				resp := n.invoke(t, invocation(t, "echo", tc.mode, []byte("x")))
				if resp.GetSuccess() {
					t.Fatalf("success=true for mode %v", tc.mode)
				}
				if got := resp.GetResult().GetErrorCode(); got != tc.code {
					t.Errorf("error_code %q, want %q", got, tc.code)
				}
				if tc.mentions != "" && !strings.Contains(resp.GetMessage(), tc.mentions) {
					t.Errorf("message %q does not mention %s", resp.GetMessage(), tc.mentions)
				}
			})
		}
	})

	t.Run("failing-function", func(t *testing.T) {
		resp := n.invoke(t, invocation(t, "fail", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("x")))
		res := resp.GetResult()
		if resp.GetSuccess() || res.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_FAILED {
			t.Fatalf("success=%v status=%v, want false/FAILED", resp.GetSuccess(), res.GetStatus())
		}
		if res.GetErrorCode() != "FUNCTION_FAILED" {
			t.Errorf("error_code %q, want FUNCTION_FAILED", res.GetErrorCode())
		}
		for _, want := range []string{"exit status 3", "something went wrong"} {
			if !strings.Contains(res.GetErrorMessage(), want) {
				t.Errorf("error_message %q does not contain %q", res.GetErrorMessage(), want)
			}
		}
		st := n.status(t, resp.GetExecutionId())
		if !slicesContain(st.GetLogs(), "something went wrong") {
			t.Errorf("include_logs: logs %q lack the stderr line", st.GetLogs())
		}
		if st.GetResult().GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_FAILED {
			t.Errorf("GetExecutionStatus status %v, want FAILED", st.GetResult().GetStatus())
		}
	})

	t.Run("rpc-errors", func(t *testing.T) {
		negTimeout := invocation(t, "echo", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("x"))
		negTimeout.Context.TimeoutMs = -1
		tests := []struct {
			name   string
			stream bool
			req    *pb.InvokeFunctionRequest
			code   codes.Code
			reason string
		}{
			{"unknown-task", false, invocation(t, "no-such-task", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("x")), codes.NotFound, "TASK_NOT_FOUND"},
			{"unknown-task-async", false, invocation(t, "no-such-task", pb.ExecutionMode_EXECUTION_MODE_ASYNC, nil), codes.NotFound, "TASK_NOT_FOUND"},
			{"unknown-task-stream", true, invocation(t, "no-such-task", pb.ExecutionMode_EXECUTION_MODE_STREAM, nil), codes.NotFound, "TASK_NOT_FOUND"},
			{"negative-timeout", false, negTimeout, codes.InvalidArgument, "INVALID_TIMEOUT"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				var trailer metadata.MD
				var err error
				if tc.stream {
					err = streamError(t, n, tc.req, &trailer)
				} else {
					_, err = n.client.InvokeFunction(ctx(t, callTimeout), tc.req, grpc.Trailer(&trailer))
				}
				e := asRPCError(t, err, trailer)
				if e.code != tc.code || e.reason != tc.reason || e.trailer != tc.reason {
					t.Errorf("got code %v, ErrorInfo reason %q, trailer %q (%s); want %v, %q, %q",
						e.code, e.reason, e.trailer, e.msg, tc.code, tc.reason, tc.reason)
				}
			})
		}
	})

	t.Run("new-task", func(t *testing.T) {
		dir := t.TempDir()
		path, sum := writeScript(t, dir, "greet.sh", "printf 'greet:'\ncat\n")

		newReq := func(checksum string) *pb.InvokeFunctionRequest {
			req := invocation(t, "", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("one"))
			req.InvocationType = pb.InvocationType_INVOCATION_TYPE_NEW_TASK
			req.TaskName = "e2e-greet"
			req.CreateIfNotExists = true
			req.ArtifactSpec = &pb.ArtifactSpec{ArtifactType: "process", Location: path, Checksum: checksum}
			return req
		}
		resp := n.invoke(t, newReq(sum))
		if !resp.GetSuccess() || output(t, resp.GetResult().GetResult()) != "greet:one" || resp.GetTaskId() == "" {
			t.Fatalf("NEW_TASK: success=%v task_id=%q output=%q (%s)", resp.GetSuccess(), resp.GetTaskId(),
				output(t, resp.GetResult().GetResult()), resp.GetMessage())
		}

		again := n.invoke(t, invocation(t, resp.GetTaskId(), pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("two")))
		if got := output(t, again.GetResult().GetResult()); !again.GetSuccess() || got != "greet:two" {
			t.Errorf("EXISTING_TASK %s: success=%v output %q, want greet:two", resp.GetTaskId(), again.GetSuccess(), got)
		}

		bad := newReq("sha256:" + strings.Repeat("0", 64))
		bad.TaskName = "e2e-greet-bad"
		var trailer metadata.MD
		_, err := n.client.InvokeFunction(ctx(t, callTimeout), bad, grpc.Trailer(&trailer))
		if e := asRPCError(t, err, trailer); e.code != codes.InvalidArgument || e.reason != "CHECKSUM_MISMATCH" {
			t.Errorf("wrong checksum: code %v reason %q (%s), want InvalidArgument CHECKSUM_MISMATCH", e.code, e.reason, e.msg)
		}
	})

	t.Run("upload", func(t *testing.T) {
		script := []byte("#!/bin/sh\nprintf 'uploaded:'\ncat\n")
		up, err := n.client.UploadArtifact(ctx(t, callTimeout), &pb.UploadArtifactRequest{Name: "uploaded.sh", Content: script})
		if err != nil {
			t.Fatalf("UploadArtifact: %v", err)
		}
		if up.GetLocation() == "" {
			t.Fatal("UploadArtifact returned no location")
		}
		reg, err := n.client.RegisterTask(ctx(t, callTimeout), &pb.RegisterTaskRequest{
			TaskId:       "e2e-uploaded",
			ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: up.GetLocation(), Checksum: up.GetChecksum()},
		})
		if err != nil {
			t.Fatalf("RegisterTask(%s): %v", up.GetLocation(), err)
		}
		resp := n.invoke(t, invocation(t, reg.GetTask().GetTaskId(), pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("x")))
		if got := output(t, resp.GetResult().GetResult()); !resp.GetSuccess() || got != "uploaded:x" {
			t.Errorf("invoking uploaded task: success=%v output %q (%s)", resp.GetSuccess(), got, resp.GetMessage())
		}
	})

	t.Run("timeout", func(t *testing.T) {
		path, _ := writeScript(t, t.TempDir(), "sleeper.sh", sleeperBody)
		n.registerProcess(t, "e2e-timeout-sleeper", path)
		req := invocation(t, "e2e-timeout-sleeper", pb.ExecutionMode_EXECUTION_MODE_SYNC, nil)
		req.Context.TimeoutMs = 300
		resp, err := n.client.InvokeFunction(ctx(t, 15*time.Second), req) // hang guard
		if err != nil {
			t.Fatalf("InvokeFunction: %v", err)
		}
		res := resp.GetResult()
		if res.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_TIMEOUT || res.GetErrorCode() != "EXECUTION_TIMEOUT" {
			t.Errorf("status %v error_code %q (%s), want TIMEOUT EXECUTION_TIMEOUT", res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage())
		}
		if resp.GetSuccess() {
			t.Error("success=true for a timed-out execution")
		}
	})
}

// collectStream runs StreamFunction and returns all its messages; each is
// passed to onMsg (if set) as it arrives. It fails the test on an RPC error.
func collectStream(t *testing.T, n *node, req *pb.InvokeFunctionRequest, onMsg func(*pb.StreamExecutionResult)) []*pb.StreamExecutionResult {
	t.Helper()
	stream, err := n.client.StreamFunction(ctx(t, 45*time.Second), req)
	if err != nil {
		t.Fatalf("StreamFunction: %v", err)
	}
	var msgs []*pb.StreamExecutionResult
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("StreamFunction after %d messages: %v", len(msgs), err)
		}
		msgs = append(msgs, m)
		if onMsg != nil {
			onMsg(m)
		}
	}
	if len(msgs) == 0 {
		t.Fatal("StreamFunction sent no messages")
	}
	return msgs
}

// streamError runs StreamFunction expecting it to fail, and returns the
// error with the trailer.
func streamError(t *testing.T, n *node, req *pb.InvokeFunctionRequest, trailer *metadata.MD) error {
	t.Helper()
	stream, err := n.client.StreamFunction(ctx(t, callTimeout), req)
	if err != nil {
		return err
	}
	for {
		_, err := stream.Recv()
		if err != nil {
			*trailer = stream.Trailer()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// getStatusHTTP GETs a status endpoint and parses it as the JSON form of
// GetExecutionStatusResponse.
func getStatusHTTP(t *testing.T, url string) *pb.GetExecutionStatusResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t, callTimeout), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("GET %s: Content-Type %q, want application/json", url, ct)
	}
	var st pb.GetExecutionStatusResponse
	if err := protojson.Unmarshal(body, &st); err != nil {
		t.Fatalf("GET %s: body is not a GetExecutionStatusResponse: %v\n%s", url, err, body)
	}
	return &st
}

func slicesContain(lines []string, sub string) bool {
	for _, l := range lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

package e2e

// The contract decisions README's "Contract decisions" states, and the
// checks a newcomer meets first (artifacts refused at registration with a
// hint, HTTP errors with a body, JSON enums by short name), each against a
// running node.

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/runtime/conformance"
)

// TestContract runs the contract's cases against one node, in turn.
func TestContract(t *testing.T) {
	n := startNode(t, "", nodeOpts{})
	t.Run("artifact checks at registration", func(t *testing.T) { testArtifactChecks(t, n) })
	t.Run("unknown ids", func(t *testing.T) { testUnknownIDs(t, n) })
	t.Run("new task with an existing name", func(t *testing.T) { testNewTaskExisting(t, n) })
	t.Run("stream modes and the first message", func(t *testing.T) { testStreamModes(t, n) })
	t.Run("http errors have bodies", func(t *testing.T) { testHTTPErrorBodies(t, n) })
	t.Run("json enums by short name", func(t *testing.T) { testJSONEnums(t, n) })
	t.Run("running attempt, health and stats", func(t *testing.T) { testRunningAttempt(t, n) })
}

// testArtifactChecks: what would fail only at run time is refused at
// registration (RegisterTask, NEW_TASK, UpdateTask) with its code and a
// hint, and nothing is stored.
func testArtifactChecks(t *testing.T, n *node) {
	dir := t.TempDir()
	file := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, typ, location string
		code, hint          string
	}{
		{"directory", "process", dir, "ARTIFACT_NOT_A_FILE", "is a directory"},
		{"wasm directory", "wasm", dir, "ARTIFACT_NOT_A_FILE", "is a directory"},
		{"not executable", "process", file("plain.sh", []byte("#!/bin/sh\necho hi\n"), 0o644), "ARTIFACT_NOT_EXECUTABLE", "chmod +x"},
		{"another architecture", "process", file("foreign", conformance.ELFExecutable(conformance.ForeignMachine(), elf.ET_EXEC, ""), 0o755),
			"ARTIFACT_WRONG_ARCH", "this node is " + goruntime.GOARCH},
		{"random bytes", "process", file("random", []byte{0x00, 0x9f, 0x13, 0x07, 0xff}, 0o755), "ARTIFACT_NOT_RUNNABLE", "neither an executable nor a script"},
		{"script without #!", "process", file("noshebang.sh", []byte("echo hi\n"), 0o755), "ARTIFACT_NOT_RUNNABLE", "e.g. #!/bin/sh"},
		{"missing interpreter", "process", file("py.sh", []byte("#!/nonexistent/python3\nprint(1)\n"), 0o755), "ARTIFACT_NO_INTERPRETER", "/nonexistent/python3"},
	}
	good, _ := writeScript(t, dir, "good.sh", "echo good\n")
	n.registerProcess(t, "contract-upd", good)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := &pb.ArtifactSpec{ArtifactType: tc.typ, Location: tc.location}
			calls := map[string]func(grpc.CallOption) error{
				"RegisterTask": func(o grpc.CallOption) error {
					_, err := n.client.RegisterTask(ctx(t, callTimeout), &pb.RegisterTaskRequest{TaskId: "contract-bad", ArtifactSpec: spec}, o)
					return err
				},
				"NEW_TASK": func(o grpc.CallOption) error {
					_, err := n.client.InvokeFunction(ctx(t, callTimeout), &pb.InvokeFunctionRequest{InvocationType: pb.InvocationType_INVOCATION_TYPE_NEW_TASK,
						TaskName: "contract-bad", ArtifactSpec: spec, ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC}, o)
					return err
				},
				"UpdateTask": func(o grpc.CallOption) error {
					_, err := n.client.UpdateTask(ctx(t, callTimeout), &pb.UpdateTaskRequest{TaskId: "contract-upd", ArtifactSpec: spec}, o)
					return err
				},
			}
			for name, call := range calls {
				var tr metadata.MD
				e := asRPCError(t, call(grpc.Trailer(&tr)), tr)
				if e.code != codes.FailedPrecondition || e.reason != tc.code || e.trailer != tc.code || !strings.Contains(e.msg, tc.hint) {
					t.Errorf("%s: %+v; want FAILED_PRECONDITION %s with %q", name, e, tc.code, tc.hint)
				}
			}
		})
	}
	if g, err := n.client.GetTask(ctx(t, callTimeout), &pb.GetTaskRequest{TaskId: "contract-bad"}); err != nil || g.GetFound() {
		t.Errorf("a refused task was stored: %v %v", g, err)
	}
	if g, err := n.client.GetTask(ctx(t, callTimeout), &pb.GetTaskRequest{TaskId: "contract-upd"}); err != nil || g.GetTask().GetArtifactSpec().GetLocation() != good {
		t.Errorf("a refused update changed the task: %v %v", g, err)
	}
}

// testUnknownIDs: reads of an unknown id answer found=false; deleting or
// cancelling one is NOT_FOUND, over gRPC and HTTP alike.
func testUnknownIDs(t *testing.T, n *node) {
	const task, exec = "contract-no-such-task", "000000000000abcdefabcd"
	if g, err := n.client.GetTask(ctx(t, callTimeout), &pb.GetTaskRequest{TaskId: task}); err != nil || g.GetFound() || !strings.Contains(g.GetMessage(), "not found") {
		t.Errorf("GetTask: %v %v; want found=false", g, err)
	}
	if g, err := n.client.GetExecutionStatus(ctx(t, callTimeout), &pb.GetExecutionStatusRequest{ExecutionId: exec}); err != nil || g.GetFound() {
		t.Errorf("GetExecutionStatus: %v %v; want found=false", g, err)
	}
	for _, tc := range []struct {
		name string
		call func(grpc.CallOption) error
		code string
	}{
		{"DeleteTask", func(o grpc.CallOption) error {
			_, err := n.client.DeleteTask(ctx(t, callTimeout), &pb.DeleteTaskRequest{TaskId: task}, o)
			return err
		}, "TASK_NOT_FOUND"},
		{"CancelExecution", func(o grpc.CallOption) error {
			_, err := n.client.CancelExecution(ctx(t, callTimeout), &pb.CancelExecutionRequest{ExecutionId: exec}, o)
			return err
		}, "EXECUTION_NOT_FOUND"},
	} {
		var tr metadata.MD
		if e := asRPCError(t, tc.call(grpc.Trailer(&tr)), tr); e.code != codes.NotFound || e.reason != tc.code || e.trailer != tc.code {
			t.Errorf("%s: %+v; want NOT_FOUND %s", tc.name, e, tc.code)
		}
	}
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/api/v1/executions/" + exec + "/status"},
		{http.MethodPost, "/api/v1/executions/" + exec + "/cancel"},
	} {
		wantHTTPError(t, n, tc.method, tc.path, "", "", 404, "not_found", "EXECUTION_NOT_FOUND")
	}
}

// testNewTaskExisting: NEW_TASK of an existing name is that task when it
// is the same registration; another artifact or other limits are refused.
func testNewTaskExisting(t *testing.T, n *node) {
	dir := t.TempDir()
	a, _ := writeScript(t, dir, "a.sh", "echo a\n")
	b, _ := writeScript(t, dir, "b.sh", "echo b\n")
	newTask := func(loc string, limits *pb.TaskLimits) *pb.InvokeFunctionRequest {
		return &pb.InvokeFunctionRequest{InvocationType: pb.InvocationType_INVOCATION_TYPE_NEW_TASK, TaskName: "contract-new",
			ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: loc}, ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC, Limits: limits}
	}
	for _, req := range []*pb.InvokeFunctionRequest{newTask(a, nil), newTask(a, nil), newTask(a, &pb.TaskLimits{})} {
		if resp := n.invoke(t, req); !resp.GetSuccess() || resp.GetTaskId() != "contract-new" || output(t, resp.GetResult().GetResult()) != "a\n" {
			t.Fatalf("NEW_TASK of the same artifact: %v", resp)
		}
	}
	for _, tc := range []struct {
		name string
		req  *pb.InvokeFunctionRequest
		hint string
	}{
		{"another artifact", newTask(b, nil), "spear task update contract-new"},
		{"other limits", newTask(a, &pb.TaskLimits{MaxConcurrency: 2}), "spear task limits contract-new"},
	} {
		var tr metadata.MD
		_, err := n.client.InvokeFunction(ctx(t, callTimeout), tc.req, grpc.Trailer(&tr))
		if e := asRPCError(t, err, tr); e.code != codes.AlreadyExists || e.reason != "TASK_EXISTS" || !strings.Contains(e.msg, tc.hint) {
			t.Errorf("%s: %+v; want ALREADY_EXISTS TASK_EXISTS with %q", tc.name, e, tc.hint)
		}
	}
	reg, err := n.client.RegisterTask(ctx(t, callTimeout), &pb.RegisterTaskRequest{TaskId: "contract-new",
		ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: a}})
	if err != nil || reg.GetCreated() {
		t.Errorf("RegisterTask of the same artifact: %v %v; want the existing task", reg, err)
	}
}

// testStreamModes: StreamFunction streams when its mode is unset, STREAM
// or SYNC, refuses ASYNC and a value of no mode; its first message says
// which execution started, before any output.
func testStreamModes(t *testing.T, n *node) {
	nodeID := healthOf(t, n).GetDetails().GetSystemInfo()["node_id"]
	for _, mode := range []pb.ExecutionMode{pb.ExecutionMode_EXECUTION_MODE_UNKNOWN, pb.ExecutionMode_EXECUTION_MODE_STREAM, pb.ExecutionMode_EXECUTION_MODE_SYNC} {
		msgs := collectStream(t, n, invocation(t, "upper", mode, []byte("abc")), nil)
		first, last := msgs[0], msgs[len(msgs)-1]
		if first.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_PENDING || first.GetChunkData() != nil || first.GetExecutionId() == "" ||
			first.GetMetadata()["task_id"] != "upper" || first.GetMetadata()["node"] != nodeID {
			t.Errorf("%v: first message %v; want PENDING with the execution id, task and node, no chunk", mode, first)
		}
		var out strings.Builder
		for _, m := range msgs[1 : len(msgs)-1] {
			out.WriteString(output(t, m.GetChunkData()))
		}
		if !last.GetIsFinal() || last.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || out.String() != "ABC" || last.GetExecutionId() != first.GetExecutionId() {
			t.Errorf("%v: output %q, last message %v", mode, out.String(), last)
		}
	}
	for _, tc := range []struct {
		mode pb.ExecutionMode
		code string
	}{
		{pb.ExecutionMode_EXECUTION_MODE_ASYNC, "ASYNC_MODE_NOT_SUPPORTED"},
		{42, "UNKNOWN_EXECUTION_MODE"},
	} {
		var tr metadata.MD
		e := asRPCError(t, streamError(t, n, invocation(t, "upper", tc.mode, []byte("abc")), &tr), tr)
		if e.code != codes.InvalidArgument || e.reason != tc.code || e.trailer != tc.code {
			t.Errorf("%v: %+v; want INVALID_ARGUMENT %s", tc.mode, e, tc.code)
		}
	}
}

// testHTTPErrorBodies: every HTTP error answer is a Connect JSON error
// with its error code, whoever wrote it.
func testHTTPErrorBodies(t *testing.T, n *node) {
	for _, tc := range []struct {
		name, method, path, ctype string
		status                    int
		code, errorCode           string
	}{
		{"Connect without Content-Type", http.MethodPost, "/spearlet.FunctionService/GetHealth", "", 415, "invalid_argument", "INVALID_ARGUMENT"},
		{"GET of a unary method", http.MethodGet, "/spearlet.FunctionService/GetHealth", "", 405, "unimplemented", "UNIMPLEMENTED"},
		{"no such route", http.MethodGet, "/no/such/route", "", 404, "not_found", "NOT_FOUND"},
		{"wrong method of a route", http.MethodDelete, "/api/v1/executions/x/status", "", 405, "unimplemented", "UNIMPLEMENTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantHTTPError(t, n, tc.method, tc.path, tc.ctype, "{}", tc.status, tc.code, tc.errorCode)
		})
	}
}

// testJSONEnums: Connect JSON takes an enum's short name in any case; a
// name of no value is refused naming the valid ones, not read as unset.
func testJSONEnums(t *testing.T, n *node) {
	hi := `"parameters":[{"value":{"@type":"type.googleapis.com/google.protobuf.StringValue","value":"hi"}}]`
	for _, mode := range []string{"SYNC", "sync", "EXECUTION_MODE_SYNC"} {
		st, m := connectJSON(t, n, "InvokeFunction", `{"taskId":"upper","invocationType":"existing_task","executionMode":"`+mode+`",`+hi+`}`)
		if res, _ := m["result"].(map[string]any); st != 200 || m["success"] != true || res["status"] != "EXECUTION_STATUS_COMPLETED" {
			t.Errorf("executionMode %q: HTTP %d %v", mode, st, m)
		}
	}
	st, m := connectJSON(t, n, "InvokeFunction", `{"taskId":"upper","executionMode":"SNYC",`+hi+`}`)
	res, _ := m["result"].(map[string]any)
	if st != 200 || m["success"] == true || res["errorCode"] != "UNKNOWN_EXECUTION_MODE" || !strings.Contains(fmt.Sprint(m["message"]), "SYNC or ASYNC") {
		t.Errorf("an unknown mode name: HTTP %d %v; want UNKNOWN_EXECUTION_MODE naming SYNC or ASYNC", st, m)
	}
	st, m = connectJSON(t, n, "ListExecutions", `{"taskId":"upper","statusFilter":"completed"}`)
	execs, _ := m["executions"].([]any)
	for _, e := range execs {
		if s := e.(map[string]any)["status"]; s != "EXECUTION_STATUS_COMPLETED" {
			t.Errorf("statusFilter completed listed a %v execution", s)
		}
	}
	if st != 200 || len(execs) == 0 {
		t.Errorf("statusFilter completed: HTTP %d, %d executions", st, len(execs))
	}
	if st, m = connectJSON(t, n, "ListExecutions", `{"statusFilter":"DONE"}`); st != 400 || !strings.Contains(fmt.Sprint(m["message"]), "COMPLETED") {
		t.Errorf("an unknown status name: HTTP %d %v; want 400 naming COMPLETED", st, m)
	}
}

// testRunningAttempt: while executions run, their status names the node
// and start of the attempt in progress (gRPC, REST and the CLI), and
// health and stats count the same running tasks and executions.
func testRunningAttempt(t *testing.T, n *node) {
	nodeID := healthOf(t, n).GetDetails().GetSystemInfo()["node_id"]
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	path, _ := writeScript(t, dir, "gated.sh", "while [ ! -e "+gate+" ]; do sleep 0.05; done\necho done\n")
	n.registerProcess(t, "contract-gated", path)
	var ids []string
	for range 2 {
		ids = append(ids, n.invoke(t, invocation(t, "contract-gated", pb.ExecutionMode_EXECUTION_MODE_ASYNC, nil)).GetExecutionId())
	}
	for _, id := range ids {
		n.waitStatus(t, id, finishBound, func(s pb.ExecutionStatus) bool { return s == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING })
		for name, res := range map[string]*pb.ExecutionResult{
			"gRPC": n.status(t, id).GetResult(), "REST": getStatusHTTP(t, n.httpURL()+fmt.Sprintf("/api/v1/executions/%s/status", id)).GetResult(),
		} {
			h := res.GetAttemptHistory()
			if len(h) != 1 || h[0].GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_RUNNING || h[0].GetNode() != nodeID ||
				h[0].GetStartedAt() == nil || h[0].GetCompletedAt() != nil || h[0].GetAttempt() != 1 {
				t.Errorf("%s status of %s: attempt history %v; want attempt 1 RUNNING on %s since its start", name, id, h, nodeID)
			}
		}
		if _, out, _ := runSpear(t, n, "", "exec", "get", id); !strings.Contains(out, nodeID) || !strings.Contains(out, "attempt history") {
			t.Errorf("spear exec get %s shows no running attempt on %s:\n%s", id, nodeID, out)
		}
	}
	waitAgree(t, n, 1, 2)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		h := n.waitFinal(t, id, finishBound).GetResult().GetAttemptHistory()
		if len(h) != 1 || h[0].GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || h[0].GetNode() != nodeID || h[0].GetCompletedAt() == nil {
			t.Errorf("finished %s: attempt history %v", id, h)
		}
	}
	waitAgree(t, n, 0, 0)
}

// waitAgree waits until GetHealth and GetStats both count tasks active
// and executions running, and the CLI's health and stats say so.
func waitAgree(t *testing.T, n *node, tasks, running int32) {
	t.Helper()
	deadline := time.Now().Add(finishBound)
	for {
		h := healthOf(t, n).GetDetails()
		st, err := n.client.GetStats(ctx(t, callTimeout), &pb.GetStatsRequest{IncludeTaskStats: true, IncludeExecutionStats: true})
		if err != nil {
			t.Fatal(err)
		}
		if h.GetActiveTasks() == tasks && st.GetTaskStats().GetActiveTasks() == tasks &&
			h.GetRunningExecutions() == running && st.GetExecutionStats().GetRunningExecutions() == running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %v and stats %v do not both count %d tasks and %d executions running", h, st, tasks, running)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, health, _ := runSpear(t, n, "", "health")
	_, stats, _ := runSpear(t, n, "", "stats")
	if !regexp.MustCompile(fmt.Sprintf(`tasks running:\s+%d\n`, tasks)).MatchString(health) ||
		!regexp.MustCompile(fmt.Sprintf(`Tasks\n\s+running:\s+%d\n`, tasks)).MatchString(stats) {
		t.Errorf("spear health and stats disagree on %d tasks running:\n%s\n%s", tasks, health, stats)
	}
}

func healthOf(t *testing.T, n *node) *pb.GetHealthResponse {
	t.Helper()
	h, err := n.client.GetHealth(ctx(t, callTimeout), &pb.GetHealthRequest{IncludeDetails: true})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// connectJSON calls a method with Connect JSON and returns the HTTP status
// and the body.
func connectJSON(t *testing.T, n *node, method, body string) (int, map[string]any) {
	t.Helper()
	st, _, m := httpCall(t, n, http.MethodPost, "/spearlet.FunctionService/"+method, "application/json", body)
	return st, m
}

// wantHTTPError checks an HTTP error answer: its status, a JSON body with
// the Connect code and a message, and the error code in the header.
func wantHTTPError(t *testing.T, n *node, method, path, ctype, body string, status int, code, errorCode string) {
	t.Helper()
	st, h, m := httpCall(t, n, method, path, ctype, body)
	if st != status || m["code"] != code || fmt.Sprint(m["message"]) == "" || h.Get("Spear-Error-Code") != errorCode ||
		!strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		t.Errorf("%s %s: HTTP %d %v (%s %q); want %d %s %s", method, path, st, m, h.Get("Content-Type"), h.Get("Spear-Error-Code"), status, code, errorCode)
	}
}

func httpCall(t *testing.T, n *node, method, path, ctype, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t, callTimeout), method, n.httpURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: HTTP %d, body %q is not a JSON object", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, resp.Header, m
}

// TestContractExecFailures: an artifact that passed registration and then
// cannot be executed (its interpreter gone, not a program any more, or not
// executable) fails its execution with a declared code, sandbox off and on.
func TestContractExecFailures(t *testing.T) {
	for _, sb := range []string{"off", "auto"} {
		t.Run("sandbox-"+sb, func(t *testing.T) {
			n := startNode(t, "", nodeOpts{sandbox: sb, noSamples: true})
			for _, tc := range []struct {
				name    string
				breakIt func(interp string) error
				code    string
			}{
				{"interpreter removed", os.Remove, "ARTIFACT_NO_INTERPRETER"},
				{"interpreter not a program", func(p string) error { return os.WriteFile(p, []byte{0, 1, 2, 3}, 0o755) }, "ARTIFACT_NOT_RUNNABLE"},
				{"interpreter not executable", func(p string) error { return os.Chmod(p, 0o644) }, "ARTIFACT_NOT_EXECUTABLE"},
			} {
				t.Run(tc.name, func(t *testing.T) { testExecFailure(t, n, tc.breakIt, tc.code) })
			}
		})
	}
}

// testExecFailure registers a script whose interpreter is a copy of
// /bin/sh, runs it, breaks the interpreter and checks that sync and async
// runs fail with code.
func testExecFailure(t *testing.T, n *node, breakIt func(string) error, code string) {
	// A directory every sandbox slot can reach (a test's TempDir is the
	// test's own).
	dir, err := os.MkdirTemp("", "spear-contract-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	interp := filepath.Join(dir, "interp")
	if err := os.WriteFile(interp, sh, 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!"+interp+"\necho ran\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("contract-exec-%d", time.Now().UnixNano())
	n.registerProcess(t, id, script)
	if out := output(t, n.invoke(t, invocation(t, id, pb.ExecutionMode_EXECUTION_MODE_SYNC, nil)).GetResult().GetResult()); out != "ran\n" {
		t.Fatalf("before the interpreter broke: output %q", out)
	}
	if err := breakIt(interp); err != nil {
		t.Fatal(err)
	}
	// The node may check the artifact again before the run (when its
	// cache of the task was refreshed): then the call, sync or async, is
	// refused with the code, else the execution fails with it.
	for _, mode := range []pb.ExecutionMode{pb.ExecutionMode_EXECUTION_MODE_SYNC, pb.ExecutionMode_EXECUTION_MODE_ASYNC} {
		var tr metadata.MD
		resp, err := n.client.InvokeFunction(ctx(t, callTimeout), invocation(t, id, mode, nil), grpc.Trailer(&tr))
		switch {
		case err != nil:
			if e := asRPCError(t, err, tr); e.code != codes.FailedPrecondition || e.reason != code || !strings.Contains(e.msg, script) {
				t.Errorf("%v: refused with %+v; want FAILED_PRECONDITION %s naming the script", mode, e, code)
			}
		case mode == pb.ExecutionMode_EXECUTION_MODE_ASYNC:
			wantFailedWith(t, "async", n.waitFinal(t, resp.GetExecutionId(), finishBound).GetResult(), code, script)
		default:
			wantFailedWith(t, "sync", resp.GetResult(), code, script)
		}
	}
}

func wantFailedWith(t *testing.T, what string, res *pb.ExecutionResult, code, mention string) {
	t.Helper()
	if res.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_FAILED || res.GetErrorCode() != code || !strings.Contains(res.GetErrorMessage(), mention) {
		t.Errorf("%s: %v %s %q; want FAILED %s naming %s", what, res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage(), code, mention)
	}
}

package e2e

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/auth"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/testwait"
)

// authCall makes one call of a method and returns its error and trailer.
type authCall func(ctx context.Context) (error, metadata.MD)

// everyMethod calls each FunctionService method with a plausible request,
// through the generated client with default options.
func everyMethod(c pb.FunctionServiceClient) map[string]authCall {
	unary := func(f func(ctx context.Context, o grpc.CallOption) error) authCall {
		return func(ctx context.Context) (error, metadata.MD) {
			var md metadata.MD
			err := f(ctx, grpc.Trailer(&md))
			return err, md
		}
	}
	stream := func(open func(ctx context.Context) (grpc.ClientStream, error)) authCall {
		return func(ctx context.Context) (error, metadata.MD) {
			s, err := open(ctx)
			if err != nil {
				return err, nil
			}
			for err == nil {
				err = s.RecvMsg(new(pb.ExecutionEvent))
			}
			return err, s.Trailer()
		}
	}
	upper := &pb.InvokeFunctionRequest{InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK, TaskId: "upper",
		ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC, Parameters: []*pb.FunctionParameter{{Name: "input", Value: pb.BytesAny([]byte("hi"))}}}
	spec := &pb.ArtifactSpec{ArtifactType: "process", Location: filepath.Join(moduleRoot(), "samples", "process", "echo.sh")}
	graph := &pb.InvokeGraphRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC, Parameters: upper.Parameters,
		Steps: []*pb.GraphStep{{Id: "a", TaskId: "upper"}, {Id: "b", TaskId: "upper", DependsOn: []string{"a"}}}}
	return map[string]authCall{
		"InvokeFunction": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.InvokeFunction(ctx, upper, o)
			return err
		}),
		"GetExecutionStatus": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.GetExecutionStatus(ctx, &pb.GetExecutionStatusRequest{ExecutionId: "x"}, o)
			return err
		}),
		"CancelExecution": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.CancelExecution(ctx, &pb.CancelExecutionRequest{ExecutionId: "x"}, o)
			return err
		}),
		"StreamFunction": stream(func(ctx context.Context) (grpc.ClientStream, error) { return c.StreamFunction(ctx, upper) }),
		"InvokeGraph": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.InvokeGraph(ctx, graph, o)
			return err
		}),
		"StreamGraph": stream(func(ctx context.Context) (grpc.ClientStream, error) { return c.StreamGraph(ctx, graph) }),
		"ListTasks": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.ListTasks(ctx, &pb.ListTasksRequest{}, o)
			return err
		}),
		"GetTask": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.GetTask(ctx, &pb.GetTaskRequest{TaskId: "upper"}, o)
			return err
		}),
		"DeleteTask": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.DeleteTask(ctx, &pb.DeleteTaskRequest{TaskId: "no-such-task"}, o)
			return err
		}),
		"ListExecutions": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.ListExecutions(ctx, &pb.ListExecutionsRequest{}, o)
			return err
		}),
		"GetHealth": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.GetHealth(ctx, &pb.GetHealthRequest{}, o)
			return err
		}),
		"GetStats": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.GetStats(ctx, &pb.GetStatsRequest{}, o)
			return err
		}),
		"RegisterTask": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.RegisterTask(ctx, &pb.RegisterTaskRequest{TaskId: "auth-e2e", ArtifactSpec: spec}, o)
			return err
		}),
		"UpdateTaskLimits": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.UpdateTaskLimits(ctx, &pb.UpdateTaskLimitsRequest{TaskId: "upper"}, o)
			return err
		}),
		"RequeueExecution": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.RequeueExecution(ctx, &pb.RequeueExecutionRequest{ExecutionId: "x"}, o)
			return err
		}),
		"WatchExecution": stream(func(ctx context.Context) (grpc.ClientStream, error) {
			return c.WatchExecution(ctx, &pb.WatchExecutionRequest{ExecutionId: "x"})
		}),
		"UploadArtifact": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.UploadArtifact(ctx, &pb.UploadArtifactRequest{Name: "a", Content: []byte("x")}, o)
			return err
		}),
		"UpdateTask": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.UpdateTask(ctx, &pb.UpdateTaskRequest{TaskId: "upper"}, o)
			return err
		}),
		"ListNodes": unary(func(ctx context.Context, o grpc.CallOption) error {
			_, err := c.ListNodes(ctx, &pb.ListNodesRequest{}, o)
			return err
		}),
	}
}

// createToken makes a token with the real CLI, as a user would, and
// returns it (the last line of its output).
func createToken(t *testing.T, file, scope, name string, extra ...string) string {
	t.Helper()
	out := runToolEnv(t, withoutSpearEnv(os.Environ()), spearBin(t),
		append([]string{"token", "create", "--file", file, "--scope", scope, "--name", name}, extra...)...)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	tok := lines[len(lines)-1]
	if !auth.WellFormed(tok) {
		t.Fatalf("token create printed %q last", tok)
	}
	return tok
}

func withToken(ctx context.Context, tok string) context.Context {
	if tok == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// wantAuthError checks a refused call: its gRPC code and error code, in
// the ErrorInfo detail and the trailer alike.
func wantAuthError(t *testing.T, what string, err error, md metadata.MD, want errdefs.Code) {
	t.Helper()
	c := codes.Unauthenticated
	if want == errdefs.AuthScope {
		c = codes.PermissionDenied
	}
	if err == nil {
		t.Errorf("%s: succeeded, want %v", what, want)
		return
	}
	e := asRPCError(t, err, md)
	if e.code != c || e.reason != want.String() || e.trailer != want.String() {
		t.Errorf("%s: %v (reason %q, trailer %q), want %v %v", what, err, e.reason, e.trailer, c, want)
	}
}

// TestAuth runs a node with a token file and checks who may do what, on
// gRPC, Connect, REST and /metrics, with the real CLI and grpcurl; then
// that the node's whole log holds none of the tokens.
func TestAuth(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	toks := map[string]string{}
	for _, sc := range []string{"read", "invoke", "admin"} {
		toks[sc] = createToken(t, file, sc, "e2e-"+sc)
	}
	n := startNode(t, "", nodeOpts{args: []string{"--token-file", file}})
	calls := everyMethod(n.client)
	sd := pb.FunctionService_ServiceDesc
	if len(calls) != len(sd.Methods)+len(sd.Streams) {
		t.Fatalf("the test calls %d methods, the service has %d", len(calls), len(sd.Methods)+len(sd.Streams))
	}
	t.Run("no token", func(t *testing.T) {
		for name, call := range calls {
			err, md := call(ctx(t, callTimeout))
			wantAuthError(t, name, err, md, errdefs.AuthRequired)
		}
	})
	t.Run("scopes", func(t *testing.T) {
		for _, tt := range []struct{ token, method string }{
			{"read", "InvokeFunction"}, {"read", "StreamFunction"}, {"read", "RegisterTask"}, {"read", "CancelExecution"},
			{"invoke", "RegisterTask"}, {"invoke", "DeleteTask"}, {"invoke", "UploadArtifact"}, {"invoke", "UpdateTask"},
		} {
			err, md := calls[tt.method](withToken(ctx(t, callTimeout), toks[tt.token]))
			wantAuthError(t, tt.token+" "+tt.method, err, md, errdefs.AuthScope)
		}
		for _, tt := range []struct{ token, method string }{
			{"read", "ListTasks"}, {"read", "GetHealth"}, {"read", "GetTask"}, {"invoke", "InvokeFunction"}, {"invoke", "ListExecutions"},
			{"admin", "RegisterTask"}, {"admin", "InvokeFunction"},
		} {
			if err, _ := calls[tt.method](withToken(ctx(t, callTimeout), toks[tt.token])); err != nil {
				t.Errorf("%s %s: %v", tt.token, tt.method, err)
			}
		}
		admin := withToken(ctx(t, callTimeout), toks["admin"])
		if resp, err := n.client.DeleteTask(admin, &pb.DeleteTaskRequest{TaskId: "auth-e2e"}); err != nil || !resp.GetSuccess() {
			t.Errorf("admin DeleteTask: %v %v", resp, err)
		}
	})
	t.Run("http", func(t *testing.T) { testAuthHTTP(t, n, toks) })
	t.Run("tools", func(t *testing.T) { testAuthTools(t, n, toks) })
	var more []string
	t.Run("revoke and expiry", func(t *testing.T) { more = testAuthRevoke(t, n, file) })

	if err := n.stop(); err != nil {
		t.Fatalf("stopping the node: %v", err)
	}
	log := n.log.String()
	for _, tok := range more {
		toks[tok] = tok
	}
	if len(toks) != 5 || !strings.Contains(log, "token file reloaded") {
		t.Fatalf("%d tokens made; log:\n%s", len(toks), tail(log, 20))
	}
	for name, tok := range toks {
		// The token, or any third of it.
		for i := 0; i+16 <= len(tok); i += 16 {
			if strings.Contains(log, tok[i:i+16]) {
				t.Errorf("the node's log holds token %s", name)
			}
		}
	}
}

func testAuthHTTP(t *testing.T, n *node, toks map[string]string) {
	tests := []struct {
		name, method, path, token, body string
		status                          int
		code                            errdefs.Code
	}{
		{"status", "GET", "/api/v1/executions/x/status", "", "", 401, errdefs.AuthRequired},
		{"cancel", "POST", "/api/v1/executions/x/cancel", "", "", 401, errdefs.AuthRequired},
		{"output", "GET", "/api/v1/executions/x/output", "", "", 401, errdefs.AuthRequired},
		{"upload put", "PUT", "/api/v1/artifacts?name=a", "", "x", 401, errdefs.AuthRequired},
		{"upload post", "POST", "/api/v1/artifacts?name=a", "", "x", 401, errdefs.AuthRequired},
		{"metrics", "GET", "/metrics", "", "", 401, errdefs.AuthRequired},
		{"connect", "POST", "/spearlet.FunctionService/ListTasks", "", "{}", 401, errdefs.AuthRequired},
		{"connect invoke with read", "POST", "/spearlet.FunctionService/InvokeFunction", toks["read"], `{"taskId":"upper"}`, 403, errdefs.AuthScope},
		{"upload with invoke", "PUT", "/api/v1/artifacts?name=a", toks["invoke"], "x", 403, errdefs.AuthScope},
		{"cancel with read", "POST", "/api/v1/executions/x/cancel", toks["read"], "", 403, errdefs.AuthScope},
		{"malformed", "GET", "/metrics", "spear_x", "", 401, errdefs.AuthInvalid},
		{"token query", "GET", "/metrics?token=" + toks["admin"], "", "", 401, errdefs.AuthInvalid},
		{"access_token query", "GET", "/api/v1/executions/x/status?access_token=" + toks["read"], toks["read"], "", 401, errdefs.AuthInvalid},
		{"metrics with read", "GET", "/metrics", toks["read"], "", 200, errdefs.Code{}},
		{"status with read", "GET", "/api/v1/executions/x/status", toks["read"], "", 404, errdefs.Code{}},
		{"healthz stays open", "GET", "/healthz", "", "", 200, errdefs.Code{}},
	}
	for _, tt := range tests {
		req, err := http.NewRequestWithContext(ctx(t, callTimeout), tt.method, n.httpURL()+tt.path, strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(tt.path, "/spearlet") {
			req.Header.Set("Content-Type", "application/json")
		}
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: HTTP %d (%s), want %d", tt.name, resp.StatusCode, body.String(), tt.status)
			continue
		}
		if tt.code != (errdefs.Code{}) && (resp.Header.Get(errdefs.Trailer) != tt.code.String() || !strings.Contains(body.String(), `"reason":"`+tt.code.String()+`"`)) {
			t.Errorf("%s: header %q, body %s; want %v", tt.name, resp.Header.Get(errdefs.Trailer), body.String(), tt.code)
		}
	}
}

// testAuthTools: the CLI with SPEAR_TOKEN (and without), grpcurl with
// -H 'authorization: Bearer ...', curl with -H.
func testAuthTools(t *testing.T, n *node, toks map[string]string) {
	env := withoutSpearEnv(os.Environ())
	out := runToolEnv(t, append(env, "SPEAR_TOKEN="+toks["invoke"]), spearBin(t), "--addr", n.addr, "invoke", "upper", "--input", "hi")
	if strings.TrimSpace(string(out)) != "HI" {
		t.Errorf("spear invoke with SPEAR_TOKEN: %q", out)
	}
	runToolEnv(t, env, spearBin(t), "--addr", n.addr, "--token", toks["read"], "task", "list")
	cmd := exec.CommandContext(ctx(t, toolTimeout), spearBin(t), "--addr", n.addr, "task", "list")
	cmd.Env = env
	b, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 4 || !strings.Contains(string(b), "AUTH_REQUIRED") {
		t.Errorf("spear task list without a token: exit %d, %s", code, b)
	}
	cmd = exec.CommandContext(ctx(t, toolTimeout), spearBin(t), "--addr", n.addr, "task", "create", "x", "--location", filepath.Join(moduleRoot(), "samples", "process", "echo.sh"))
	cmd.Env = append(env, "SPEAR_TOKEN="+toks["invoke"])
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "AUTH_SCOPE") || strings.Contains(string(b), toks["invoke"]) {
		t.Errorf("spear task create with an invoke token: %v, %s", err, b)
	}

	grpcurl := findTool(t, "grpcurl")
	base := []string{"-plaintext", "-import-path", filepath.Join(moduleRoot(), "api", "spearlet"), "-proto", "spearlet.proto", "-max-time", "60"}
	out = runTool(t, "", grpcurl, append(base, "-H", "authorization: Bearer "+toks["read"], "-d", `{}`, n.addr, "spearlet.FunctionService/ListTasks")...)
	if !strings.Contains(string(out), `"upper"`) {
		t.Errorf("grpcurl ListTasks with a read token: %s", out)
	}
	cmd = exec.CommandContext(ctx(t, toolTimeout), grpcurl, append(base, "-d", `{}`, n.addr, "spearlet.FunctionService/ListTasks")...)
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "Unauthenticated") {
		t.Errorf("grpcurl without a token: %v, %s", err, b)
	}
	out = runTool(t, "", findTool(t, "curl"), "-sS", "--fail", "-H", "Authorization: Bearer "+toks["read"], n.httpURL()+"/metrics")
	if !strings.Contains(string(out), "spear_running_executions") {
		t.Errorf("curl /metrics with a read token: %.200s", out)
	}
}

// testAuthRevoke: a token revoked in the file stops working without a
// restart; an expired one is AUTH_INVALID.
func testAuthRevoke(t *testing.T, n *node, file string) (created []string) {
	tok := createToken(t, file, "invoke", "e2e-temp")
	created = append(created, tok)
	list := func(tok string) error {
		_, err := n.client.ListTasks(withToken(ctx(t, callTimeout), tok), &pb.ListTasksRequest{})
		return err
	}
	testwait.Until(t, "a new token is accepted", func() bool { return list(tok) == nil })
	runToolEnv(t, withoutSpearEnv(os.Environ()), spearBin(t), "token", "revoke", "--file", file, "e2e-temp")
	testwait.Until(t, "a revoked token is refused", func() bool { return errdefs.AuthInvalid.String() == errCode(list(tok)) })

	short := createToken(t, file, "read", "e2e-short", "--expires", "1s")
	created = append(created, short)
	testwait.Until(t, "an expired token is refused", func() bool { return errdefs.AuthInvalid.String() == errCode(list(short)) })
	var md metadata.MD
	_, err := n.client.ListTasks(withToken(ctx(t, callTimeout), short), &pb.ListTasksRequest{}, grpc.Trailer(&md))
	wantAuthError(t, "expired token", err, md, errdefs.AuthInvalid)
	return created
}

// errCode is the ErrorInfo reason of a call's error ("" for none).
func errCode(err error) string {
	if err == nil {
		return ""
	}
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

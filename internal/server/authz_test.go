package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/auth"
	"github.com/spear-go/spear/internal/errdefs"
)

// wantScopes is what each FunctionService method needs, as issue #14
// lists it: a method added to the contract fails here until it is given
// a scope in Scopes.
var wantScopes = map[string]auth.Scope{
	"RegisterTask": auth.Admin, "DeleteTask": auth.Admin, "UpdateTask": auth.Admin,
	"UpdateTaskLimits": auth.Admin, "UploadArtifact": auth.Admin, "RequeueExecution": auth.Admin,
	"InvokeFunction": auth.Invoke, "StreamFunction": auth.Invoke, "CancelExecution": auth.Invoke,
	"InvokeGraph": auth.Invoke, "StreamGraph": auth.Invoke,
	"GetExecutionStatus": auth.Read, "ListExecutions": auth.Read, "WatchExecution": auth.Read,
	"ListTasks": auth.Read, "GetTask": auth.Read, "GetHealth": auth.Read, "GetStats": auth.Read, "ListNodes": auth.Read,
}

// methods are the FunctionService's full method names and whether each
// is a stream.
func methods() map[string]bool {
	out := map[string]bool{}
	sd := pb.FunctionService_ServiceDesc
	for _, m := range sd.Methods {
		out["/"+sd.ServiceName+"/"+m.MethodName] = false
	}
	for _, s := range sd.Streams {
		out["/"+sd.ServiceName+"/"+s.StreamName] = true
	}
	return out
}

func TestScopesCoverEveryMethod(t *testing.T) {
	table := Scopes(false)
	for m := range methods() {
		name := m[strings.LastIndex(m, "/")+1:]
		got, ok := table[m]
		if !ok || got != wantScopes[name] {
			t.Errorf("%s needs %v (in the table: %v), want %v", m, got, ok, wantScopes[name])
		}
	}
	z := &authz{scopes: table}
	for _, name := range []string{"/spearlet.FunctionService/Nope", "/debug/pprof/", "", "GET /nothing"} {
		if got := z.need(name); got != auth.Admin {
			t.Errorf("%q needs %v, want admin", name, got)
		}
	}
	if Scopes(false)[routeMetrics] != auth.Read || Scopes(true)[routeMetrics] != auth.Public {
		t.Error("/metrics: read, or public with --metrics-public")
	}
}

// testKeys makes a token of each scope.
func testKeys(t *testing.T) (*auth.Keys, map[auth.Scope]string) {
	t.Helper()
	toks := map[auth.Scope]string{}
	var entries []auth.Entry
	for _, sc := range auth.TokenScopes() {
		tok, err := auth.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		toks[sc] = tok
		entries = append(entries, auth.Entry{Name: sc.String(), Scope: sc.String(), SHA256: auth.Hash(tok), Created: time.Now()})
	}
	return auth.NewKeys(entries, nil), toks
}

// callGRPC calls a method with an empty request (nothing is decoded before
// the check) and returns its status and error code trailer.
func callGRPC(ctx context.Context, cc *grpc.ClientConn, method string, stream bool, token string) (*status.Status, string) {
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	var trailer metadata.MD
	var err error
	if stream {
		var s grpc.ClientStream
		s, err = cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method)
		if err == nil {
			_ = s.SendMsg(&emptypb.Empty{})
			_ = s.CloseSend()
			err = s.RecvMsg(&emptypb.Empty{})
			trailer = s.Trailer()
		}
	} else {
		err = cc.Invoke(ctx, method, &emptypb.Empty{}, &emptypb.Empty{}, grpc.Trailer(&trailer))
	}
	st := status.Convert(err)
	code := ""
	if v := trailer.Get(ErrorCodeTrailer); len(v) > 0 {
		code = v[0]
	}
	return st, code
}

func TestAuthzGRPC(t *testing.T) {
	keys, toks := testKeys(t)
	e := newEnv(t, envOptions{auth: keys})
	cc, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testCtx(t)
	for m, stream := range methods() {
		need := Scopes(false)[m]
		for _, have := range append([]auth.Scope{0}, auth.TokenScopes()...) {
			st, code := callGRPC(ctx, cc, m, stream, toks[have])
			var want errdefs.Code
			switch {
			case have == 0:
				want = errdefs.AuthRequired
			case !have.Allows(need):
				want = errdefs.AuthScope
			}
			if want == (errdefs.Code{}) {
				if st.Code() == codes.Unauthenticated || st.Code() == codes.PermissionDenied {
					t.Errorf("%s with %v token: refused: %v", m, have, st.Err())
				}
				continue
			}
			if code != want.String() || reason(st) != want.String() || st.Code() != grpcCode(want.Class()) {
				t.Errorf("%s with %v token: %v (trailer %q, detail %q), want %v", m, have, st.Err(), code, reason(st), want)
			}
			if have != 0 && strings.Contains(st.Message(), toks[have][6:]) {
				t.Errorf("%s: the error repeats the token", m)
			}
		}
	}
	// The health service stays open: probes need no secret.
	if st, _ := callGRPC(ctx, cc, "/grpc.health.v1.Health/Check", false, ""); st.Code() != codes.OK {
		t.Errorf("health check without a token: %v", st.Err())
	}
}

func reason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	return ""
}

func TestAuthzHTTP(t *testing.T) {
	keys, toks := testKeys(t)
	e := newEnv(t, envOptions{auth: keys})
	tests := []struct {
		name, method, path, token, body string
		status                          int
		code                            errdefs.Code
	}{
		{"connect no token", "POST", "/spearlet.FunctionService/ListTasks", "", "{}", 401, errdefs.AuthRequired},
		{"connect read", "POST", "/spearlet.FunctionService/ListTasks", toks[auth.Read], "{}", 200, errdefs.Code{}},
		{"connect read invokes", "POST", "/spearlet.FunctionService/InvokeFunction", toks[auth.Read], `{"taskId":"echo"}`, 403, errdefs.AuthScope},
		{"connect invoke registers", "POST", "/spearlet.FunctionService/RegisterTask", toks[auth.Invoke], "{}", 403, errdefs.AuthScope},
		{"connect unknown method", "POST", "/spearlet.FunctionService/Nope", toks[auth.Invoke], "{}", 403, errdefs.AuthScope},
		{"status no token", "GET", "/api/v1/executions/x/status", "", "", 401, errdefs.AuthRequired},
		{"status read", "GET", "/api/v1/executions/x/status", toks[auth.Read], "", 404, errdefs.Code{}},
		{"cancel read", "POST", "/api/v1/executions/x/cancel", toks[auth.Read], "", 403, errdefs.AuthScope},
		{"output no token", "GET", "/api/v1/executions/x/output", "", "", 401, errdefs.AuthRequired},
		{"upload invoke", "PUT", "/api/v1/artifacts?name=a", toks[auth.Invoke], "x", 403, errdefs.AuthScope},
		{"upload admin", "PUT", "/api/v1/artifacts?name=spear_a", toks[auth.Admin], "x", 201, errdefs.Code{}},
		{"metrics no token", "GET", "/metrics", "", "", 401, errdefs.AuthRequired},
		{"metrics read", "GET", "/metrics", toks[auth.Read], "", 200, errdefs.Code{}},
		{"malformed", "GET", "/metrics", "spear_short", "", 401, errdefs.AuthInvalid},
		{"token in query", "GET", "/metrics?access_token=" + toks[auth.Read], "", "", 401, errdefs.AuthInvalid},
		{"token in query too", "GET", "/metrics?x=" + toks[auth.Read], toks[auth.Read], "", 401, errdefs.AuthInvalid},
		{"healthz open", "GET", "/healthz", "", "", 200, errdefs.Code{}},
		{"pprof needs admin", "GET", "/debug/pprof/", toks[auth.Invoke], "", 403, errdefs.AuthScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(testCtx(t), tt.method, e.base+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.body != "" && strings.HasPrefix(tt.path, "/spearlet") {
				req.Header.Set("Content-Type", "application/json")
			}
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, body := httpDo(t, req)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tt.status)
			}
			if tt.code == (errdefs.Code{}) {
				return
			}
			if got := resp.Header.Get(ErrorCodeTrailer); got != tt.code.String() || reasonOf(jsonMap(t, body)) != tt.code.String() {
				t.Fatalf("error code %q / body %s, want %v", got, body, tt.code)
			}
			for _, tok := range toks {
				if strings.Contains(string(body), tok) {
					t.Fatal("the answer repeats a token")
				}
			}
		})
	}
}

package server

import (
	"context"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/auth"
	"github.com/spear-go/spear/internal/errdefs"
)

// Scopes is the one table of what each call needs: gRPC and Connect
// methods by full method name (/package.Service/Method, the same on both),
// plain HTTP routes by their ServeMux pattern. Anything not in it — an
// unknown method, pprof, a path that matches nothing — needs admin.
//
// Invoke includes read (scopes are ordered, see package auth): a token
// that may invoke may also read every execution and task, not just its
// own. The gRPC health service and reflection are public (a probe must
// not need a secret; the contract is public), and so are /healthz and the
// console's static pages.
func Scopes(metricsPublic bool) map[string]auth.Scope {
	metrics := auth.Read
	if metricsPublic {
		metrics = auth.Public
	}
	return map[string]auth.Scope{
		pb.FunctionService_RegisterTask_FullMethodName:     auth.Admin,
		pb.FunctionService_DeleteTask_FullMethodName:       auth.Admin,
		pb.FunctionService_UpdateTask_FullMethodName:       auth.Admin,
		pb.FunctionService_UpdateTaskLimits_FullMethodName: auth.Admin,
		pb.FunctionService_UploadArtifact_FullMethodName:   auth.Admin,
		pb.FunctionService_RequeueExecution_FullMethodName: auth.Admin,
		routeUploadPut:  auth.Admin,
		routeUploadPost: auth.Admin,

		pb.FunctionService_InvokeFunction_FullMethodName:  auth.Invoke,
		pb.FunctionService_StreamFunction_FullMethodName:  auth.Invoke, // also attach
		pb.FunctionService_InvokeGraph_FullMethodName:     auth.Invoke,
		pb.FunctionService_StreamGraph_FullMethodName:     auth.Invoke,
		pb.FunctionService_CancelExecution_FullMethodName: auth.Invoke,
		routeCancel: auth.Invoke,

		pb.FunctionService_GetExecutionStatus_FullMethodName: auth.Read,
		pb.FunctionService_ListExecutions_FullMethodName:     auth.Read,
		pb.FunctionService_WatchExecution_FullMethodName:     auth.Read,
		pb.FunctionService_ListTasks_FullMethodName:          auth.Read,
		pb.FunctionService_GetTask_FullMethodName:            auth.Read,
		pb.FunctionService_GetHealth_FullMethodName:          auth.Read,
		pb.FunctionService_GetStats_FullMethodName:           auth.Read,
		pb.FunctionService_ListNodes_FullMethodName:          auth.Read,
		routeStatus:            auth.Read,
		routeOutput:            auth.Read,
		routeMetrics:           metrics,
		routeConsoleOverview:   auth.Read,
		routeConsoleExecutions: auth.Read,
		routeConsoleExecution:  auth.Read,

		healthpb.Health_Check_FullMethodName:                                   auth.Public,
		healthpb.Health_Watch_FullMethodName:                                   auth.Public,
		healthpb.Health_List_FullMethodName:                                    auth.Public,
		reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      auth.Public,
		reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: auth.Public,
		routeHealthz: auth.Public,
		// The console's pages hold no data: they ask for a token and
		// send it with each call.
		routeConsole: auth.Public,
	}
}

// authz enforces Scopes with the node's tokens, the same way on gRPC
// (interceptors) and on HTTP (Connect, gRPC-Web and the plain routes: a
// middleware in front of them all). Without keys every call passes.
type authz struct {
	keys   *auth.Keys
	scopes map[string]auth.Scope
	// connectPrefix is the path under which Connect serves the methods.
	connectPrefix string
}

// need is the scope a call needs: admin unless the table says otherwise.
func (z *authz) need(name string) auth.Scope {
	if s, ok := z.scopes[name]; ok {
		return s
	}
	return auth.Admin
}

func (z *authz) check(values []string, name string) error {
	if z.keys == nil {
		return nil
	}
	_, err := z.keys.Authorize(values, z.need(name))
	return err
}

func (z *authz) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if err := z.check(md.Get("authorization"), info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (z *authz) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	if err := z.check(md.Get("authorization"), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// handler checks every HTTP request before mux sees it (before a body is
// read), answering a refusal in the request's own protocol (Connect,
// gRPC-Web, or a Connect JSON error for the plain routes). A token in the
// URL query is refused: URLs end up in logs and histories.
func (z *authz) handler(mux *http.ServeMux) http.Handler {
	if z.keys == nil {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tokenInQuery(r) {
			writeError(w, r, errdefs.AuthInvalid.New("a token in the URL query is refused: send it as 'authorization: Bearer <token>', and revoke it, since the URL may have been logged"))
			return
		}
		_, pattern := mux.Handler(r)
		if pattern == z.connectPrefix {
			pattern = r.URL.Path
		}
		if err := z.check(r.Header.Values("Authorization"), pattern); err != nil {
			writeError(w, r, err)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// tokenInQuery says whether a request's URL query carries what looks
// like a token: a token= or access_token= parameter, or a value holding
// a well-formed token.
func tokenInQuery(r *http.Request) bool {
	if r.URL.RawQuery == "" {
		return false
	}
	for k, vs := range r.URL.Query() {
		if strings.EqualFold(k, "token") || strings.EqualFold(k, "access_token") {
			return true
		}
		for _, v := range vs {
			if auth.ContainsToken(v) {
				return true
			}
		}
	}
	return false
}

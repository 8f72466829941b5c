package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/api/spearlet/spearletconnect"
	"github.com/spear-go/spear/internal/errdefs"
)

// errorCase is one domain error and how every transport must present it.
type errorCase struct {
	name string
	err  error
	code codes.Code
	ec   string // error_code
}

func errorCases() []errorCase {
	return []errorCase{
		{"invalid argument coded", errdefs.InvalidLimit.New("bad"), codes.InvalidArgument, "INVALID_LIMIT"},
		{"invalid argument class", fmt.Errorf("x: %w", errdefs.ErrInvalidArgument), codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"not found coded", errdefs.TaskNotFound.New("no task"), codes.NotFound, "TASK_NOT_FOUND"},
		{"not found class", fmt.Errorf("x: %w", errdefs.ErrNotFound), codes.NotFound, "NOT_FOUND"},
		{"already exists", errdefs.TaskExists.New("dup"), codes.AlreadyExists, "TASK_EXISTS"},
		{"already exists class", fmt.Errorf("x: %w", errdefs.ErrAlreadyExists), codes.AlreadyExists, "ALREADY_EXISTS"},
		{"failed precondition", errdefs.TaskBusy.New("busy"), codes.FailedPrecondition, "TASK_BUSY"},
		{"failed precondition class", fmt.Errorf("x: %w", errdefs.ErrFailedPrecondition), codes.FailedPrecondition, "FAILED_PRECONDITION"},
		{"resource exhausted", errdefs.QueueFull.New("full"), codes.ResourceExhausted, "QUEUE_FULL"},
		{"resource exhausted class", fmt.Errorf("x: %w", errdefs.ErrResourceExhausted), codes.ResourceExhausted, "RESOURCE_EXHAUSTED"},
		{"unavailable", fmt.Errorf("store: %w", errdefs.ErrUnavailable), codes.Unavailable, "UNAVAILABLE"},
		{"unimplemented", fmt.Errorf("x: %w", errdefs.ErrUnimplemented), codes.Unimplemented, "UNIMPLEMENTED"},
		{"internal", fmt.Errorf("x: %w", errdefs.ErrInternal), codes.Internal, "INTERNAL"},
		{"plain error", errors.New("boom"), codes.Internal, "INTERNAL"},
		{"deadline", fmt.Errorf("run: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "DEADLINE_EXCEEDED"},
		{"canceled", fmt.Errorf("run: %w", context.Canceled), codes.Canceled, "CANCELLED"},
	}
}

func reasonOfStatus(t *testing.T, st *status.Status) string {
	t.Helper()
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if info.Domain != ErrorDomain {
				t.Errorf("ErrorInfo domain = %q, want %q", info.Domain, ErrorDomain)
			}
			return info.Reason
		}
	}
	t.Errorf("status %v has no ErrorInfo detail", st)
	return ""
}

func reasonOfConnect(t *testing.T, ce *connect.Error) string {
	t.Helper()
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			t.Errorf("detail %s: %v", d.Type(), err)
			continue
		}
		if info, ok := v.(*errdetails.ErrorInfo); ok {
			if info.Domain != ErrorDomain {
				t.Errorf("ErrorInfo domain = %q, want %q", info.Domain, ErrorDomain)
			}
			return info.Reason
		}
	}
	t.Errorf("connect error %v has no ErrorInfo detail", ce)
	return ""
}

func TestErrorMappingUnit(t *testing.T) {
	for _, tc := range errorCases() {
		t.Run(tc.name, func(t *testing.T) {
			if got := grpcCode(tc.err); got != tc.code {
				t.Errorf("grpcCode = %v, want %v", got, tc.code)
			}
			if got := errorCode(tc.err); got != tc.ec {
				t.Errorf("errorCode = %q, want %q", got, tc.ec)
			}
			st, ok := status.FromError(toGRPC(tc.err))
			if !ok {
				t.Fatalf("toGRPC did not give a status error")
			}
			if st.Code() != tc.code || st.Message() != tc.err.Error() {
				t.Errorf("toGRPC = %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.err.Error())
			}
			if r := reasonOfStatus(t, st); r != tc.ec {
				t.Errorf("ErrorInfo reason = %q, want %q", r, tc.ec)
			}
			var ce *connect.Error
			if !errors.As(toConnect(tc.err), &ce) {
				t.Fatalf("toConnect did not give a connect error")
			}
			if ce.Code() != connect.Code(tc.code) || ce.Message() != tc.err.Error() {
				t.Errorf("toConnect = %v %q, want %v", ce.Code(), ce.Message(), tc.code)
			}
			if got := ce.Meta().Get(ErrorCodeTrailer); got != tc.ec {
				t.Errorf("connect meta %s = %q, want %q", ErrorCodeTrailer, got, tc.ec)
			}
			if r := reasonOfConnect(t, ce); r != tc.ec {
				t.Errorf("connect ErrorInfo reason = %q, want %q", r, tc.ec)
			}
		})
	}
}

func TestErrorMappingPassThrough(t *testing.T) {
	if toGRPC(nil) != nil || toConnect(nil) != nil {
		t.Fatal("nil error converted to non-nil")
	}
	se := status.Error(codes.Aborted, "aborted")
	if got := toGRPC(se); got != se {
		t.Errorf("toGRPC changed a status error: %v", got)
	}
	ce := connect.NewError(connect.CodeAborted, errors.New("aborted"))
	if got := toConnect(ce); got != error(ce) {
		t.Errorf("toConnect changed a connect error: %v", got)
	}
	if got := toConnect(fmt.Errorf("wrapped: %w", ce)); connect.CodeOf(got) != connect.CodeAborted {
		t.Errorf("toConnect of a wrapped connect error: code %v", connect.CodeOf(got))
	}
}

// grpcErrorServer and connectErrorServer fail GetHealth and StreamFunction
// with the error named by the request's "case" metadata or header.
type grpcErrorServer struct {
	pb.UnimplementedFunctionServiceServer
	cases map[string]error
}

func caseOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("case"); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (g grpcErrorServer) GetHealth(ctx context.Context, _ *pb.GetHealthRequest) (*pb.GetHealthResponse, error) {
	return nil, g.cases[caseOf(ctx)]
}

func (g grpcErrorServer) StreamFunction(_ *pb.InvokeFunctionRequest, ss grpc.ServerStreamingServer[pb.StreamExecutionResult]) error {
	return g.cases[caseOf(ss.Context())]
}

type connectErrorServer struct {
	spearletconnect.UnimplementedFunctionServiceHandler
	cases map[string]error
}

func connectCase(ctx context.Context) string {
	if ci, ok := connect.CallInfoForHandlerContext(ctx); ok {
		return ci.RequestHeader().Get("case")
	}
	return ""
}

func (c connectErrorServer) GetHealth(ctx context.Context, _ *pb.GetHealthRequest) (*pb.GetHealthResponse, error) {
	return nil, c.cases[connectCase(ctx)]
}

func (c connectErrorServer) StreamFunction(ctx context.Context, _ *pb.InvokeFunctionRequest, _ *connect.ServerStream[pb.StreamExecutionResult]) error {
	return c.cases[connectCase(ctx)]
}

// TestErrorMappingOverTheWire checks that each error class reaches gRPC and
// Connect clients with its code, ErrorInfo detail and error-code trailer,
// through the same interceptors the Server installs.
func TestErrorMappingOverTheWire(t *testing.T) {
	cases := map[string]error{}
	for _, tc := range errorCases() {
		cases[tc.name] = tc.err
	}
	g := grpc.NewServer(grpc.ChainUnaryInterceptor(unaryErrors), grpc.ChainStreamInterceptor(streamErrors))
	pb.RegisterFunctionServiceServer(g, grpcErrorServer{cases: cases})
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(gl) }()
	t.Cleanup(g.Stop)

	mux := http.NewServeMux()
	mux.Handle(spearletconnect.NewFunctionServiceHandler(connectErrorServer{cases: cases}, connect.WithInterceptors(connectErrors())))
	hs := &http.Server{Handler: mux}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.Serve(hl) }()
	t.Cleanup(func() { _ = hs.Close() })

	cc, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	gc := pb.NewFunctionServiceClient(cc)
	clients := map[string]spearletconnect.FunctionServiceClient{
		"connect":      spearletconnect.NewFunctionServiceClient(http.DefaultClient, "http://"+hl.Addr().String()),
		"connect-json": spearletconnect.NewFunctionServiceClient(http.DefaultClient, "http://"+hl.Addr().String(), connect.WithProtoJSON()),
		"grpc-web":     spearletconnect.NewFunctionServiceClient(http.DefaultClient, "http://"+hl.Addr().String(), connect.WithGRPCWeb()),
	}

	for _, tc := range errorCases() {
		t.Run(tc.name, func(t *testing.T) {
			ctx := metadata.AppendToOutgoingContext(testCtx(t), "case", tc.name)
			checkStatus := func(kind string, err error, tr metadata.MD) {
				t.Helper()
				st, ok := status.FromError(err)
				if !ok {
					t.Fatalf("%s: not a status error: %v", kind, err)
				}
				if st.Code() != tc.code {
					t.Errorf("%s: code %v, want %v", kind, st.Code(), tc.code)
				}
				if r := reasonOfStatus(t, st); r != tc.ec {
					t.Errorf("%s: ErrorInfo reason %q, want %q", kind, r, tc.ec)
				}
				if got := tr.Get(ErrorCodeTrailer); len(got) != 1 || got[0] != tc.ec {
					t.Errorf("%s: trailer %s = %q, want %q", kind, ErrorCodeTrailer, got, tc.ec)
				}
			}
			var tr metadata.MD
			_, err := gc.GetHealth(ctx, &pb.GetHealthRequest{}, grpc.Trailer(&tr))
			checkStatus("grpc unary", err, tr)

			stream, err := gc.StreamFunction(ctx, &pb.InvokeFunctionRequest{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			checkStatus("grpc stream", err, stream.Trailer())

			for name, c := range clients {
				cctx, ci := connect.NewClientContext(testCtx(t))
				ci.RequestHeader().Set("case", tc.name)
				_, err := c.GetHealth(cctx, &pb.GetHealthRequest{})
				checkConnect(t, name+" unary", err, tc)

				sctx, si := connect.NewClientContext(testCtx(t))
				si.RequestHeader().Set("case", tc.name)
				ss, err := c.StreamFunction(sctx, &pb.InvokeFunctionRequest{})
				if err != nil {
					checkConnect(t, name+" stream", err, tc)
					continue
				}
				for ss.Receive() {
					t.Errorf("%s stream: unexpected message", name)
				}
				checkConnect(t, name+" stream", ss.Err(), tc)
				ss.Close()
			}
		})
	}
}

func checkConnect(t *testing.T, kind string, err error, tc errorCase) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%s: not a connect error: %v", kind, err)
	}
	if ce.Code() != connect.Code(tc.code) {
		t.Errorf("%s: code %v, want %v", kind, ce.Code(), connect.Code(tc.code))
	}
	if r := reasonOfConnect(t, ce); r != tc.ec {
		t.Errorf("%s: ErrorInfo reason %q, want %q", kind, r, tc.ec)
	}
	if got := ce.Meta().Get(ErrorCodeTrailer); got != tc.ec {
		t.Errorf("%s: meta %s = %q, want %q", kind, ErrorCodeTrailer, got, tc.ec)
	}
}

package server

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/grpc"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/api/spearlet/spearletconnect"
)

// grpcService adapts Service to grpc-go's server interface: unary methods
// are Service's own; errors are converted by interceptors.
type grpcService struct {
	*Service
}

var _ pb.FunctionServiceServer = grpcService{}

func (g grpcService) WatchExecution(req *pb.WatchExecutionRequest, stream grpc.ServerStreamingServer[pb.ExecutionEvent]) error {
	return g.watch(stream.Context(), req, stream.Send)
}

func (g grpcService) StreamFunction(req *pb.InvokeFunctionRequest, stream grpc.ServerStreamingServer[pb.StreamExecutionResult]) error {
	return g.streamTo(stream.Context(), req, stream.Send)
}

// connectService adapts Service to Connect's handler interface (Connect,
// gRPC-Web and JSON over HTTP/1.1).
type connectService struct{ *Service }

var _ spearletconnect.FunctionServiceHandler = connectService{}

func (c connectService) WatchExecution(ctx context.Context, req *pb.WatchExecutionRequest, stream *connect.ServerStream[pb.ExecutionEvent]) error {
	return c.watch(ctx, req, stream.Send)
}

func (c connectService) StreamFunction(ctx context.Context, req *pb.InvokeFunctionRequest, stream *connect.ServerStream[pb.StreamExecutionResult]) error {
	return c.streamTo(ctx, req, stream.Send)
}

func (g grpcService) StreamGraph(req *pb.InvokeGraphRequest, stream grpc.ServerStreamingServer[pb.StreamExecutionResult]) error {
	return g.streamGraph(stream.Context(), req, stream.Send)
}

func (c connectService) StreamGraph(ctx context.Context, req *pb.InvokeGraphRequest, stream *connect.ServerStream[pb.StreamExecutionResult]) error {
	return c.streamGraph(ctx, req, stream.Send)
}

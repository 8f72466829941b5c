package server

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spear-go/spear/internal/errdefs"
)

// ErrorCodeTrailer is the gRPC trailer (and HTTP header) carrying the
// stable error_code of a failed call, beside the google.rpc.ErrorInfo detail
// (reason = error code, domain = ErrorDomain).
const (
	ErrorCodeTrailer = errdefs.Trailer
	ErrorDomain      = "spear.dev"
)

// grpcCode is the one mapping from error classes to gRPC codes.
func grpcCode(err error) codes.Code {
	switch {
	case errors.Is(err, errdefs.ErrInvalidArgument):
		return codes.InvalidArgument
	case errors.Is(err, errdefs.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, errdefs.ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, errdefs.ErrFailedPrecondition):
		return codes.FailedPrecondition
	case errors.Is(err, errdefs.ErrResourceExhausted):
		return codes.ResourceExhausted
	case errors.Is(err, errdefs.ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, errdefs.ErrUnimplemented):
		return codes.Unimplemented
	case errors.Is(err, errdefs.ErrUnauthenticated):
		return codes.Unauthenticated
	case errors.Is(err, errdefs.ErrPermissionDenied):
		return codes.PermissionDenied
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	default:
		return codes.Internal
	}
}

// errorCode is the stable error_code of err, consistent with grpcCode: a
// domain code or class first, then the context errors.
func errorCode(err error) string {
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				return info.Reason
			}
		}
		return codeOfStatus(st.Code())
	}
	return errdefs.CodeOf(err)
}

// codeOfStatus is the error code of a gRPC status without an ErrorInfo
// (one grpc-go made itself): the class code grpcCode maps to it.
func codeOfStatus(c codes.Code) string {
	for _, k := range errdefs.ClassCodes() {
		if grpcCode(k.Class()) == c {
			return k.String()
		}
	}
	return errdefs.Internal.String()
}

// toGRPC converts a domain error to a gRPC status error with the error code
// as an ErrorInfo detail.
func toGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	st := status.New(grpcCode(err), err.Error())
	if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: errorCode(err), Domain: ErrorDomain}); derr == nil {
		st = d
	}
	return st.Err()
}

// toConnect converts a domain error to a Connect error with the same code
// and detail.
func toConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	e := connect.NewError(connect.Code(grpcCode(err)), errors.New(err.Error()))
	if d, derr := connect.NewErrorDetail(&errdetails.ErrorInfo{Reason: errorCode(err), Domain: ErrorDomain}); derr == nil {
		e.AddDetail(d)
	}
	e.Meta().Set(ErrorCodeTrailer, errorCode(err))
	return e
}

func unaryErrors(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	if err != nil {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(ErrorCodeTrailer, errorCode(err)))
		return nil, toGRPC(err)
	}
	return resp, nil
}

func streamErrors(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	err := h(srv, ss)
	if err != nil {
		ss.SetTrailer(metadata.Pairs(ErrorCodeTrailer, errorCode(err)))
		return toGRPC(err)
	}
	return nil
}

// connectErrors converts errors of Connect handlers.
func connectErrors() connect.Interceptor { return errorInterceptor{} }

type errorInterceptor struct{}

func (errorInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		return resp, toConnect(err)
	}
}

func (errorInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (errorInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return toConnect(next(ctx, conn))
	}
}

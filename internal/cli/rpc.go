package cli

import (
	"context"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/spear-go/spear/internal/errdefs"
)

// errorCodeTrailer is the trailer metadata key under which the node sends
// the stable error_code of a failed RPC.
const errorCodeTrailer = errdefs.Trailer

// rpcError is a gRPC error status plus the node's stable error_code, if it
// sent one. Printed as "<message> (<code>)"; app.explain words it for
// the user.
type rpcError struct {
	st        *status.Status
	errorCode string
}

func (e *rpcError) Error() string { return withCode(e.st.Message(), e.errorCode) }

// newRPCError converts an error returned by a gRPC call into an *rpcError,
// taking the error_code from trailer (key spear-error-code) or, failing
// that, from the status details.
func newRPCError(err error, trailer metadata.MD) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	e := &rpcError{st: st}
	if v := trailer.Get(errorCodeTrailer); len(v) > 0 && v[0] != "" {
		e.errorCode = v[0]
	} else {
		e.errorCode = errorCodeFromDetails(st)
	}
	return e
}

// errorCodeFromDetails finds an error code in a status's details: the
// reason of a google.rpc.ErrorInfo, or a string field named error_code of
// any other detail message.
func errorCodeFromDetails(st *status.Status) string {
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if d.GetReason() != "" {
				return d.GetReason()
			}
			if c := d.GetMetadata()["error_code"]; c != "" {
				return c
			}
		case interface{ ProtoReflect() protoreflect.Message }:
			m := d.ProtoReflect()
			if f := m.Descriptor().Fields().ByName("error_code"); f != nil && f.Kind() == protoreflect.StringKind && !f.IsList() {
				if c := m.Get(f).String(); c != "" {
					return c
				}
			}
		}
	}
	return ""
}

// call runs one unary RPC with timeout (none when <= 0) and converts its
// error into an *rpcError.
func call[Req, Resp any](ctx context.Context, timeout time.Duration,
	fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var trailer metadata.MD
	resp, err := fn(ctx, req, grpc.Trailer(&trailer))
	if err != nil {
		return resp, newRPCError(err, trailer)
	}
	return resp, nil
}

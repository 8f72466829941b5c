// Package errdefs defines Spear's error classes. Code anywhere wraps one of
// these (fmt.Errorf("task %q: %w", id, errdefs.ErrNotFound)) and checks them
// with errors.Is; the server converts them to gRPC codes and stable
// error_code strings in one place.
//
// A Coded error carries a more specific stable error_code (QUEUE_FULL,
// CHECKSUM_MISMATCH, ...) on top of its class; every code is declared once,
// with its class, in codes.go (QueueFull.New("...")).
package errdefs

import "errors"

// Error classes. Each maps to one gRPC code at the server edge.
var (
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrResourceExhausted  = errors.New("resource exhausted")
	ErrUnavailable        = errors.New("unavailable")
	ErrUnimplemented      = errors.New("unimplemented")
	ErrInternal           = errors.New("internal error")
	ErrUnauthenticated    = errors.New("unauthenticated")
	ErrPermissionDenied   = errors.New("permission denied")
)

// Trailer is the gRPC trailer (and HTTP header) that carries a failed
// call's error code, beside its google.rpc.ErrorInfo detail.
const Trailer = "spear-error-code"

// Coded is an error with a stable machine-readable code. Unwrap returns the
// class, so errors.Is(err, ErrNotFound) still works.
type Coded struct {
	Code  string // stable, e.g. "TASK_NOT_FOUND"
	Class error  // one of the Err* classes
	Msg   string
}

func (e *Coded) Error() string { return e.Msg }

func (e *Coded) Unwrap() error { return e.Class }

// CodeOf returns the stable error code of err: the Coded code if err wraps
// one, otherwise the code of its class.
func CodeOf(err error) string {
	if err == nil {
		return ""
	}
	var c *Coded
	if errors.As(err, &c) {
		return c.Code
	}
	for _, code := range ClassCodes() {
		if errors.Is(err, code.class) {
			return code.name
		}
	}
	return Internal.name
}

// ClassCodes are the codes of the error classes, Internal last.
func ClassCodes() []Code {
	return []Code{InvalidArgument, NotFound, AlreadyExists, FailedPrecondition,
		ResourceExhausted, Unavailable, Unimplemented, Unauthenticated, PermissionDenied,
		DeadlineExceeded, Cancelled, Internal}
}

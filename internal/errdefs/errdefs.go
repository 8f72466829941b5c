// Package errdefs defines Spear's error classes. Code anywhere wraps one of
// these (fmt.Errorf("task %q: %w", id, errdefs.ErrNotFound)) and checks them
// with errors.Is; the server converts them to gRPC codes and stable
// error_code strings in one place.
//
// A Coded error carries a more specific stable error_code (QUEUE_FULL,
// CHECKSUM_MISMATCH, ...) on top of its class.
package errdefs

import (
	"errors"
	"fmt"
)

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
)

// Coded is an error with a stable machine-readable code. Unwrap returns the
// class, so errors.Is(err, ErrNotFound) still works.
type Coded struct {
	Code  string // stable, e.g. "TASK_NOT_FOUND"
	Class error  // one of the Err* classes
	Msg   string
}

func (e *Coded) Error() string { return e.Msg }

func (e *Coded) Unwrap() error { return e.Class }

// New returns a Coded error of class with a stable code.
func New(class error, code, format string, args ...any) error {
	return &Coded{Code: code, Class: class, Msg: fmt.Sprintf(format, args...)}
}

// Code returns the stable error code of err: the Coded code if err wraps
// one, otherwise a code derived from its class.
func Code(err error) string {
	if err == nil {
		return ""
	}
	var c *Coded
	if errors.As(err, &c) {
		return c.Code
	}
	switch {
	case errors.Is(err, ErrInvalidArgument):
		return "INVALID_ARGUMENT"
	case errors.Is(err, ErrNotFound):
		return "NOT_FOUND"
	case errors.Is(err, ErrAlreadyExists):
		return "ALREADY_EXISTS"
	case errors.Is(err, ErrFailedPrecondition):
		return "FAILED_PRECONDITION"
	case errors.Is(err, ErrResourceExhausted):
		return "RESOURCE_EXHAUSTED"
	case errors.Is(err, ErrUnavailable):
		return "UNAVAILABLE"
	case errors.Is(err, ErrUnimplemented):
		return "UNIMPLEMENTED"
	default:
		return "INTERNAL"
	}
}

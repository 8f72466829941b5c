package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"

	"github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

// Exit codes. Which outcome gets which is decided in this file only: by
// error class (classExits) and by execution status (outcome).
const (
	// ExitOK: the command succeeded; for executions, status COMPLETED.
	ExitOK = 0
	// ExitFailed: the execution FAILED, or the node refused the operation.
	ExitFailed = 1
	// ExitUsage: the command line or the request is invalid.
	ExitUsage = 2
	// ExitNotFound: the task, execution, artifact or token does not exist.
	ExitNotFound = 3
	// ExitDenied: no valid credentials, or they do not allow the call.
	ExitDenied = 4
	// ExitUnavailable: the node cannot be reached, is unavailable, or did
	// not answer before the deadline.
	ExitUnavailable = 5
	// ExitTimeout: the execution ended with status TIMEOUT.
	ExitTimeout = 124
	// ExitCancelled: the execution was CANCELLED, or the CLI was interrupted.
	ExitCancelled = 130
)

// classExit is one row of the exit-code table: an error class, the gRPC
// code a node answers it with, and the CLI's exit code.
type classExit struct {
	class errdefs.Code
	grpc  codes.Code
	exit  int
}

// classExits is the one table from error classes to exit codes. An error
// from the node is looked up by its gRPC code, one of the CLI's own by its
// errdefs class; anything else (gRPC codes no class has) exits ExitFailed.
func classExits() []classExit {
	return []classExit{
		{errdefs.InvalidArgument, codes.InvalidArgument, ExitUsage},
		{errdefs.NotFound, codes.NotFound, ExitNotFound},
		{errdefs.AlreadyExists, codes.AlreadyExists, ExitFailed},
		{errdefs.FailedPrecondition, codes.FailedPrecondition, ExitFailed},
		{errdefs.ResourceExhausted, codes.ResourceExhausted, ExitFailed},
		{errdefs.Unavailable, codes.Unavailable, ExitUnavailable},
		{errdefs.Unimplemented, codes.Unimplemented, ExitFailed},
		{errdefs.Unauthenticated, codes.Unauthenticated, ExitDenied},
		{errdefs.PermissionDenied, codes.PermissionDenied, ExitDenied},
		{errdefs.DeadlineExceeded, codes.DeadlineExceeded, ExitUnavailable},
		{errdefs.Cancelled, codes.Canceled, ExitCancelled},
		{errdefs.Internal, codes.Internal, ExitFailed},
	}
}

// outcome maps an execution status to the CLI exit code; terminal is false
// for statuses that are not final.
func outcome(s spearlet.ExecutionStatus) (code int, terminal bool) {
	switch s {
	case spearlet.ExecutionStatus_EXECUTION_STATUS_COMPLETED:
		return ExitOK, true
	case spearlet.ExecutionStatus_EXECUTION_STATUS_FAILED:
		return ExitFailed, true
	case spearlet.ExecutionStatus_EXECUTION_STATUS_TIMEOUT:
		return ExitTimeout, true
	case spearlet.ExecutionStatus_EXECUTION_STATUS_CANCELLED:
		return ExitCancelled, true
	default:
		return ExitFailed, false
	}
}

// exitMeanings documents the exit codes, in order (spear --help and
// README's exit-code table, which a test keeps equal).
func exitMeanings() [][2]string {
	return [][2]string{
		{"0", "success (execution COMPLETED)"},
		{"1", "execution FAILED, or the node refused the operation (already exists, failed precondition, resource exhausted, unimplemented, internal)"},
		{"2", "usage error: the command line or the request is invalid (invalid argument)"},
		{"3", "not found: no such task, execution, artifact or token"},
		{"4", "not allowed: no valid credentials, or they do not allow it (unauthenticated, permission denied)"},
		{"5", "the node cannot be reached, is unavailable, or did not answer in time (unavailable, deadline exceeded)"},
		{"124", "execution TIMEOUT"},
		{"130", "execution CANCELLED, or the CLI was interrupted"},
	}
}

// exitCodesHelp is the exit-code table for --help texts.
func exitCodesHelp() string {
	var b strings.Builder
	b.WriteString("Exit codes:")
	for _, m := range exitMeanings() {
		fmt.Fprintf(&b, "\n  %-4s %s", m[0], m[1])
	}
	return b.String()
}

// classOfGRPC is the error class a node answers with gRPC code c;
// ok is false for a code no class has.
func classOfGRPC(c codes.Code) (errdefs.Code, bool) {
	for _, r := range classExits() {
		if r.grpc == c {
			return r.class, true
		}
	}
	var none errdefs.Code
	return none, false
}

// exitOf is the exit code of an error of class (ExitFailed for none).
func exitOf(class errdefs.Code) int {
	for _, r := range classExits() {
		if r.class == class {
			return r.exit
		}
	}
	return ExitFailed
}

// classOf is the errdefs class err wraps, if any.
func classOf(err error) (errdefs.Code, bool) {
	for _, r := range classExits() {
		if errors.Is(err, r.class.Class()) {
			return r.class, true
		}
	}
	var none errdefs.Code
	return none, false
}

// cliError ends a command. msg, when set, is printed to stderr as
// "error: msg (CODE)"; class decides the exit code (classExits).
type cliError struct {
	class errdefs.Code
	code  string // the error code shown in parentheses; "" shows none
	msg   string
}

func (e *cliError) Error() string { return withCode(e.msg, e.code) }

// outcomeError ends a command with the exit code of an execution's final
// status, which was reported already.
type outcomeError struct{ status spearlet.ExecutionStatus }

func (e *outcomeError) Error() string { return "execution " + statusName(e.status) }

// outcomeExit returns the error that ends a command with the exit code of
// final status s (nil for COMPLETED).
func outcomeExit(s spearlet.ExecutionStatus) error {
	if code, _ := outcome(s); code == ExitOK {
		return nil
	}
	return &outcomeError{status: s}
}

// usageErrorf: the command line or the request is invalid.
func usageErrorf(format string, args ...any) error {
	return &cliError{class: errdefs.InvalidArgument, msg: fmt.Sprintf(format, args...)}
}

// failf: the node refused the operation, or a step of it failed.
func failf(format string, args ...any) error {
	return &cliError{class: errdefs.FailedPrecondition, msg: fmt.Sprintf(format, args...)}
}

// notFound: what the command names does not exist. msg is the node's
// message, if it sent one; else the one formatted.
func notFound(code errdefs.Code, msg, format string, args ...any) error {
	return &cliError{class: errdefs.NotFound, code: code.String(), msg: cmp.Or(msg, fmt.Sprintf(format, args...))}
}

// taskNotFound: the node answered found=false for task id.
func taskNotFound(id, msg string) error {
	return notFound(errdefs.TaskNotFound, msg, "task %q not found", id)
}

// executionNotFound: the node answered found=false for execution id.
func executionNotFound(id, msg string) error {
	return notFound(errdefs.ExecutionNotFound, msg, "execution %q not found", id)
}

// withCode appends " (CODE)" to msg when code is set.
func withCode(msg, code string) string {
	if code == "" {
		return msg
	}
	return msg + " (" + code + ")"
}

// exitCode reports err on stderr (one line) and maps it to an exit code.
func (a *app) exitCode(ctx context.Context, err error) int {
	if err == nil {
		return ExitOK
	}
	var oe *outcomeError
	if errors.As(err, &oe) {
		code, _ := outcome(oe.status)
		return code
	}
	msg, class := a.explain(ctx, err)
	if msg != "" {
		fmt.Fprintln(a.stderr, "error: "+msg)
	}
	return exitOf(class)
}

// explain is the message that reports err and err's class.
func (a *app) explain(ctx context.Context, err error) (string, errdefs.Code) {
	var ce *cliError
	var re *rpcError
	switch {
	case errors.As(err, &ce):
		return ce.Error(), ce.class
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.As(err, &re) && re.st.Code() == codes.Canceled):
		return "interrupted", errdefs.Cancelled
	case errors.As(err, &re):
		return a.explainRPC(re)
	}
	class, ok := classOf(err)
	if !ok && !a.started { // cobra's: unknown flags and commands, arguments
		class, ok = errdefs.InvalidArgument, true
	}
	msg := err.Error()
	if ok {
		msg = strings.TrimSuffix(msg, ": "+class.Class().Error())
	}
	return msg, class
}

// explainRPC is the message and class of an RPC error. Those without an
// error code did not come from a node's service: the node could not be
// reached, or did not answer in time.
func (a *app) explainRPC(re *rpcError) (string, errdefs.Code) {
	class, known := classOfGRPC(re.st.Code())
	code := re.errorCode
	switch {
	case code != "":
	case re.st.Code() == codes.Unavailable:
		return a.unreachable(re.st.Message()), class
	case re.st.Code() == codes.DeadlineExceeded:
		return fmt.Sprintf("no answer from the Spear node at %s in time (deadline exceeded); is it running? --timeout sets how long to wait",
			a.target()), class
	case known:
		code = class.String()
	default:
		code = "gRPC " + re.st.Code().String()
	}
	return withCode(re.st.Message(), code), class
}

// unreachable says the node at the address could not be reached, why,
// and, when nothing answered there, how to start one.
func (a *app) unreachable(grpcMsg string) string {
	msg := fmt.Sprintf("cannot reach a Spear node at %s (%s)", a.target(), dialReason(grpcMsg))
	if strings.Contains(grpcMsg, "dialing") || strings.Contains(grpcMsg, "resolver") {
		msg += "; start one with 'spear serve' or 'make run', or set --addr / " + addrEnv
	}
	return msg
}

// dialReason is the heart of a gRPC connection error: "connection
// refused" for `connection error: desc = "transport: Error while dialing:
// dial tcp 127.0.0.1:1: connect: connection refused"`.
func dialReason(msg string) string {
	if _, desc, ok := strings.Cut(msg, `desc = "`); ok {
		msg = strings.TrimSuffix(desc, `"`)
	}
	msg = strings.TrimPrefix(msg, "transport: ")
	msg = strings.TrimPrefix(msg, "Error while dialing: ")
	if strings.HasPrefix(msg, "dial ") {
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
	}
	return msg
}

package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestExitTableCoversEveryClass: every error class has one row, and
// README's class table has the row's gRPC code and CLI exit code.
func TestExitTableCoversEveryClass(t *testing.T) {
	type row struct{ grpc, exit string }
	inREADME := map[string]row{}
	re := regexp.MustCompile(`(?m)^\| ([a-z ]+) \| ([A-Z_]+) \| \d{3} \| (\d+) \|$`)
	for _, m := range re.FindAllStringSubmatch(readme(t), -1) {
		inREADME[m[1]] = row{m[2], m[3]}
	}
	rows := map[errdefs.Code]int{}
	for _, r := range classExits() {
		rows[r.class]++
		words := strings.ToLower(strings.ReplaceAll(r.class.String(), "_", " "))
		got, ok := inREADME[words]
		switch {
		case !ok:
			t.Errorf("README's class table lacks %q (with a CLI exit column)", words)
		case strings.ReplaceAll(strings.ToLower(got.grpc), "_", "") != strings.ToLower(r.grpc.String()):
			t.Errorf("README says %s is gRPC %s, the table %s", words, got.grpc, r.grpc)
		case got.exit != strconv.Itoa(r.exit):
			t.Errorf("README says %s exits %s, the table %d", words, got.exit, r.exit)
		}
		delete(inREADME, words)
	}
	for words := range inREADME {
		t.Errorf("README's class table lists %q, which the exit table lacks", words)
	}
	for _, c := range errdefs.ClassCodes() {
		if rows[c] != 1 {
			t.Errorf("class %s has %d rows in the exit table, want 1", c, rows[c])
		}
	}
}

// TestREADMEExitCodes: README's exit-code table is exitMeanings, and every
// exit code the tables give is documented.
func TestREADMEExitCodes(t *testing.T) {
	re := regexp.MustCompile(`(?m)^\| (\d+) \| (.+) \|$`)
	var got [][2]string
	for _, m := range re.FindAllStringSubmatch(readme(t), -1) {
		got = append(got, [2]string{m[1], m[2]})
	}
	want := exitMeanings()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("README's exit-code table:\n%q\nwant (exitMeanings):\n%q", got, want)
	}
	documented := map[string]bool{}
	for _, m := range want {
		documented[m[0]] = true
	}
	codes := []int{}
	for _, r := range classExits() {
		codes = append(codes, r.exit)
	}
	for _, s := range []spearlet.ExecutionStatus{stCompleted, stFailed, stTimeout, stCancelled} {
		c, _ := outcome(s)
		codes = append(codes, c)
	}
	for _, c := range codes {
		if !documented[strconv.Itoa(c)] {
			t.Errorf("exit code %d is not documented", c)
		}
	}
}

// TestExitCodes: the exit code and message of each kind of failure.
func TestExitCodes(t *testing.T) {
	rpc := func(c codes.Code, msg, code string) error {
		var md metadata.MD
		if code != "" {
			md = metadata.Pairs(errdefs.Trailer, code)
		}
		return newRPCError(status.Error(c, msg), md)
	}
	const addr = "127.0.0.1:1"
	for _, tc := range []struct {
		name    string
		err     error
		started bool
		code    int
		msg     string
	}{
		{"success", nil, true, ExitOK, ""},
		{"usage", usageErrorf("--limit must not be negative"), true, ExitUsage, "error: --limit must not be negative\n"},
		{"cobra's errors before the command starts", fmt.Errorf(`unknown flag: --nope`), false, ExitUsage, "error: unknown flag: --nope\n"},
		{"found=false", taskNotFound("x", ""), true, ExitNotFound, "error: task \"x\" not found (TASK_NOT_FOUND)\n"},
		{"found=false with the node's message", executionNotFound("x", "gone"), true, ExitNotFound, "error: gone (EXECUTION_NOT_FOUND)\n"},
		{"NOT_FOUND", rpc(codes.NotFound, `task "x" not found`, "TASK_NOT_FOUND"), true, ExitNotFound, "error: task \"x\" not found (TASK_NOT_FOUND)\n"},
		{"INVALID_ARGUMENT", rpc(codes.InvalidArgument, "bad id", "INVALID_EXECUTION_ID"), true, ExitUsage, "error: bad id (INVALID_EXECUTION_ID)\n"},
		{"refused", rpc(codes.FailedPrecondition, "busy", "TASK_BUSY"), true, ExitFailed, "error: busy (TASK_BUSY)\n"},
		{"exhausted", rpc(codes.ResourceExhausted, "full", "QUEUE_FULL"), true, ExitFailed, "error: full (QUEUE_FULL)\n"},
		{"exists", rpc(codes.AlreadyExists, "taken", ""), true, ExitFailed, "error: taken (ALREADY_EXISTS)\n"},
		{"internal", rpc(codes.Internal, "bug", ""), true, ExitFailed, "error: bug (INTERNAL)\n"},
		{"a gRPC code without a class", rpc(codes.DataLoss, "lost", ""), true, ExitFailed, "error: lost (gRPC DataLoss)\n"},
		{"unauthenticated", rpc(codes.Unauthenticated, "no token", "AUTH_REQUIRED"), true, ExitDenied, "error: no token (AUTH_REQUIRED)\n"},
		{"permission denied", rpc(codes.PermissionDenied, "scope", "AUTH_SCOPE"), true, ExitDenied, "error: scope (AUTH_SCOPE)\n"},
		{"node unavailable", rpc(codes.Unavailable, "stopping", "NODE_SHUTTING_DOWN"), true, ExitUnavailable, "error: stopping (NODE_SHUTTING_DOWN)\n"},
		{"connection refused", rpc(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`, ""),
			true, ExitUnavailable, "error: cannot reach a Spear node at 127.0.0.1:1 (connection refused); start one with 'spear serve' or 'make run', or set --addr / SPEAR_ADDR\n"},
		{"tls", rpc(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: tls: bad certificate"`, ""),
			true, ExitUnavailable, "error: cannot reach a Spear node at 127.0.0.1:1 (authentication handshake failed: tls: bad certificate)\n"},
		{"no answer in time", rpc(codes.DeadlineExceeded, "context deadline exceeded", ""), true, ExitUnavailable,
			"error: no answer from the Spear node at 127.0.0.1:1 in time (deadline exceeded); is it running? --timeout sets how long to wait\n"},
		{"cancelled by the node", rpc(codes.Canceled, "cancelled", "CANCELLED"), true, ExitCancelled, "error: cancelled (CANCELLED)\n"},
		{"a local error of a class", fmt.Errorf("token name %q: want letters: %w", "a b", errdefs.ErrInvalidArgument), true, ExitUsage,
			"error: token name \"a b\": want letters\n"},
		{"a local error of no class", fmt.Errorf("disk on fire"), true, ExitFailed, "error: disk on fire\n"},
		{"unhealthy: said on stdout", &cliError{class: errdefs.FailedPrecondition}, true, ExitFailed, ""},
		{"execution completed", outcomeExit(stCompleted), true, ExitOK, ""},
		{"execution failed", outcomeExit(stFailed), true, ExitFailed, ""},
		{"execution timed out", outcomeExit(stTimeout), true, ExitTimeout, ""},
		{"execution cancelled", outcomeExit(stCancelled), true, ExitCancelled, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var errb bytes.Buffer
			a := newApp(nil, io.Discard, &errb, nil)
			a.addr, a.started = addr, tc.started
			if code := a.exitCode(context.Background(), tc.err); code != tc.code || errb.String() != tc.msg {
				t.Errorf("exit %d, stderr %q; want %d, %q", code, errb.String(), tc.code, tc.msg)
			}
		})
	}
}

// TestInterruptedExits130: an RPC cut because the CLI was interrupted.
func TestInterruptedExits130(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var errb bytes.Buffer
	a := newApp(nil, io.Discard, &errb, nil)
	for _, err := range []error{context.Canceled, newRPCError(status.Error(codes.Canceled, "context canceled"), nil)} {
		errb.Reset()
		if code := a.exitCode(ctx, err); code != ExitCancelled || errb.String() != "error: interrupted\n" {
			t.Errorf("%v: exit %d, stderr %q", err, code, errb.String())
		}
	}
}

func TestDialTarget(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1", "127.0.0.1:50052"},
		{"localhost", "localhost:50052"},
		{"node.example.com", "node.example.com:50052"},
		{"127.0.0.1:7000", "127.0.0.1:7000"},
		{"127.0.0.1:", "127.0.0.1:50052"},
		{"http://127.0.0.1", "127.0.0.1:50052"},
		{"https://node.example.com/", "node.example.com:50052"},
		{"grpcs://node.example.com:443", "node.example.com:443"},
		{"::1", "[::1]:50052"},
		{"[::1]", "[::1]:50052"},
		{"[::1]:7000", "[::1]:7000"},
		{"unix:///run/spear.sock", "unix:///run/spear.sock"},
		{"dns:///node.example.com:7000", "dns:///node.example.com:7000"},
	} {
		if got, err := dialTarget(tc.addr); err != nil || got != tc.want {
			t.Errorf("dialTarget(%q) = %q, %v; want %q", tc.addr, got, err, tc.want)
		}
	}
	if _, err := dialTarget("http://"); err == nil {
		t.Error("an empty address was accepted")
	}
}

// TestWriteRawEndsLinesOnTerminals: on a terminal, output without a final
// newline gets one; piped, the bytes are exact.
func TestWriteRawEndsLinesOnTerminals(t *testing.T) {
	for _, tc := range []struct {
		out  string
		tty  bool
		want string
	}{
		{"HELLO", true, "HELLO\n"},
		{"HELLO", false, "HELLO"},
		{"HELLO\n", true, "HELLO\n"},
		{"a\nb", true, "a\nb\n"},
		{"", true, ""},
		{"", false, ""},
	} {
		var out bytes.Buffer
		a := newApp(nil, &out, io.Discard, nil)
		a.isTerminal = func(w io.Writer) bool { return tc.tty && w == &out }
		err := a.writeRaw(func(w io.Writer) error {
			for _, c := range []byte(tc.out) { // in pieces, as chunks arrive
				if _, err := w.Write([]byte{c}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil || out.String() != tc.want {
			t.Errorf("%q (tty %v): wrote %q, %v; want %q", tc.out, tc.tty, out.String(), err, tc.want)
		}
	}
}

// TestOutputNewlineOnTerminal: invoke (sync, stream) on a terminal ends the
// output's line; piped it does not.
func TestOutputNewlineOnTerminal(t *testing.T) {
	streamHello := func(f *fakeServer) {
		f.stream = func(_ *spearlet.InvokeFunctionRequest, s grpc.ServerStreamingServer[spearlet.StreamExecutionResult]) error {
			_ = s.Send(&spearlet.StreamExecutionResult{ChunkData: spearlet.BytesAny([]byte("HEL"))})
			return s.Send(&spearlet.StreamExecutionResult{ChunkData: spearlet.BytesAny([]byte("LO")), IsFinal: true, Status: stCompleted})
		}
	}
	runCases(t, []cliCase{
		{name: "sync tty", args: []string{"invoke", "t1"}, tty: true, setup: func(f *fakeServer) { f.invoke = syncReply(stCompleted, "HELLO", "", "") },
			stdout: str("HELLO\n")},
		{name: "sync piped", args: []string{"invoke", "t1"}, setup: func(f *fakeServer) { f.invoke = syncReply(stCompleted, "HELLO", "", "") },
			stdout: str("HELLO")},
		{name: "failed tty", args: []string{"invoke", "t1"}, tty: true, code: ExitFailed,
			setup:  func(f *fakeServer) { f.invoke = syncReply(stFailed, "partial", "FUNCTION_FAILED", "exit 3") },
			stdout: str("partial\n"), stderrHas: []string{"error: execution exec-1 failed: exit 3 (FUNCTION_FAILED)\n"}},
		{name: "stream tty", args: []string{"invoke", "t1", "-m", "stream"}, tty: true, setup: streamHello, stdout: str("HELLO\n")},
		{name: "stream piped", args: []string{"invoke", "t1", "-m", "stream"}, setup: streamHello, stdout: str("HELLO")},
	})
}

// TestFailureSaidOnce: an execution's failure line does not repeat the
// status as its message.
func TestFailureSaidOnce(t *testing.T) {
	runCases(t, []cliCase{
		{name: "cancelled", args: []string{"invoke", "t1"}, code: ExitCancelled,
			setup:     func(f *fakeServer) { f.invoke = syncReply(stCancelled, "", "CANCELLED", "cancelled") },
			stderrHas: []string{"error: execution exec-1 was cancelled (CANCELLED)\n"}},
		{name: "cancelled with a reason", args: []string{"invoke", "t1"}, code: ExitCancelled,
			setup:     func(f *fakeServer) { f.invoke = syncReply(stCancelled, "", "CANCELLED", "cancelled: no longer needed") },
			stderrHas: []string{"error: execution exec-1 was cancelled: no longer needed (CANCELLED)\n"}},
	})
}

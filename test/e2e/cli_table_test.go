package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// cliCase is one run of the real spear binary: its arguments and the exit
// code and output wanted. The patterns match the whole of stdout and
// stderr; {addr} in args and patterns is the node's address.
type cliCase struct {
	name   string
	args   []string
	code   int
	stdout string // regexp; "" is empty
	stderr string // regexp; "" is empty
}

// TestCLITable: one exit code per outcome, across every verb, and each
// failure said once, on one line, with its code: the spear binary against
// a real node (README's exit-code table).
func TestCLITable(t *testing.T) {
	n := startNode(t, "", nodeOpts{})
	file := filepath.Join(t.TempDir(), "tokens")
	closed := freeAddr(t)
	runCLICases(t, n.addr, []cliCase{
		{name: "task get unknown", args: []string{"task", "get", "no-such"}, code: 3,
			stderr: `error: task "no-such" not found \(TASK_NOT_FOUND\)\n`},
		{name: "task delete unknown", args: []string{"task", "delete", "no-such"}, code: 3,
			stderr: `error: task "no-such" not found \(TASK_NOT_FOUND\)\n`},
		{name: "task limits unknown", args: []string{"task", "limits", "no-such"}, code: 3,
			stderr: `error: task "no-such" not found \(TASK_NOT_FOUND\)\n`},
		{name: "exec get unknown", args: []string{"exec", "get", "no-such"}, code: 3,
			stderr: `error: [^\n]*"no-such"[^\n]* not found \(EXECUTION_NOT_FOUND\)\n`},
		{name: "exec cancel unknown", args: []string{"exec", "cancel", "no-such"}, code: 3,
			stderr: `error: [^\n]*"no-such"[^\n]* not found \(EXECUTION_NOT_FOUND\)\n`},
		{name: "exec wait unknown", args: []string{"exec", "wait", "no-such"}, code: 3,
			stderr: `error: [^\n]*"no-such"[^\n]* not found \(EXECUTION_NOT_FOUND\)\n`},
		{name: "invoke unknown", args: []string{"invoke", "no-such", "-i", "x"}, code: 3,
			stderr: `error: task "no-such" not found \(TASK_NOT_FOUND\)\n`},
		{name: "token create bad name", args: []string{"token", "create", "--file", file, "--scope", "read", "--name", "a b"}, code: 2,
			stderr: `error: token name "a b": want [^\n]*\n`},
		{name: "token create bad scope", args: []string{"token", "create", "--file", file, "--scope", "root", "--name", "ci"}, code: 2,
			stderr: `error: --scope "root": want read, invoke or admin\n`},
		{name: "command line", args: []string{"invoke", "upper", "--mode", "later"}, code: 2,
			stderr: `error: --mode "later": want sync, async or stream\n`},
		{name: "invalid request", args: []string{"invoke", "upper", "--execution-id", "bad id!"}, code: 2,
			stderr: `error: execution id "bad id!": want [^\n]* \(INVALID_EXECUTION_ID\)\n`},
		{name: "closed port", args: []string{"--addr", closed, "task", "list"}, code: 5,
			stderr: regexp.QuoteMeta("error: cannot reach a Spear node at "+closed+" (connection refused); start one with 'spear serve' or 'make run', or set --addr / SPEAR_ADDR") + `\n`},
		{name: "failed", args: []string{"invoke", "fail", "-i", "x"}, code: 1,
			stderr: `error: execution [0-9a-f]+ failed: [^\n]* \(FUNCTION_FAILED\)\n`},
		{name: "timeout", args: []string{"invoke", "ticker", "-e", "TICKS=1000", "--timeout-ms", "300"}, code: 124,
			stdout: `(tick \d+\n)*`, stderr: `error: execution [0-9a-f]+ timed out: [^\n]* \(EXECUTION_TIMEOUT\)\n`},
		{name: "piped output is exact", args: []string{"invoke", "upper", "--input", "hello"}, stdout: `HELLO`},
		{name: "piped stream is exact", args: []string{"invoke", "upper", "-m", "stream", "--input", "a\nb"}, stdout: "A\nB"},
		{name: "async piped prints the id", args: []string{"invoke", "echo", "-m", "async", "-i", "x"}, stdout: `[0-9a-f]{22}\n`},
		{name: "async --quiet prints the id", args: []string{"invoke", "echo", "-m", "async", "-q", "-i", "x"}, stdout: `[0-9a-f]{22}\n`},
	})
	t.Run("async id, wait, cancel", func(t *testing.T) { testAsyncIDs(t, n) })
	t.Run("terminal", func(t *testing.T) { testTerminalOutput(t, n) })
}

// runCLICases runs each case against the node at addr (--addr first, so a
// case's own --addr wins).
func runCLICases(t *testing.T, addr string, cases []cliCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runSpearArgs(t, "", append([]string{"--addr", addr}, tc.args...)...)
			if code != tc.code || !fullMatch(tc.stdout, stdout) || !fullMatch(tc.stderr, stderr) {
				t.Errorf("spear %q: exit %d, want %d\nstdout %q, want /%s/\nstderr %q, want /%s/",
					tc.args, code, tc.code, stdout, tc.stdout, stderr, tc.stderr)
			}
		})
	}
}

func fullMatch(pattern, s string) bool {
	return regexp.MustCompile(`\A(?:` + pattern + `)\z`).MatchString(s)
}

// testAsyncIDs: what async prints is the id (exec wait takes it); a cancel
// says so once; waiting for a cancelled execution exits 130.
func testAsyncIDs(t *testing.T, n *node) {
	code, id, _ := runSpear(t, n, "", "invoke", "echo", "-m", "async", "-q", "-i", "later")
	id = string(bytes.TrimSuffix([]byte(id), []byte("\n")))
	if code != 0 {
		t.Fatalf("async invoke: exit %d", code)
	}
	runCLICases(t, n.addr, []cliCase{
		{name: "wait for the id", args: []string{"exec", "wait", id}, stdout: "later", stderr: `(` + id + `: \w+ \(\d+\.\ds\)\n)+`},
	})
	_, long, _ := runSpear(t, n, "", "invoke", "ticker", "-m", "async", "-e", "TICKS=1000")
	long = string(bytes.TrimSuffix([]byte(long), []byte("\n")))
	runCLICases(t, n.addr, []cliCase{
		{name: "cancel", args: []string{"exec", "cancel", long}, stdout: "cancelled execution " + long + `\n`},
		{name: "cancel again", args: []string{"exec", "cancel", long}, code: 1,
			stderr: "error: execution " + long + ` not cancelled: the execution had already finished: CANCELLED\n`},
		{name: "wait for a cancelled one", args: []string{"exec", "wait", long}, code: 130, stdout: `(tick \d+\n)*`,
			stderr: long + `: cancelled \(\d+\.\ds\)\nerror: execution ` + long + ` was cancelled \(CANCELLED\)\n`},
	})
}

// TestCLINotAllowed: a node with a token file refuses the CLI without a
// token (exit 4) and with an unknown one.
func TestCLINotAllowed(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	createToken(t, file, "read", "e2e-read")
	n := startNode(t, "", nodeOpts{args: []string{"--token-file", file}})
	runCLICases(t, n.addr, []cliCase{
		{name: "no token", args: []string{"task", "list"}, code: 4, stderr: `error: [^\n]* \(AUTH_REQUIRED\)\n`},
		{name: "unknown token", args: []string{"--token", "spear_nope", "task", "list"}, code: 4, stderr: `error: [^\n]* \(AUTH_INVALID\)\n`},
	})
}

// TestCLIDefaultPort: --addr without a port dials 50052, the node's
// default (gRPC's own default would be 443). Skipped when 50052 is taken;
// TestDialTarget (internal/cli) covers the address either way.
func TestCLIDefaultPort(t *testing.T) {
	const addr = "127.0.0.1:50052"
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("%s is in use: %v", addr, err)
	}
	_ = l.Close()
	n := startNode(t, "", nodeOpts{addr: addr})
	runCLICases(t, n.addr, []cliCase{
		{name: "ip", args: []string{"--addr", "127.0.0.1", "task", "get", "upper"}, stdout: `task id:\s+upper\n(?s:.*)`},
		{name: "url", args: []string{"--addr", "http://127.0.0.1", "task", "get", "upper"}, stdout: `task id:\s+upper\n(?s:.*)`},
	})
}

// testTerminalOutput runs the CLI with stdout on a terminal: the output's
// last line is ended (the terminal shows \n as \r\n); async says more than
// the id.
func testTerminalOutput(t *testing.T, n *node) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"sync", []string{"invoke", "upper", "--input", "hello"}, `HELLO\r\n`},
		{"ended already", []string{"invoke", "upper", "--input", "hello\n"}, `HELLO\r\n`},
		{"stream", []string{"invoke", "upper", "-m", "stream", "--input", "hello"}, `HELLO\r\n`},
		{"async", []string{"invoke", "echo", "-m", "async", "-i", "x"},
			`execution id:\s+[0-9a-f]{22}\r\n(?s:.*)follow it with:\s+spear exec wait [0-9a-f]{22}\r\n`},
		{"async --quiet", []string{"invoke", "echo", "-m", "async", "-q", "-i", "x"}, `[0-9a-f]{22}\r\n`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runOnTerminal(t, append([]string{"--addr", n.addr}, tc.args...)...)
			if code != 0 || !fullMatch(tc.want, out) {
				t.Errorf("spear %q on a terminal: exit %d, output %q, want /%s/", tc.args, code, out, tc.want)
			}
		})
	}
}

// runOnTerminal runs the spear CLI with its stdout on a new pseudo-terminal
// and returns its exit code and what the terminal received.
func runOnTerminal(t *testing.T, args ...string) (int, string) {
	t.Helper()
	master, slave := openPTY(t)
	cmd := exec.CommandContext(ctx(t, toolTimeout), spearBin(t), args...)
	cmd.Env = withoutSpearEnv(os.Environ())
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = slave, &stderr
	var out bytes.Buffer
	done := make(chan struct{})
	go func() { // read as it comes: the terminal's buffer is small
		_, _ = io.Copy(&out, master) // ends with EIO once the slave is closed
		close(done)
	}()
	err := cmd.Run()
	_ = slave.Close()
	<-done
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		t.Logf("stderr: %s", stderr.String())
		return exitErr.ExitCode(), out.String()
	case err != nil:
		t.Fatalf("running spear: %v", err)
	}
	return 0, out.String()
}

// openPTY opens a pseudo-terminal pair; both are closed when the test ends.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { _ = master.Close() })
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking the pseudo-terminal: %v", err)
	}
	num, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pseudo-terminal number: %v", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", num), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { _ = slave.Close() })
	return master, slave
}

// TestServePortInUse: `spear serve` on a port another process listens on
// exits 1 with one line that says so, and nothing before it (no store
// warnings: the port is taken before anything else starts).
func TestServePortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	out, code := serveRefused(t, "--listen", l.Addr().String(), "--log-level", "info")
	want := "error: listen on " + l.Addr().String() + ": the address is in use (another spear serve?): stop what listens there or choose another --listen\n"
	if code != 1 || out != want {
		t.Errorf("exit %d, output:\n%s\nwant exit 1 and only:\n%s", code, out, want)
	}
}

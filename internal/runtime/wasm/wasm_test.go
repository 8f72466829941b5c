package wasm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/runtime/conformance"
)

// fixture returns the artifact of testdata/<name>.wasm (see testdata/Makefile).
func fixture(t testing.TB, name string) runtime.Artifact {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("testdata", name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return runtime.Artifact{TaskID: "task-" + name, Type: runtime.TypeWasm, Location: path}
}

func newRuntime(t testing.TB, opts Options) *Runtime {
	t.Helper()
	r, err := New(t.Context(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// run runs fn of a with input and env and returns the result and streams.
func run(t *testing.T, ctx context.Context, r *Runtime, a runtime.Artifact, fn string, input string, mutate func(*runtime.Invocation)) (runtime.Result, string, string, error) {
	t.Helper()
	var stdout, stderr conformance.Buffer
	inv := &runtime.Invocation{
		ExecutionID: t.Name(),
		Artifact:    a,
		Function:    fn,
		Input:       strings.NewReader(input),
		Stdout:      &stdout,
		Stderr:      &stderr,
	}
	if mutate != nil {
		mutate(inv)
	}
	res, err := r.Run(ctx, inv)
	return res, stdout.String(), stderr.String(), err
}

func TestConformance(t *testing.T) {
	r := newRuntime(t, Options{})
	fn := func(name string) conformance.Fn { return conformance.Fn{Artifact: fixture(t, name)} }
	dir := t.TempDir()
	notWasm := filepath.Join(dir, "script.wasm")
	if err := os.WriteFile(notWasm, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	conformance.Run(t, r, conformance.Fixtures{
		Echo:   fn("echo"),
		Stderr: fn("stderr"),
		Exit:   fn("exit"),
		Env:    fn("env"),
		Ticks:  fn("ticks"),
		Sleep:  fn("sleep"),
		Spin:   fn("spin"),
		Alloc:  conformance.Fn{Artifact: fixture(t, "reactor"), Function: "grow", Env: map[string]string{"GROW_MIB": "64"}},
		Invalid: map[string]runtime.Artifact{
			"NotWasm": {TaskID: "not-wasm", Type: runtime.TypeWasm, Location: notWasm},
			"Missing": {TaskID: "missing", Type: runtime.TypeWasm, Location: filepath.Join(dir, "missing.wasm")},
		},
	})
}

func TestType(t *testing.T) {
	if got := newRuntime(t, Options{}).Type(); got != runtime.TypeWasm {
		t.Fatalf("Type() = %q, want %q", got, runtime.TypeWasm)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) runtime.Artifact {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return runtime.Artifact{TaskID: name, Type: runtime.TypeWasm, Location: p}
	}
	// A valid wasm module that is not a WASI command or reactor.
	bare := write("bare.wasm", []byte("\x00asm\x01\x00\x00\x00"))
	// A module importing a function from a host module other than WASI.
	foreign := write("foreign.wasm", []byte{
		0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
		0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
		0x02, 0x09, 0x01, 0x03, 'e', 'n', 'v', 0x01, 'f', 0x00, 0x00, // import env.f
		0x03, 0x02, 0x01, 0x00, // func 1: type 0
		0x07, 0x0a, 0x01, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x01, // export _start
		0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code: empty body
	})
	echo := fixture(t, "echo")
	sum := func(a runtime.Artifact) string {
		b, err := os.ReadFile(a.Location)
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		return "sha256:" + hex.EncodeToString(s[:])
	}
	withDigest := echo
	withDigest.Digest = sum(echo)
	badDigest := echo
	badDigest.TaskID = "bad-digest"
	badDigest.Digest = "sha256:" + strings.Repeat("0", 64)
	wrongType := echo
	wrongType.Type = runtime.TypeDocker

	tests := []struct {
		name      string
		artifact  runtime.Artifact
		wantClass error // nil: valid
		wantCode  string
	}{
		{"Command", echo, nil, ""},
		{"CommandWithDigest", withDigest, nil, ""},
		{"Reactor", fixture(t, "reactor"), nil, ""},
		{"NotWasm", write("text.wasm", []byte("#!/bin/sh\necho hi\n")), errdefs.ErrInvalidArgument, "INVALID_ARTIFACT"},
		{"Empty", write("empty.wasm", nil), errdefs.ErrInvalidArgument, "INVALID_ARTIFACT"},
		{"NotWASI", bare, errdefs.ErrInvalidArgument, "INVALID_ARTIFACT"},
		{"ForeignImport", foreign, errdefs.ErrInvalidArgument, "INVALID_ARTIFACT"},
		{"Missing", runtime.Artifact{TaskID: "missing", Location: filepath.Join(dir, "missing.wasm")}, errdefs.ErrFailedPrecondition, "ARTIFACT_NOT_FOUND"},
		{"Directory", runtime.Artifact{TaskID: "dir", Location: dir}, errdefs.ErrInvalidArgument, "INVALID_ARTIFACT"},
		{"WrongType", wrongType, errdefs.ErrInvalidArgument, "INVALID_ARTIFACT"},
		{"DigestMismatch", badDigest, errdefs.ErrFailedPrecondition, "ARTIFACT_CHANGED"},
	}
	r := newRuntime(t, Options{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := r.Validate(t.Context(), tc.artifact)
			if tc.wantClass == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantClass) || errdefs.CodeOf(err) != tc.wantCode {
				t.Fatalf("Validate: error %v (code %s), want class %v, code %s", err, errdefs.CodeOf(err), tc.wantClass, tc.wantCode)
			}
			// Run refuses it the same way.
			_, _, _, err = run(t, t.Context(), r, tc.artifact, "", "", nil)
			if errdefs.CodeOf(err) != tc.wantCode {
				t.Fatalf("Run: error %v (code %s), want code %s", err, errdefs.CodeOf(err), tc.wantCode)
			}
		})
	}
}

func TestFunctions(t *testing.T) {
	tests := []struct {
		name       string
		fixture    string
		function   string
		input      string
		wantCode   string // error code; "" = no error
		wantExit   int
		wantStdout string
		wantStderr []string // substrings
	}{
		{name: "CommandDefault", fixture: "command_export", wantStdout: "main\n"},
		{name: "CommandDefaultByName", fixture: "command_export", function: runtime.DefaultFunction, wantStdout: "main\n"},
		{name: "CommandExport", fixture: "command_export", function: "hello", wantStdout: "hello from export\n"},
		{name: "ReactorExport", fixture: "reactor", function: "shout", input: "hello", wantStdout: "HELLO!\n"},
		{name: "ExportStatus", fixture: "reactor", function: "grow", input: "", wantStdout: "grew 004\n"},
		{name: "MissingExport", fixture: "reactor", function: "nope", wantCode: "FUNCTION_NOT_FOUND"},
		{name: "ReactorHasNoDefault", fixture: "reactor", wantCode: "FUNCTION_NOT_FOUND"},
		{name: "ExportNotAFunction", fixture: "reactor", function: "memory", wantCode: "FUNCTION_NOT_FOUND"},
		{name: "Trap", fixture: "reactor", function: "trap", wantExit: TrapExitCode,
			wantStderr: []string{"about to trap", "wasm trap", "unreachable"}},
		{name: "ExitCode", fixture: "exit", wantExit: 3, wantStderr: []string{"boom"}},
	}
	r := newRuntime(t, Options{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, stdout, stderr, err := run(t, t.Context(), r, fixture(t, tc.fixture), tc.function, tc.input, nil)
			if tc.wantCode != "" {
				if err == nil || errdefs.CodeOf(err) != tc.wantCode {
					t.Fatalf("Run: error %v (code %s), want code %s", err, errdefs.CodeOf(err), tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			if res.ExitCode != tc.wantExit {
				t.Errorf("ExitCode = %d, want %d (stderr %q)", res.ExitCode, tc.wantExit, stderr)
			}
			if tc.wantStdout != "" && stdout != tc.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout, tc.wantStdout)
			}
			for _, s := range tc.wantStderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr = %q, want it to contain %q", stderr, s)
				}
			}
			if res.MemoryUsedBytes <= 0 {
				t.Errorf("MemoryUsedBytes = %d, want > 0", res.MemoryUsedBytes)
			}
		})
	}
}

func TestEnvAndArgs(t *testing.T) {
	r := newRuntime(t, Options{})
	env := func(m map[string]string) func(*runtime.Invocation) {
		return func(inv *runtime.Invocation) { inv.Env = m }
	}
	_, stdout, _, err := run(t, t.Context(), r, fixture(t, "env"), "", "", env(map[string]string{"SPEAR_TEST_VAR": "x=y", "OTHER": ""}))
	if err != nil || stdout != "x=y" {
		t.Fatalf("Run: stdout %q, error %v; want %q, nil", stdout, err, "x=y")
	}
	_, _, _, err = run(t, t.Context(), r, fixture(t, "env"), "", "", env(map[string]string{"A=B": "c"}))
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("Run with key %q: error %v, want invalid argument", "A=B", err)
	}
}

func TestCompileCache(t *testing.T) {
	r := newRuntime(t, Options{})
	ctx := t.Context()
	echo := fixture(t, "echo")

	check := func(t *testing.T, want int64) {
		t.Helper()
		if got := r.compiles.Load(); got != want {
			t.Fatalf("compilations = %d, want %d", got, want)
		}
	}
	runEcho := func(t *testing.T, a runtime.Artifact) {
		t.Helper()
		if _, out, _, err := run(t, ctx, r, a, "", "cached", nil); err != nil || out != "cached" {
			t.Fatalf("Run: stdout %q, error %v", out, err)
		}
	}

	if err := r.Validate(ctx, echo); err != nil {
		t.Fatal(err)
	}
	check(t, 1)
	if err := r.Validate(ctx, echo); err != nil {
		t.Fatal(err)
	}
	runEcho(t, echo)
	runEcho(t, echo)
	check(t, 1)

	// Another task is compiled separately (wazero's own cache makes it cheap).
	other := echo
	other.TaskID = "other"
	runEcho(t, other)
	check(t, 2)

	// A new digest for the task is a new version.
	v2 := echo
	v2.Digest = "sha256:" + hashFile(t, echo.Location)
	runEcho(t, v2)
	runEcho(t, v2)
	check(t, 3)

	// Without a digest, the file's modification time and size are the key.
	p := filepath.Join(t.TempDir(), "echo.wasm")
	copyFile(t, echo.Location, p)
	byPath := runtime.Artifact{Location: p}
	runEcho(t, byPath)
	runEcho(t, byPath)
	check(t, 4)
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	runEcho(t, byPath)
	check(t, 5)

	// Concurrent first uses compile once.
	concurrent := echo
	concurrent.TaskID = "concurrent"
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := r.Validate(ctx, concurrent); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	check(t, 6)

	// Forget drops a task's module; the next use compiles again.
	r.Forget(ctx, echo)
	runEcho(t, echo)
	check(t, 7)
}

func TestCacheDir(t *testing.T) {
	dir := t.TempDir()
	for i := range 2 { // the second runtime is a restarted node
		r, err := New(t.Context(), Options{CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if _, out, _, err := run(t, t.Context(), r, fixture(t, "echo"), "", "disk", nil); err != nil || out != "disk" {
			t.Fatalf("run %d: stdout %q, error %v", i, out, err)
		}
		if err := r.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	var files int
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, _ error) error {
		if d != nil && !d.IsDir() {
			files++
		}
		return nil
	})
	if files == 0 {
		t.Fatalf("no compiled code in cache dir %s", dir)
	}
}

func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name     string
		limit    int64
		wantCode string // error code
		wantExit int
		wantOut  string
		maxMem   int64
		minMem   int64
	}{
		{name: "None", limit: 0, wantExit: 0, wantOut: "grew 024\n", minMem: 24 * mib},
		{name: "Ceiling", limit: 8 * mib, wantExit: 2, maxMem: 8 * mib},
		{name: "OtherCeiling", limit: 16 * mib, wantExit: 2, maxMem: 16 * mib, minMem: 8 * mib},
		{name: "AboveNeed", limit: 64 * mib, wantExit: 0, wantOut: "grew 024\n", maxMem: 64 * mib},
		{name: "BelowInitialMemory", limit: 1, wantCode: "MEMORY_LIMIT_EXCEEDED"},
	}
	r := newRuntime(t, Options{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, stdout, stderr, err := run(t, t.Context(), r, fixture(t, "reactor"), "grow", "", func(inv *runtime.Invocation) {
				inv.MemoryLimitBytes = tc.limit
				inv.Env = map[string]string{"GROW_MIB": "24"}
			})
			if tc.wantCode != "" {
				if errdefs.CodeOf(err) != tc.wantCode || !errors.Is(err, errdefs.ErrResourceExhausted) {
					t.Fatalf("Run: error %v (code %s), want code %s", err, errdefs.CodeOf(err), tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			t.Logf("stdout %q, memory used %d MiB", stdout, res.MemoryUsedBytes/mib)
			if res.ExitCode != tc.wantExit {
				t.Errorf("ExitCode = %d, want %d (stdout %q, stderr %q)", res.ExitCode, tc.wantExit, stdout, stderr)
			}
			if tc.wantOut != "" && stdout != tc.wantOut {
				t.Errorf("stdout = %q, want %q", stdout, tc.wantOut)
			}
			if tc.maxMem > 0 && res.MemoryUsedBytes > tc.maxMem {
				t.Errorf("MemoryUsedBytes = %d, over the limit %d", res.MemoryUsedBytes, tc.maxMem)
			}
			if res.MemoryUsedBytes < tc.minMem {
				t.Errorf("MemoryUsedBytes = %d, want >= %d", res.MemoryUsedBytes, tc.minMem)
			}
			// A guest refused memory at its ceiling says so; one that
			// fits does not.
			if hit := tc.wantExit != 0 && tc.limit > 0; res.MemoryLimitHit != hit {
				t.Errorf("MemoryLimitHit = %v, want %v", res.MemoryLimitHit, hit)
			}
		})
	}
}

// blockingReader blocks until its context ends.
type blockingReader struct{ done <-chan struct{} }

func (b blockingReader) Read([]byte) (int, error) {
	<-b.done
	return 0, io.EOF
}

// stopBound bounds how long Run may take to return once its context has
// ended: a hang check, far above what a stop takes.
const stopBound = 10 * time.Second

func TestStop(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		cancel  bool // cancel after the deadline instead of a deadline
		want    error
		input   func(t *testing.T) io.Reader
	}{
		{name: "SpinDeadline", fixture: "spin", want: context.DeadlineExceeded},
		{name: "SleepDeadline", fixture: "sleep", want: context.DeadlineExceeded},
		{name: "SpinCancel", fixture: "spin", cancel: true, want: context.Canceled},
		{name: "SleepCancel", fixture: "sleep", cancel: true, want: context.Canceled},
		{name: "BlockedOnInput", fixture: "echo", want: context.DeadlineExceeded,
			input: func(t *testing.T) io.Reader {
				done := make(chan struct{})
				t.Cleanup(func() { close(done) })
				return blockingReader{done: done}
			}},
	}
	const deadline = 300 * time.Millisecond
	r := newRuntime(t, Options{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var (
				ctx    context.Context
				cancel context.CancelFunc
			)
			if tc.cancel {
				ctx, cancel = context.WithCancel(t.Context())
				timer := time.AfterFunc(deadline, cancel)
				defer timer.Stop()
			} else {
				ctx, cancel = context.WithTimeout(t.Context(), deadline)
			}
			defer cancel()
			stopAt := time.Now().Add(deadline)
			_, _, _, err := run(t, ctx, r, fixture(t, tc.fixture), "", "", func(inv *runtime.Invocation) {
				if tc.input != nil {
					inv.Input = tc.input(t)
				}
			})
			late := time.Since(stopAt)
			t.Logf("returned %v after the stop: %v", late, err)
			if !errors.Is(err, tc.want) {
				t.Errorf("Run: error %v, want one wrapping %v", err, tc.want)
			}
			if late > stopBound {
				t.Errorf("Run returned %v after the stop, want within %v", late, stopBound)
			}
		})
	}
}

func TestClosed(t *testing.T) {
	r, err := New(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(t.Context()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, _, err := run(t, t.Context(), r, fixture(t, "echo"), "", "", nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Run after Close: error %v, want unavailable", err)
	}
	if err := r.Validate(t.Context(), fixture(t, "echo")); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Validate after Close: error %v, want unavailable", err)
	}
}

// TestSamples runs the committed samples in samples/wasm.
func TestSamples(t *testing.T) {
	sample := func(name string) runtime.Artifact {
		p, err := filepath.Abs(filepath.Join("..", "..", "..", "samples", "wasm", name+".wasm"))
		if err != nil {
			t.Fatal(err)
		}
		return runtime.Artifact{TaskID: "sample-" + name, Type: runtime.TypeWasm, Location: p}
	}
	tests := []struct {
		name  string
		input string
		env   map[string]string
		want  string
	}{
		{"echo", "Hello, Spear\n", nil, "Hello, Spear\n"},
		{"upper", "Hello, Spear\n", nil, "HELLO, SPEAR\n"},
		{"ticker", "", map[string]string{"TICKS": "2"}, "tick 0\ntick 1\n"},
	}
	r := newRuntime(t, Options{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := sample(tc.name)
			if err := r.Validate(t.Context(), a); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			res, out, stderr, err := run(t, t.Context(), r, a, "", tc.input, func(inv *runtime.Invocation) { inv.Env = tc.env })
			if err != nil || res.ExitCode != 0 || out != tc.want {
				t.Fatalf("Run: stdout %q, exit %d, error %v (stderr %q); want %q", out, res.ExitCode, err, stderr, tc.want)
			}
		})
	}
}

func TestLimitPages(t *testing.T) {
	tests := []struct {
		limit int64
		want  uint32
	}{
		{0, 0}, {-1, 0}, {1, 1}, {pageSize, 1}, {pageSize + 1, 1}, {16 << 20, 256},
		{4 << 30, 0}, {1 << 40, 0}, {4<<30 - pageSize, maxPages - 1},
	}
	for _, tc := range tests {
		if got := limitPages(tc.limit); got != tc.want {
			t.Errorf("limitPages(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
}

func BenchmarkEcho(b *testing.B) {
	r := newRuntime(b, Options{})
	a := fixture(b, "echo")
	if err := r.Validate(b.Context(), a); err != nil {
		b.Fatal(err)
	}
	input := bytes.Repeat([]byte("x"), 100)
	var out bytes.Buffer
	in := bytes.NewReader(input)
	inv := &runtime.Invocation{ExecutionID: "bench", Artifact: a, Input: in, Stdout: &out, Stderr: io.Discard}
	b.ReportAllocs()
	for b.Loop() {
		out.Reset()
		in.Reset(input)
		res, err := r.Run(b.Context(), inv)
		if err != nil || res.ExitCode != 0 || out.Len() != len(input) {
			b.Fatalf("Run: exit %d, %d bytes out, error %v", res.ExitCode, out.Len(), err)
		}
	}
}

func hashFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCloseStopsRuns: Close stops a guest that is running (spinning).
func TestCloseStopsRuns(t *testing.T) {
	r, err := New(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	spin := fixture(t, "spin")
	running := make(chan struct{})
	// Compiled with a listener that says when the guest makes its first
	// call: it is running then.
	if err := r.Validate(callListener(t.Context(), running), spin); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, _, err := run(t, ctx, r, spin, "", "", nil)
		done <- err
	}()
	select {
	case <-running:
	case err := <-done:
		t.Fatalf("Run returned before the guest ran: %v", err)
	}
	if err := r.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("Run interrupted by Close: error %v, want unavailable", err)
		}
	case <-time.After(stopBound):
		t.Fatalf("Run did not return within %v of Close", stopBound)
	}
}

// callListener returns ctx carrying a function listener that closes called
// at the first call into a guest compiled with it.
func callListener(ctx context.Context, called chan struct{}) context.Context {
	var once sync.Once
	return experimental.WithFunctionListenerFactory(ctx, experimental.FunctionListenerFactoryFunc(
		func(api.FunctionDefinition) experimental.FunctionListener {
			return experimental.FunctionListenerFunc(func(context.Context, api.Module, api.FunctionDefinition, []uint64, experimental.StackIterator) {
				once.Do(func() { close(called) })
			})
		}))
}

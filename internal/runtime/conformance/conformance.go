// Package conformance is the test suite every runtime.Runtime (process,
// wasm, docker) must pass, in the style of the wazero and Nomad conformance
// suites. A runtime's own tests call Run with fixtures written for that
// runtime:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, myruntime.New(...), conformance.Fixtures{...})
//	}
//
// The suite checks the shared contract of package runtime: input, output and
// error streams (output streamed as written), exit codes, the environment,
// deadlines and cancellation (forced, and graceful with a
// runtime.GracefulStop cause), concurrent invocations, and artifact
// validation (every runtime is a runtime.Validator that refuses bad
// artifacts). What a runtime declares in its runtime.Capabilities is checked
// too: a graceful stop, memory limits (a function over its limit ends with
// the limit hit reported) and the measured memory peak; a runtime that does
// not declare GracefulStop must stop at once whatever the cause.
//
// For runtimes that run native programs, BuildFixture builds the fixture
// command (./fixture) that implements every behaviour, selected by its first
// argument (the function name).
package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
)

// Fn is one fixture function: an artifact, the function name to call and
// environment variables it needs.
type Fn struct {
	Artifact runtime.Artifact
	Function string
	Env      map[string]string
}

// Fixtures names, for one runtime, a function for each behaviour the suite
// checks.
type Fixtures struct {
	Echo   Fn // copies stdin to stdout, exit 0
	Stderr Fn // writes each line of stdin to stderr (not stdout), then writes "ok" to stdout, exit 0
	Exit   Fn // writes "boom" to stderr and exits with status 3
	Env    Fn // writes the value of environment variable SPEAR_TEST_VAR to stdout
	Ticks  Fn // writes "tick 0\n" .. "tick 4\n", one every 100 ms, flushing each, exit 0
	Sleep  Fn // blocks (sleeps) forever
	Spin   Fn // busy-loops forever burning CPU
	// Alloc allocates and touches 64 MiB (in 1 MiB blocks), then exits 0;
	// refused memory, it fails or is killed. Needed when the runtime
	// declares the MemoryLimit capability.
	Alloc Fn
	// Graceful traps SIGTERM: it writes "ready\n" once it can take the
	// signal, blocks until SIGTERM, then writes "bye\n" and exits 0.
	// Needed when the runtime declares the GracefulStop capability.
	Graceful Fn
	// Invalid are artifacts, by name, that the runtime's Validate must
	// refuse and Run must not run: not executable, not a WASM module, an
	// image the engine does not have, missing. At least one.
	Invalid map[string]runtime.Artifact
}

// Bounds used by the suite. They are hang checks, not performance
// assertions: a conforming runtime is far inside them.
const (
	// runBound bounds a Run that is expected to complete on its own.
	runBound = 30 * time.Second
	// stopBound bounds a Run whose context ends (deadline, cancel).
	stopBound = 5 * time.Second
	// deadline is the timeout given to functions that never end.
	deadline = 300 * time.Millisecond
	// memoryLimit is the limit the MemoryLimit case gives Fixtures.Alloc:
	// half what it allocates, far above what a program needs to start.
	memoryLimit = 32 << 20
	// minTickSpread is the least time between the arrival of "tick 0" and
	// of "tick 4". The fixture writes them >= 400 ms apart; a runtime that
	// buffers output until the function ends delivers them together.
	minTickSpread = 100 * time.Millisecond
)

// ticksOutput is the complete output of Fixtures.Ticks.
const ticksOutput = "tick 0\ntick 1\ntick 2\ntick 3\ntick 4\n"

// fixturePkg is the import path of the fixture command.
const fixturePkg = "github.com/spear-go/spear/internal/runtime/conformance/fixture"

// Run runs the whole suite as subtests of t against rt. The subtests run
// sequentially, so t's cleanups and deferred calls run after all of them.
func Run(t *testing.T, rt runtime.Runtime, fx Fixtures) {
	s := &suite{rt: rt, fx: fx}
	t.Run("Echo", s.testEcho)
	t.Run("LargeInputOutput", s.testLarge)
	t.Run("StderrSeparate", s.testStderr)
	t.Run("NonZeroExit", s.testExit)
	t.Run("Environment", s.testEnv)
	t.Run("Streaming", s.testStreaming)
	t.Run("Deadline", s.testDeadline)
	t.Run("Cancel", s.testCancel)
	t.Run("AlreadyCanceled", s.testAlreadyCanceled)
	t.Run("GracefulStop", s.testGracefulStop)
	t.Run("Concurrent", s.testConcurrent)
	t.Run("MemoryLimit", s.testMemoryLimit)
	t.Run("MemoryPeak", s.testMemoryPeak)
	t.Run("Validate", s.testValidate)
}

// suite holds what every case needs.
type suite struct {
	rt runtime.Runtime
	fx Fixtures
	n  atomic.Int64 // execution id counter
}

// call is one invocation made by the suite, with its recorded streams.
type call struct {
	inv    *runtime.Invocation
	stdout *recorder
	stderr *recorder
}

// newCall returns an invocation of fn with input, fn's environment plus env,
// and fresh recorders.
func (s *suite) newCall(t testing.TB, fn Fn, input []byte, env map[string]string) *call {
	if fn.Artifact.Location == "" {
		t.Fatalf("fixture for %s is not set (empty artifact location)", t.Name())
	}
	c := &call{stdout: newRecorder(), stderr: newRecorder()}
	c.inv = &runtime.Invocation{
		ExecutionID: fmt.Sprintf("conformance-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), s.n.Add(1)),
		Artifact:    fn.Artifact,
		Function:    fn.Function,
		Input:       bytes.NewReader(input),
		Env:         mergeEnv(fn.Env, env),
		Stdout:      c.stdout,
		Stderr:      c.stderr,
	}
	return c
}

// mergeEnv returns the variables of a and b, b's winning; nil when both are
// empty.
func mergeEnv(a, b map[string]string) map[string]string {
	if len(a) == 0 {
		return b
	}
	env := maps.Clone(a)
	maps.Copy(env, b)
	return env
}

// outcome is what Run returned and how long it took.
type outcome struct {
	res     runtime.Result
	err     error
	elapsed time.Duration
	end     time.Time
}

// run runs c under ctx and fails t if Run does not return within bound.
func (s *suite) run(t *testing.T, ctx context.Context, c *call, bound time.Duration) outcome {
	t.Helper()
	done := make(chan outcome, 1)
	start := time.Now()
	go func() {
		res, err := s.rt.Run(ctx, c.inv)
		end := time.Now()
		done <- outcome{res: res, err: err, elapsed: end.Sub(start), end: end}
	}()
	timer := time.NewTimer(bound)
	defer timer.Stop()
	select {
	case o := <-done:
		return o
	case <-timer.C:
		t.Fatalf("Run did not return within %v (hang)", bound)
		return outcome{}
	}
}

// runOK runs c to completion and fails t unless it succeeded with exit 0.
func (s *suite) runOK(t *testing.T, c *call) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), runBound)
	defer cancel()
	o := s.run(t, ctx, c, runBound+stopBound)
	if o.err != nil {
		t.Fatalf("Run: unexpected error: %v (stderr: %q)", o.err, c.stderr.tail())
	}
	if o.res.ExitCode != 0 {
		t.Fatalf("Run: ExitCode = %d, want 0 (stderr: %q)", o.res.ExitCode, c.stderr.tail())
	}
	return o
}

func (s *suite) testEcho(t *testing.T) {
	cases := []struct {
		name  string
		input string
	}{
		{"Small", "hello, spear\n"},
		{"NoTrailingNewline", "no newline"},
		{"Empty", ""},
		{"Binary", "\x00\x01\xff\xfe\n\r\x00"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := s.newCall(t, s.fx.Echo, []byte(tc.input), nil)
			s.runOK(t, c)
			if got := c.stdout.String(); got != tc.input {
				t.Errorf("stdout = %q, want %q", got, tc.input)
			}
		})
	}
}

func (s *suite) testLarge(t *testing.T) {
	const size = 16 << 20
	input := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{'s', 'p', 'e', 'a', 'r'}).Read(input)
	c := s.newCall(t, s.fx.Echo, input, nil)
	s.runOK(t, c)
	got := c.stdout.Bytes()
	if !bytes.Equal(got, input) {
		i := 0
		for i < len(got) && i < len(input) && got[i] == input[i] {
			i++
		}
		t.Fatalf("stdout differs from input: got %d bytes, want %d; first difference at offset %d", len(got), len(input), i)
	}
	t.Logf("16 MiB echoed in %d writes", c.stdout.numChunks())
}

func (s *suite) testStderr(t *testing.T) {
	const input = "first line\nsecond line\n"
	c := s.newCall(t, s.fx.Stderr, []byte(input), nil)
	s.runOK(t, c)
	if got := c.stderr.String(); got != input {
		t.Errorf("stderr = %q, want %q", got, input)
	}
	if got := c.stdout.String(); got != "ok" {
		t.Errorf("stdout = %q, want %q (stderr must not reach stdout)", got, "ok")
	}
}

func (s *suite) testExit(t *testing.T) {
	c := s.newCall(t, s.fx.Exit, nil, nil)
	ctx, cancel := context.WithTimeout(t.Context(), runBound)
	defer cancel()
	o := s.run(t, ctx, c, runBound+stopBound)
	if o.err != nil {
		t.Fatalf("Run: error %v, want nil error for a non-zero exit", o.err)
	}
	if o.res.ExitCode != 3 {
		t.Errorf("ExitCode = %d, want 3", o.res.ExitCode)
	}
	if got := c.stderr.String(); !strings.Contains(got, "boom") {
		t.Errorf("stderr = %q, want it to contain %q", got, "boom")
	}
	if got := c.stdout.String(); strings.Contains(got, "boom") {
		t.Errorf("stdout = %q: stderr output reached stdout", got)
	}
}

func (s *suite) testEnv(t *testing.T) {
	cases := []struct {
		name  string
		value string
	}{
		{"Simple", "hello"},
		{"SpacesAndSymbols", "a b=c;d 'e' \"f\" $HOME"},
		{"Unicode", "ünïcödé ✓"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"SPEAR_TEST_VAR": tc.value, "SPEAR_TEST_OTHER": "other"}
			c := s.newCall(t, s.fx.Env, nil, env)
			s.runOK(t, c)
			if got := c.stdout.String(); got != tc.value {
				t.Errorf("stdout = %q, want %q", got, tc.value)
			}
		})
	}
}

func (s *suite) testStreaming(t *testing.T) {
	c := s.newCall(t, s.fx.Ticks, nil, nil)
	o := s.runOK(t, c)
	if got := c.stdout.String(); got != ticksOutput {
		t.Fatalf("stdout = %q, want %q", got, ticksOutput)
	}
	first, ok1 := c.stdout.chunkAt(0)
	last, ok2 := c.stdout.chunkAt(len(ticksOutput) - 1)
	if !ok1 || !ok2 {
		t.Fatalf("no write recorded for the first or last byte")
	}
	t.Logf("%d writes; tick 0 arrived %v before tick 4 and %v before Run returned",
		c.stdout.numChunks(), last.at.Sub(first.at), o.end.Sub(first.at))
	if first.start == last.start {
		t.Fatalf("tick 0 and tick 4 arrived in the same write %q: output is not streamed", c.stdout.String()[first.start:first.end])
	}
	if !first.at.Before(last.at) {
		t.Errorf("tick 0 arrived at %v, not before tick 4 at %v", first.at, last.at)
	}
	if spread := last.at.Sub(first.at); spread < minTickSpread {
		t.Errorf("tick 0 arrived only %v before tick 4 (written >= 400ms apart): output is buffered, not streamed", spread)
	}
	if !first.at.Before(o.end) {
		t.Errorf("tick 0 arrived after Run returned")
	}
}

func (s *suite) testDeadline(t *testing.T) {
	cases := []struct {
		name string
		fn   Fn
	}{
		{"Sleep", s.fx.Sleep},
		{"Spin", s.fx.Spin},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := s.newCall(t, tc.fn, nil, nil)
			ctx, cancel := context.WithTimeout(t.Context(), deadline)
			defer cancel()
			o := s.run(t, ctx, c, stopBound)
			t.Logf("Run returned after %v (deadline %v): %v", o.elapsed, deadline, o.err)
			if o.err == nil {
				t.Fatalf("Run: nil error (result %+v), want an error wrapping context.DeadlineExceeded", o.res)
			}
			if !errors.Is(o.err, context.DeadlineExceeded) {
				t.Errorf("Run: error %v does not wrap context.DeadlineExceeded", o.err)
			}
		})
	}
}

func (s *suite) testCancel(t *testing.T) {
	c := s.newCall(t, s.fx.Ticks, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	returned := make(chan struct{})
	defer close(returned)
	go func() {
		select {
		case <-c.stdout.first:
			cancel()
		case <-returned:
		}
	}()
	o := s.run(t, ctx, c, runBound)
	t.Logf("Run returned after %v: %v", o.elapsed, o.err)
	if !c.stdout.wrote() {
		t.Fatalf("Run returned (err %v) before any output arrived", o.err)
	}
	if o.err == nil {
		t.Fatalf("Run: nil error (result %+v), want an error wrapping context.Canceled", o.res)
	}
	if !errors.Is(o.err, context.Canceled) {
		t.Errorf("Run: error %v does not wrap context.Canceled", o.err)
	}
	// Whether the function was stopped promptly is timing; the Deadline
	// cases (functions that never end) check that it is stopped at all.
	t.Logf("output before the cancel took effect: %q", c.stdout.String())
}

func (s *suite) testAlreadyCanceled(t *testing.T) {
	c := s.newCall(t, s.fx.Echo, []byte("never"), nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	o := s.run(t, ctx, c, stopBound)
	if !errors.Is(o.err, context.Canceled) {
		t.Errorf("Run with a canceled context: error %v, want one wrapping context.Canceled", o.err)
	}
}

// stopGrace is the grace given by the GracefulStop cases: far longer than
// the Graceful fixture needs to say "bye".
const stopGrace = 5 * time.Second

// testGracefulStop starts the Graceful fixture, waits until it is ready for
// the signal, and ends the context: with a runtime.GracefulStop cause the
// function gets to clean up ("bye"); with a plain cancel it is killed at
// once. Either way Run reports the cancellation.
func (s *suite) testGracefulStop(t *testing.T) {
	if !runtime.CapabilitiesOf(s.rt).GracefulStop {
		t.Run("NotDeclared", s.testStopAtOnce)
		return
	}
	cases := []struct {
		name    string
		cause   error // nil: plain cancel
		wantBye bool
	}{
		{"Graceful", &runtime.GracefulStop{Grace: stopGrace, Reason: context.Canceled}, true},
		{"Forced", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := s.newCall(t, s.fx.Graceful, nil, nil)
			ctx, cancel := context.WithCancelCause(t.Context())
			defer cancel(nil)
			returned := make(chan struct{})
			defer close(returned)
			go func() {
				select {
				case <-c.stdout.first: // "ready": the handler is installed
					cancel(tc.cause)
				case <-returned:
				}
			}()
			o := s.run(t, ctx, c, runBound+stopGrace)
			out := c.stdout.String()
			t.Logf("Run returned after %v: %v; stdout %q", o.elapsed, o.err, out)
			if !strings.HasPrefix(out, "ready\n") {
				t.Fatalf("stdout = %q, want it to start with %q (stderr %q)", out, "ready\n", c.stderr.tail())
			}
			if o.err == nil {
				t.Fatalf("Run: nil error (result %+v), want an error wrapping context.Canceled", o.res)
			}
			if !errors.Is(o.err, context.Canceled) {
				t.Errorf("Run: error %v does not wrap context.Canceled", o.err)
			}
			if got := strings.Contains(out, "bye"); got != tc.wantBye {
				if tc.wantBye {
					t.Errorf("stdout = %q: the function did not get to clean up (no %q) on a graceful stop", out, "bye")
				} else {
					t.Errorf("stdout = %q: the function cleaned up (%q) on a forced stop; it must be killed at once", out, "bye")
				}
			}
		})
	}
}

// testStopAtOnce checks that a runtime without the GracefulStop capability
// stops a function at once, even when the cause asks for a long grace.
func (s *suite) testStopAtOnce(t *testing.T) {
	c := s.newCall(t, s.fx.Sleep, nil, nil)
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	stop := time.AfterFunc(deadline, func() {
		cancel(&runtime.GracefulStop{Grace: time.Hour, Reason: context.Canceled})
	})
	defer stop.Stop()
	o := s.run(t, ctx, c, deadline+stopBound)
	t.Logf("Run returned after %v: %v", o.elapsed, o.err)
	if !errors.Is(o.err, context.Canceled) {
		t.Errorf("Run: error %v, want one wrapping context.Canceled", o.err)
	}
}

func (s *suite) testConcurrent(t *testing.T) {
	const n = 32
	// n runs at once may queue behind each other (containers on two
	// cores under -race): the bound is n runs' worth, a hang check only.
	ctx, cancel := context.WithTimeout(t.Context(), n*stopBound)
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		input := bytes.Repeat([]byte(fmt.Sprintf("<invocation %02d>", i)), 64*(i+1))
		c := s.newCall(t, s.fx.Echo, input, nil)
		wg.Go(func() {
			res, err := s.rt.Run(ctx, c.inv)
			switch {
			case err != nil:
				t.Errorf("invocation %d: Run: %v", i, err)
			case res.ExitCode != 0:
				t.Errorf("invocation %d: ExitCode = %d (stderr %q)", i, res.ExitCode, c.stderr.tail())
			case !bytes.Equal(c.stdout.Bytes(), input):
				t.Errorf("invocation %d: stdout (%d bytes) is not its input (%d bytes): starts %q",
					i, len(c.stdout.Bytes()), len(input), head(c.stdout.Bytes()))
			}
		})
	}
	// Every Run returns once ctx ends (a hang past that is the package
	// timeout's to report), so the goroutines never outlive the test.
	wg.Wait()
}

// testMemoryLimit runs Fixtures.Alloc over its memory limit, and without
// one, when the runtime declares the MemoryLimit capability.
func (s *suite) testMemoryLimit(t *testing.T) {
	if !runtime.CapabilitiesOf(s.rt).MemoryLimit {
		t.Skip("the runtime does not declare the MemoryLimit capability")
	}
	t.Run("OverLimit", func(t *testing.T) {
		c := s.newCall(t, s.fx.Alloc, nil, nil)
		c.inv.MemoryLimitBytes = memoryLimit
		ctx, cancel := context.WithTimeout(t.Context(), runBound)
		defer cancel()
		o := s.run(t, ctx, c, runBound+stopBound)
		if o.err != nil {
			t.Fatalf("Run: error %v; a function that runs out of memory is a result, not an error", o.err)
		}
		t.Logf("result %+v (stderr %q)", o.res, c.stderr.tail())
		if o.res.ExitCode == 0 || !o.res.MemoryLimitHit {
			t.Errorf("ExitCode = %d, MemoryLimitHit = %v; want a failed run with the memory limit hit", o.res.ExitCode, o.res.MemoryLimitHit)
		}
	})
	t.Run("Unlimited", func(t *testing.T) {
		o := s.runOK(t, s.newCall(t, s.fx.Alloc, nil, nil))
		if o.res.MemoryLimitHit {
			t.Errorf("MemoryLimitHit = true without a memory limit (%+v)", o.res)
		}
	})
}

// testMemoryPeak checks that a run's memory is measured when the runtime
// declares the MemoryPeak capability. Ticks runs long enough for a runtime
// that samples.
func (s *suite) testMemoryPeak(t *testing.T) {
	if !runtime.CapabilitiesOf(s.rt).MemoryPeak {
		t.Skip("the runtime does not declare the MemoryPeak capability")
	}
	o := s.runOK(t, s.newCall(t, s.fx.Ticks, nil, nil))
	if o.res.MemoryUsedBytes <= 0 {
		t.Errorf("MemoryUsedBytes = %d, want the measured peak", o.res.MemoryUsedBytes)
	}
}

// testValidate checks that the runtime validates artifacts: a good one
// passes, and each of Fixtures.Invalid is refused, by Validate and by Run,
// as a bad artifact rather than a failure of the runtime.
func (s *suite) testValidate(t *testing.T) {
	v, ok := s.rt.(runtime.Validator)
	if !ok {
		t.Fatal("the runtime is not a runtime.Validator: bad artifacts would only be found when run")
	}
	if err := v.Validate(t.Context(), s.fx.Echo.Artifact); err != nil {
		t.Fatalf("Validate(Echo's artifact) = %v, want nil", err)
	}
	if len(s.fx.Invalid) == 0 {
		t.Fatal("Fixtures.Invalid is empty: name at least one artifact the runtime must refuse")
	}
	for _, name := range slices.Sorted(maps.Keys(s.fx.Invalid)) {
		a := s.fx.Invalid[name]
		t.Run(name, func(t *testing.T) {
			err := v.Validate(t.Context(), a)
			t.Logf("Validate: %v", err)
			if err == nil {
				t.Fatalf("Validate(%q) = nil, want it refused", a.Location)
			}
			if !badArtifact(err) {
				t.Errorf("Validate: error %v (code %s); want the class of a bad artifact (invalid argument, not found, failed precondition)", err, errdefs.CodeOf(err))
			}
			ctx, cancel := context.WithTimeout(t.Context(), runBound)
			defer cancel()
			c := s.newCall(t, Fn{Artifact: a}, nil, nil)
			if o := s.run(t, ctx, c, runBound+stopBound); o.err == nil {
				t.Errorf("Run(%q) = %+v, nil error; want it refused", a.Location, o.res)
			}
		})
	}
}

// badArtifact reports whether err says that an artifact is bad, rather than
// that the runtime failed.
func badArtifact(err error) bool {
	return errors.Is(err, errdefs.ErrInvalidArgument) || errors.Is(err, errdefs.ErrNotFound) ||
		errors.Is(err, errdefs.ErrFailedPrecondition)
}

// recorder is a goroutine-safe io.Writer that keeps what was written and
// when each Write happened.
type recorder struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	chunks []chunk
	once   sync.Once
	first  chan struct{} // closed by the first non-empty Write
}

// chunk is one Write: bytes [start, end) of the output, written at at.
type chunk struct {
	at         time.Time
	start, end int
}

func newRecorder() *recorder { return &recorder{first: make(chan struct{})} }

// Write implements io.Writer.
func (r *recorder) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	start := r.buf.Len()
	r.buf.Write(p)
	r.chunks = append(r.chunks, chunk{at: time.Now(), start: start, end: r.buf.Len()})
	r.mu.Unlock()
	r.once.Do(func() { close(r.first) })
	return len(p), nil
}

// Bytes returns a copy of everything written.
func (r *recorder) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

func (r *recorder) String() string { return string(r.Bytes()) }

// wrote reports whether anything was written.
func (r *recorder) wrote() bool {
	select {
	case <-r.first:
		return true
	default:
		return false
	}
}

func (r *recorder) numChunks() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.chunks)
}

// chunkAt returns the Write that wrote byte off.
func (r *recorder) chunkAt(off int) (chunk, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.chunks {
		if off >= c.start && off < c.end {
			return c, true
		}
	}
	return chunk{}, false
}

// tail returns the last bytes written, for error messages.
func (r *recorder) tail() string {
	b := r.Bytes()
	if len(b) > 512 {
		b = b[len(b)-512:]
	}
	return string(b)
}

func head(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

var _ io.Writer = (*recorder)(nil)

// BuildFixture builds the fixture command (package ./fixture) with
// CGO_ENABLED=0, so that the binary is static and runs in a FROM scratch
// image, into dir and returns its path. It needs the go command on PATH and
// the module's source; it fails t if the build fails.
//
// The fixture's function names are "echo", "stderr", "exit", "env",
// "ticks", "sleep", "spin", "alloc" and "graceful" (the Fixtures fields),
// plus "environ", which writes the whole environment sorted, one variable a
// line.
func BuildFixture(t testing.TB, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("conformance: building fixture: go command not found: %v", err)
	}
	out, err := filepath.Abs(filepath.Join(dir, "spear-conformance-fixture"))
	if err != nil {
		t.Fatalf("conformance: building fixture: %v", err)
	}
	cmd := exec.CommandContext(t.Context(), goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, fixturePkg)
	// Build from this package's source directory when it is known, so the
	// module is found whatever the caller's working directory.
	if _, file, _, ok := goruntime.Caller(0); ok {
		if fi, err := os.Stat(filepath.Join(filepath.Dir(file), "fixture")); err == nil && fi.IsDir() {
			cmd.Dir = filepath.Dir(file)
		}
	}
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("conformance: building fixture: %v\n%s", err, output)
	}
	return out
}

// FixtureFunctions returns the Fixtures of the fixture program (see
// BuildFixture), fn giving the Fn that runs one of its function names in a
// runtime. Invalid is left to the caller.
func FixtureFunctions(fn func(name string) Fn) Fixtures {
	return Fixtures{
		Echo:     fn("echo"),
		Stderr:   fn("stderr"),
		Exit:     fn("exit"),
		Env:      fn("env"),
		Ticks:    fn("ticks"),
		Sleep:    fn("sleep"),
		Spin:     fn("spin"),
		Alloc:    fn("alloc"),
		Graceful: fn("graceful"),
	}
}

// Buffer is a bytes.Buffer safe for concurrent writers and readers, for a
// function's output in tests.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

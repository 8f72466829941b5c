package process_test

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goruntime "runtime"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/procstat"
	"github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/runtime/conformance"
	"github.com/spear-go/spear/internal/runtime/process"
	"github.com/spear-go/spear/internal/sandbox"
)

// ProcessFixtures returns the conformance fixtures for the process runtime,
// all served by the fixture binary bin (see conformance.BuildFixture), and
// bad artifacts written into dir.
func ProcessFixtures(t *testing.T, bin, dir string) conformance.Fixtures {
	artifact := func(location string) runtime.Artifact {
		return runtime.Artifact{TaskID: "conformance", Type: runtime.TypeProcess, Location: location}
	}
	fx := conformance.FixtureFunctions(func(name string) conformance.Fn {
		return conformance.Fn{Artifact: artifact(bin), Function: name}
	})
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fx.Invalid = map[string]runtime.Artifact{
		"NotExecutable": artifact(notExec),
		"Missing":       artifact(filepath.Join(dir, "missing")),
		"Directory":     artifact(dir),
	}
	return fx
}

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	bin := conformance.BuildFixture(t, dir)
	conformance.Run(t, process.New(process.Options{}), ProcessFixtures(t, bin, dir))
}

// failWriter fails every Write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("sink gone") }

// script writes a /bin/sh script with body into a temp dir and returns its
// path.
func script(t testing.TB, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fn.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// inv returns an invocation of location/function with fresh buffers.
func inv(location, function string, input []byte) (*runtime.Invocation, *conformance.Buffer, *conformance.Buffer) {
	var stdout, stderr conformance.Buffer
	return &runtime.Invocation{
		ExecutionID: "exec-1",
		Artifact:    runtime.Artifact{Type: runtime.TypeProcess, Location: location},
		Function:    function,
		Input:       bytes.NewReader(input),
		Stdout:      &stdout,
		Stderr:      &stderr,
	}, &stdout, &stderr
}

// runBounded runs in under ctx, failing t if Run takes longer than bound.
func runBounded(t *testing.T, ctx context.Context, rt *process.Runtime, in *runtime.Invocation, bound time.Duration) (runtime.Result, error, time.Duration) {
	t.Helper()
	type out struct {
		res runtime.Result
		err error
	}
	done := make(chan out, 1)
	start := time.Now()
	go func() {
		res, err := rt.Run(ctx, in)
		done <- out{res, err}
	}()
	select {
	case o := <-done:
		return o.res, o.err, time.Since(start)
	case <-time.After(bound):
		t.Fatalf("Run did not return within %v", bound)
		return runtime.Result{}, nil, 0
	}
}

// waitGone fails t unless process pid is gone, reaped too (the runtime
// reaps what runs leave), within a generous bound.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			t.Errorf("process %d still there (or not reaped) after Run returned: %s", pid, stat)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// firstPid parses the first line of out as a pid.
func firstPid(t *testing.T, out string) int {
	t.Helper()
	line, _, _ := strings.Cut(out, "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		t.Fatalf("no pid in output %q", out)
	}
	return pid
}

func TestArtifactErrors(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, content []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	native := conformance.NativeMachine()
	cases := []struct {
		name     string
		location string
		// validateCode is what Validate refuses it with ("" for a
		// file only its run can tell, and code what Run fails with.
		validateCode, code string
	}{
		{"Missing", filepath.Join(dir, "missing"), "ARTIFACT_NOT_FOUND", "ARTIFACT_NOT_FOUND"},
		{"MissingDir", "/nonexistent/dir/prog", "ARTIFACT_NOT_FOUND", "ARTIFACT_NOT_FOUND"},
		{"NotExecutable", file("not-exec", []byte("#!/bin/sh\necho hi\n"), 0o644), "ARTIFACT_NOT_EXECUTABLE", "ARTIFACT_NOT_EXECUTABLE"},
		{"Directory", dir, "ARTIFACT_NOT_A_FILE", "ARTIFACT_NOT_A_FILE"},
		{"EmptyLocation", "", "ARTIFACT_NOT_FOUND", "ARTIFACT_NOT_FOUND"},
		{"RandomBytes", file("garbage", []byte("\x00\x01 not a program"), 0o755), "ARTIFACT_NOT_RUNNABLE", "ARTIFACT_NOT_RUNNABLE"},
		{"NoShebang", file("no-shebang.sh", []byte("echo hi\n"), 0o755), "ARTIFACT_NOT_RUNNABLE", "ARTIFACT_NOT_RUNNABLE"},
		{"EmptyShebang", file("empty-shebang.sh", []byte("#!\necho hi\n"), 0o755), "ARTIFACT_NOT_RUNNABLE", "ARTIFACT_NOT_RUNNABLE"},
		{"MissingInterpreter", file("no-interp.sh", []byte("#!/nonexistent/bin/sh\necho hi\n"), 0o755), "ARTIFACT_NO_INTERPRETER", "ARTIFACT_NO_INTERPRETER"},
		{"ForeignELF", file("foreign", conformance.ELFExecutable(conformance.ForeignMachine(), elf.ET_EXEC, ""), 0o755), "ARTIFACT_WRONG_ARCH", "ARTIFACT_NOT_RUNNABLE"},
		{"ObjectFile", file("obj.o", conformance.ELFExecutable(native, elf.ET_REL, ""), 0o755), "ARTIFACT_NOT_RUNNABLE", "ARTIFACT_NOT_RUNNABLE"},
		{"MissingLoader", file("no-loader", conformance.ELFExecutable(native, elf.ET_DYN, "/nonexistent/ld.so"), 0o755), "ARTIFACT_NO_INTERPRETER", "ARTIFACT_NO_INTERPRETER"},
	}
	for _, sb := range []sandbox.Mode{sandbox.ModeOff, sandbox.ModeAuto} {
		rt := process.New(process.Options{Sandbox: sb, ReadRoots: []string{os.TempDir()}})
		t.Cleanup(func() { _ = rt.Close(context.Background()) })
		for _, tc := range cases {
			t.Run(string(sb)+"/"+tc.name, func(t *testing.T) {
				if native == elf.EM_NONE && strings.Contains(tc.name, "ELF") {
					t.Skip("no native ELF machine known for this architecture")
				}
				err := rt.Validate(t.Context(), runtime.Artifact{Type: runtime.TypeProcess, Location: tc.location})
				if got := errdefs.CodeOf(err); got != tc.validateCode || !errors.Is(err, errdefs.ErrFailedPrecondition) {
					t.Errorf("Validate: %v (code %s), want %s", err, got, tc.validateCode)
				}
				in, _, _ := inv(tc.location, "", []byte("x"))
				_, err, _ = runBounded(t, t.Context(), rt, in, 5*time.Second)
				if got := errdefs.CodeOf(err); got != tc.code || !errors.Is(err, errdefs.ErrFailedPrecondition) {
					t.Errorf("Run: %v (code %s), want %s", err, got, tc.code)
				}
				t.Logf("error: %v", err)
			})
		}
	}
}

func TestValidateOK(t *testing.T) {
	rt := process.New(process.Options{})
	if err := rt.Validate(t.Context(), runtime.Artifact{Location: script(t, "true")}); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if rt.Type() != runtime.TypeProcess {
		t.Fatalf("Type() = %q", rt.Type())
	}
}

func TestArgv(t *testing.T) {
	loc := script(t, `echo "$#:$*:$SPEAR_FUNCTION_NAME"`)
	cases := []struct {
		function string
		want     string
	}{
		{"", "0::" + runtime.DefaultFunction + "\n"},
		{runtime.DefaultFunction, "0::" + runtime.DefaultFunction + "\n"},
		{"handler", "1:handler:handler\n"},
		{"two words", "1:two words:two words\n"},
	}
	rt := process.New(process.Options{})
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q", tc.function), func(t *testing.T) {
			in, stdout, stderr := inv(loc, tc.function, nil)
			res, err, _ := runBounded(t, t.Context(), rt, in, 10*time.Second)
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("Run: %+v, %v (stderr %q)", res, err, stderr)
			}
			if got := stdout.String(); got != tc.want {
				t.Errorf("stdout = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEnvironment(t *testing.T) {
	bin := conformance.BuildFixture(t, t.TempDir())
	t.Setenv("SPEAR_NODE_SECRET", "must-not-leak")
	cases := []struct {
		name    string
		env     map[string]string
		attempt int32
		want    []string
	}{
		{
			name: "DefaultPath",
			env:  map[string]string{"A": "1", "B": "two words"},
			want: []string{"A=1", "B=two words", "PATH=" + process.DefaultPath, "SPEAR_EXECUTION_ID=exec-1", "SPEAR_FUNCTION_NAME=environ"},
		},
		{
			name: "OwnPath",
			env:  map[string]string{"PATH": "/opt/bin"},
			want: []string{"PATH=/opt/bin", "SPEAR_EXECUTION_ID=exec-1", "SPEAR_FUNCTION_NAME=environ"},
		},
		{
			name: "SpearVarsNotOverridable",
			env:  map[string]string{"SPEAR_EXECUTION_ID": "forged", "SPEAR_FUNCTION_NAME": "forged", "PATH": "/x"},
			want: []string{"PATH=/x", "SPEAR_EXECUTION_ID=exec-1", "SPEAR_FUNCTION_NAME=environ"},
		},
		{
			name: "Nil",
			want: []string{"PATH=" + process.DefaultPath, "SPEAR_EXECUTION_ID=exec-1", "SPEAR_FUNCTION_NAME=environ"},
		},
		{
			name:    "Attempt",
			env:     map[string]string{"SPEAR_ATTEMPT": "forged", "PATH": "/x"},
			attempt: 2,
			want:    []string{"PATH=/x", "SPEAR_ATTEMPT=2", "SPEAR_EXECUTION_ID=exec-1", "SPEAR_FUNCTION_NAME=environ"},
		},
	}
	rt := process.New(process.Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, stdout, stderr := inv(bin, "environ", nil)
			in.Env, in.Attempt = tc.env, tc.attempt
			res, err, _ := runBounded(t, t.Context(), rt, in, 10*time.Second)
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("Run: %+v, %v (stderr %q)", res, err, stderr)
			}
			if got, want := stdout.String(), strings.Join(tc.want, "\n")+"\n"; got != want {
				t.Errorf("environment:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestExitBySignal(t *testing.T) {
	cases := []struct {
		name string
		body string
		want int
	}{
		{"Exit0", "exit 0", 0},
		{"Exit42", "exit 42", 42},
		{"SIGKILL", "kill -KILL $$", 128 + 9},
		{"SIGTERM", "kill -TERM $$", 128 + 15},
	}
	rt := process.New(process.Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, _, _ := inv(script(t, tc.body), "", nil)
			res, err, _ := runBounded(t, t.Context(), rt, in, 10*time.Second)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.ExitCode != tc.want {
				t.Errorf("ExitCode = %d, want %d", res.ExitCode, tc.want)
			}
		})
	}
}

// TestBackgroundChildKilled checks that children left running when the
// function exits are killed with its process group, whether or not they hold
// its output open.
func TestBackgroundChildKilled(t *testing.T) {
	cases := []struct {
		name string
		body string
	}{
		{"DetachedOutput", "sleep 300 >/dev/null 2>&1 </dev/null &\necho $!"},
		{"HoldingStdout", "sleep 300 &\necho $!"},
		{"Grandchild", "sh -c 'sleep 300 & echo $!; wait' &\nsleep 0.05"},
	}
	// The group is killed, so the output closes at once: Run returns long
	// before this drain timeout, which would end a child holding it.
	rt := process.New(process.Options{DrainTimeout: time.Hour})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, stdout, stderr := inv(script(t, tc.body), "", nil)
			res, err, elapsed := runBounded(t, t.Context(), rt, in, 60*time.Second)
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("Run: %+v, %v (stderr %q)", res, err, stderr)
			}
			t.Logf("Run returned after %v", elapsed)
			// Gone, zombie included, when Run returns.
			if pid := firstPid(t, stdout.String()); syscall.Kill(pid, 0) == nil {
				t.Errorf("child %d is left after Run", pid)
			}
		})
	}
}

// TestEscapedDescendant checks that a descendant that left the process group
// and holds the output open does not make Run hang: the run's cgroup kills
// it, or, without cgroups, Run stops waiting for the output after the drain
// timeout.
func TestEscapedDescendant(t *testing.T) {
	const drain = 200 * time.Millisecond
	rt := process.New(process.Options{DrainTimeout: drain, OwnCgroups: true})
	in, stdout, stderr := inv(script(t, "setsid sleep 300 &\necho $!\nsleep 0.2"), "", nil)
	res, err, elapsed := runBounded(t, t.Context(), rt, in, 60*time.Second)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run: %+v, %v (stderr %q)", res, err, stderr)
	}
	pid := firstPid(t, stdout.String())
	t.Logf("Run returned after %v", elapsed)
	if pids, mem := process.CgroupControllers(rt); pids || mem {
		// The run's cgroup holds it: killed with the rest when the
		// function exits.
		waitGone(t, pid)
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	// The descendant holds the output for 300 s: only the drain timeout
	// can have ended the run.
	if elapsed < drain {
		t.Errorf("Run took %v, less than the drain timeout %v", elapsed, drain)
	}
}

func TestDeadlineKillsGroup(t *testing.T) {
	rt := process.New(process.Options{})
	const timeout = 300 * time.Millisecond
	in, stdout, _ := inv(script(t, "sleep 300 &\necho $!\nsleep 300"), "", nil)
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	// A hang bound: the group is killed as soon as ctx ends, far sooner.
	_, err, elapsed := runBounded(t, ctx, rt, in, 30*time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: error %v, want DeadlineExceeded", err)
	}
	t.Logf("Run returned %v after the deadline", elapsed-timeout)
	waitGone(t, firstPid(t, stdout.String()))
}

func TestContextCause(t *testing.T) {
	bin := conformance.BuildFixture(t, t.TempDir())
	cause := errors.New("execution aborted by user")
	rt := process.New(process.Options{})
	cases := []struct {
		name string
		ctx  func(context.Context) (context.Context, context.CancelFunc)
		want error
	}{
		{"TimeoutCause", func(ctx context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeoutCause(ctx, 100*time.Millisecond, cause)
		}, context.DeadlineExceeded},
		{"CancelCause", func(ctx context.Context) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancelCause(ctx)
			time.AfterFunc(100*time.Millisecond, func() { cancel(cause) })
			return ctx, func() { cancel(nil) }
		}, context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx(t.Context())
			defer cancel()
			in, _, _ := inv(bin, "sleep", nil)
			_, err, _ := runBounded(t, ctx, rt, in, 5*time.Second)
			if !errors.Is(err, tc.want) || !errors.Is(err, cause) {
				t.Errorf("Run: error %v, want one wrapping %v and the cause", err, tc.want)
			}
		})
	}
}

// TestGracefulStopKillsGroup checks the end of a graceful stop: a function
// that ignores SIGTERM is killed once the grace is over, and one that exits
// on SIGTERM ends the grace at once, its group (here a child that ignores
// SIGTERM) killed after it. Either way Run reports the cancellation and
// leaves nothing running.
func TestGracefulStopKillsGroup(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		grace time.Duration
		// wantOut is the output expected after the pid lines.
		wantOut string
	}{
		{
			name:  "IgnoresTerm",
			body:  "trap '' TERM\nsleep 60 &\necho $!\necho $$\nsleep 60",
			grace: 300 * time.Millisecond,
		},
		{
			// The grace is far longer than the hang bound: Run can only
			// return in time because the function's exit ends it.
			name: "ExitsOnTerm",
			// It waits with the wait builtin, which a trapped signal
			// interrupts: a shell runs a trap only after a foreground
			// command ends, and a SIGTERM sent just before the foreground
			// sleep is forked would not reach it.
			body:    "trap 'echo bye; exit 0' TERM\n(trap '' TERM; exec sleep 60) &\necho $!\necho $$\nsleep 60 &\nwait $!",
			grace:   time.Hour,
			wantOut: "bye\n",
		},
	}
	rt := process.New(process.Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, stdout, stderr := inv(script(t, tc.body), "", nil)
			ctx, cancel := context.WithCancelCause(t.Context())
			defer cancel(nil)
			returned := make(chan struct{})
			defer close(returned)
			go func() {
				// Stop once both pids are out: the trap is installed.
				for strings.Count(stdout.String(), "\n") < 2 {
					select {
					case <-returned:
						return
					case <-time.After(10 * time.Millisecond):
					}
				}
				cancel(&runtime.GracefulStop{Grace: tc.grace, Reason: context.Canceled})
			}()
			_, err, elapsed := runBounded(t, ctx, rt, in, 20*time.Second)
			t.Logf("Run returned after %v: %v", elapsed, err)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run: error %v, want one wrapping context.Canceled", err)
			}
			var gs *runtime.GracefulStop
			if !errors.As(err, &gs) {
				t.Errorf("Run: error %v does not carry the GracefulStop cause", err)
			}
			out := stdout.String()
			lines := strings.SplitN(out, "\n", 3)
			if len(lines) < 3 {
				t.Fatalf("stdout %q: want two pid lines (stderr %q)", out, stderr)
			}
			if lines[2] != tc.wantOut {
				t.Errorf("output after the pids = %q, want %q", lines[2], tc.wantOut)
			}
			waitGone(t, firstPid(t, lines[0]))
			waitGone(t, firstPid(t, lines[1]))
		})
	}
}

// TestStdinNotRead checks that a function that does not read its input, or
// reads only part of it, or closes stdin, neither fails nor hangs.
func TestStdinNotRead(t *testing.T) {
	bin := conformance.BuildFixture(t, t.TempDir())
	large := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	cases := []struct {
		name     string
		location string
		function string
		input    []byte
		want     string
	}{
		{"NeverReads", bin, "env", large, ""},
		{"ExitsAtOnce", script(t, "exit 0"), "", large, ""},
		{"ClosesStdin", script(t, "exec 0<&-\nsleep 0.05\necho done"), "", large, "done\n"},
		{"ReadsPart", script(t, "head -c 10"), "", large, "0123456789"},
		{"NilInput", bin, "echo", nil, ""},
	}
	rt := process.New(process.Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, stdout, stderr := inv(tc.location, tc.function, tc.input)
			if tc.input == nil {
				in.Input = nil
			}
			res, err, _ := runBounded(t, t.Context(), rt, in, 10*time.Second)
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("Run: %+v, %v (stderr %q)", res, err, stderr)
			}
			if got := stdout.String(); got != tc.want {
				t.Errorf("stdout = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestMemoryUsed checks that the peak RSS is measured and is the child's, not
// the (larger) peak of this process, which Linux folds into a vfork'ed
// child's ru_maxrss.
func TestMemoryUsed(t *testing.T) {
	bin := conformance.BuildFixture(t, t.TempDir())
	// Grow this process's peak well above the fixture's.
	ballast := bytes.Repeat([]byte{1}, 128<<20)
	own := selfHWM(t)
	cases := []struct {
		name     string
		function string
		wantSome bool // long enough to be sampled
	}{
		{"Ticks", "ticks", true},
		{"Echo", "echo", false},
	}
	rt := process.New(process.Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, _, _ := inv(bin, tc.function, []byte("hello"))
			res, err, _ := runBounded(t, t.Context(), rt, in, 10*time.Second)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			t.Logf("MemoryUsedBytes = %d (this process's peak: %d)", res.MemoryUsedBytes, own)
			if tc.wantSome && res.MemoryUsedBytes <= 0 {
				t.Errorf("MemoryUsedBytes = %d, want > 0", res.MemoryUsedBytes)
			}
			if res.MemoryUsedBytes >= own {
				t.Errorf("MemoryUsedBytes = %d, not below this process's peak %d: the parent's peak leaked in", res.MemoryUsedBytes, own)
			}
		})
	}
	_ = ballast[len(ballast)-1]
}

// selfHWM returns this process's peak RSS in bytes.
func selfHWM(t *testing.T) int64 {
	t.Helper()
	peak, err := procstat.PeakRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return peak
}

func TestMemoryLimit(t *testing.T) {
	rt := process.New(process.Options{})
	// RLIMIT_AS only stands in for a missing memory cgroup, and is set
	// right after the start: the script waits for it (bounded) before
	// reporting it.
	want, body := strconv.Itoa(512<<10), "i=0\nwhile [ \"$(ulimit -v)\" = unlimited ] && [ $i -lt 1000 ]; do i=$((i+1)); sleep 0.01; done\nulimit -v"
	if _, mem := process.CgroupControllers(rt); mem {
		want, body = "unlimited", "ulimit -v"
	}
	in, stdout, stderr := inv(script(t, body), "", nil)
	in.MemoryLimitBytes = 512 << 20
	res, err, _ := runBounded(t, t.Context(), rt, in, 60*time.Second)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run: %+v, %v (stderr %q)", res, err, stderr)
	}
	if got := strings.TrimSpace(stdout.String()); got != want {
		t.Errorf("ulimit -v = %q, want %q", got, want)
	}
}

// cgroupsExpected reports whether the cgroup controller ctrl must be
// usable: on Linux, as root, in CI, with its hierarchy writable.
func cgroupsExpected(ctrl string) bool {
	return goruntime.GOOS == "linux" && os.Getenv("CI") == "true" && os.Geteuid() == 0 &&
		unix.Access("/sys/fs/cgroup/"+ctrl, unix.W_OK) == nil
}

// processesWithEnv returns the processes whose environment has kv.
func processesWithEnv(t *testing.T, kv string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && bytes.Contains(append([]byte{0}, env...), []byte("\x00"+kv+"\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// forkBomb is a fork bomb that only goes off once its shell is in a pids
// cgroup made by Run (exit 3 otherwise), then waits in sleep (exec'd: it
// needs no new process) for Run's deadline.
const forkBomb = `i=0
until grep -Eq '(:pids:|^0::).*/spear/' /proc/$$/cgroup; do
	i=$((i+1))
	if [ $i -ge 200 ]; then echo "not in a pids cgroup: not forking" >&2; exit 3; fi
	sleep 0.01
done
b() { b | b & }
b
exec sleep 30`

// TestCgroups checks what the run's cgroup enforces and measures. The cases
// run only where the controllers they need are available (and must be, in
// CI as root).
func TestCgroups(t *testing.T) {
	alloc := "exec head -c 200000000 /dev/zero | tail"
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		alloc = `exec /usr/bin/python3 -c "bytearray(200<<20)"`
	}
	cases := []struct {
		name      string
		body      string
		pidsLimit int
		memLimit  int64
		timeout   time.Duration
		needPids  bool
		needMem   bool
		// wantPidsMax is pids.max in the run's cgroup, when checked.
		wantPidsMax string
		check       func(t *testing.T, res runtime.Result, err error)
	}{
		{
			name:        "ForkBombContained",
			body:        forkBomb,
			pidsLimit:   64,
			timeout:     2 * time.Second,
			needPids:    true,
			wantPidsMax: "64",
			check: func(t *testing.T, res runtime.Result, err error) {
				if err == nil && res.ExitCode == 3 {
					t.Fatalf("the script did not find itself in a pids cgroup")
				}
				if !errors.Is(err, context.DeadlineExceeded) && (err != nil || res.ExitCode == 0) {
					t.Errorf("Run: %+v, %v; want a timeout or a non-zero exit", res, err)
				}
			},
		},
		{
			name:        "DefaultPidsLimit",
			body:        "echo hi",
			needPids:    true,
			wantPidsMax: strconv.Itoa(process.DefaultPidsLimit),
			check: func(t *testing.T, res runtime.Result, err error) {
				if err != nil || res.ExitCode != 0 {
					t.Errorf("Run: %+v, %v", res, err)
				}
			},
		},
		{
			name:      "NoPidsLimit",
			body:      "echo hi",
			pidsLimit: -1,
			needPids:  true,
			// A new cgroup's default.
			wantPidsMax: "max",
			check: func(t *testing.T, res runtime.Result, err error) {
				if err != nil || res.ExitCode != 0 {
					t.Errorf("Run: %+v, %v", res, err)
				}
			},
		},
		{
			name:     "MemoryLimit",
			body:     alloc,
			memLimit: 32 << 20,
			needMem:  true,
			check: func(t *testing.T, res runtime.Result, err error) {
				if err != nil || res.ExitCode == 0 {
					t.Errorf("Run: %+v, %v; want a non-zero exit", res, err)
				}
				if !res.MemoryLimitHit {
					t.Errorf("MemoryLimitHit = false (%+v)", res)
				}
			},
		},
		{
			// A run under a memory limit has a memory cgroup: even a short
			// one's peak is measured exactly.
			name:     "ShortRunMeasured",
			body:     "echo hi",
			needMem:  true,
			memLimit: 64 << 20,
			check: func(t *testing.T, res runtime.Result, err error) {
				if err != nil || res.ExitCode != 0 {
					t.Fatalf("Run: %+v, %v", res, err)
				}
				if res.MemoryUsedBytes <= 0 || res.MemoryLimitHit {
					t.Errorf("MemoryUsedBytes = %d, MemoryLimitHit = %v; want > 0, false", res.MemoryUsedBytes, res.MemoryLimitHit)
				}
			},
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rt := process.New(process.Options{PidsLimit: tc.pidsLimit, OwnCgroups: true})
			pids, mem := process.CgroupControllers(rt)
			for _, need := range []struct {
				ctrl       string
				needed, ok bool
			}{{"pids", tc.needPids, pids}, {"memory", tc.needMem, mem}} {
				if need.needed && !need.ok {
					if cgroupsExpected(need.ctrl) {
						t.Fatalf("the %s cgroup controller is not used, though CI runs as root with /sys/fs/cgroup/%s writable", need.ctrl, need.ctrl)
					}
					t.Skipf("the %s cgroup controller is not available here (needs Linux, root, /sys/fs/cgroup/%s writable)", need.ctrl, need.ctrl)
				}
			}
			var (
				mu      sync.Mutex
				dirs    []string
				pidsMax string
			)
			process.SetCgroupHook(rt, func(d []string) {
				mu.Lock()
				defer mu.Unlock()
				dirs = d
				for _, dir := range d {
					if b, err := os.ReadFile(filepath.Join(dir, "pids.max")); err == nil {
						pidsMax = strings.TrimSpace(string(b))
					}
				}
			})
			execID := fmt.Sprintf("cgroup-test-%d-%d-%d", os.Getpid(), i, time.Now().UnixNano())
			in, _, stderr := inv(script(t, tc.body), "", nil)
			in.ExecutionID = execID
			in.MemoryLimitBytes = tc.memLimit
			ctx := t.Context()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			res, err, elapsed := runBounded(t, ctx, rt, in, 30*time.Second)
			t.Logf("Run after %v: %+v, %v (stderr: %s)", elapsed, res, err, trimLog(stderr.String()))
			mu.Lock()
			gotDirs, gotMax := dirs, pidsMax
			mu.Unlock()
			if len(gotDirs) == 0 {
				t.Fatal("the run got no cgroup")
			}
			if tc.wantPidsMax != "" && gotMax != tc.wantPidsMax {
				t.Errorf("pids.max = %q, want %q", gotMax, tc.wantPidsMax)
			}
			tc.check(t, res, err)
			for _, d := range gotDirs {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("cgroup %s left behind (stat: %v)", d, err)
				}
			}
			// Killed processes may take a moment to be gone.
			deadline := time.Now().Add(5 * time.Second)
			for {
				left := processesWithEnv(t, process.EnvExecutionID+"="+execID)
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("%d processes of the run left: %v", len(left), left)
					for _, pid := range left {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// trimLog shortens s (a fork bomb's complaints) for the log.
func trimLog(s string) string {
	if len(s) > 200 {
		return fmt.Sprintf("%s... (%d bytes)", s[:200], len(s))
	}
	return s
}

// TestOutputSinkFails checks that a failing writer is reported without
// blocking the function.
func TestOutputSinkFails(t *testing.T) {
	bin := conformance.BuildFixture(t, t.TempDir())
	rt := process.New(process.Options{})
	in, _, _ := inv(bin, "echo", bytes.Repeat([]byte("x"), 1<<20))
	in.Stdout = failWriter{}
	res, err, _ := runBounded(t, t.Context(), rt, in, 10*time.Second)
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Run: error %v, want one wrapping ErrUnavailable", err)
	}
	if res.ExitCode != 0 {
		t.Errorf("ExitCode = %d, want 0 (output must still be drained)", res.ExitCode)
	}
}

// TestSharedPidsCgroup: by default runs without a memory limit start inside
// the node's shared pids cgroup, which contains a fork bomb too.
func TestSharedPidsCgroup(t *testing.T) {
	rt := process.New(process.Options{PidsLimit: 16})
	if pids, _ := process.CgroupControllers(rt); !pids {
		if cgroupsExpected("pids") {
			t.Fatal("the pids cgroup controller is not used, though CI runs as root with /sys/fs/cgroup/pids writable")
		}
		t.Skip("the pids cgroup controller is not available here (needs Linux, root, /sys/fs/cgroup/pids writable)")
	}
	execID := fmt.Sprintf("shared-bomb-%d-%d", os.Getpid(), time.Now().UnixNano())
	in, _, stderr := inv(script(t, forkBomb), "", nil)
	in.ExecutionID = execID
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	res, err, elapsed := runBounded(t, ctx, rt, in, 30*time.Second)
	t.Logf("Run after %v: %+v, %v (stderr: %s)", elapsed, res, err, trimLog(stderr.String()))
	if err == nil && res.ExitCode == 3 {
		t.Fatal("the script did not find itself in a pids cgroup")
	}
	if !errors.Is(err, context.DeadlineExceeded) && (err != nil || res.ExitCode == 0) {
		t.Errorf("Run: %+v, %v; want a timeout or a non-zero exit", res, err)
	}
	// Run returns once the bomb's processes are reaped, not only killed:
	// nothing is left, and the next run can fork at once.
	if left := processesWithEnv(t, process.EnvExecutionID+"="+execID); len(left) > 0 {
		t.Fatalf("processes of the fork bomb left after Run: %v", left)
	}
	in, stdout, stderr := inv(script(t, "i=0\nwhile [ $i -lt 8 ]; do (true) & i=$((i+1)); done\nwait\necho forked\n"), "", nil)
	res, err, _ = runBounded(t, t.Context(), rt, in, 30*time.Second)
	if err != nil || res.ExitCode != 0 || stdout.String() != "forked\n" {
		t.Errorf("the run after the bomb: %+v, %v (stdout %q, stderr %s)", res, err, stdout, trimLog(stderr.String()))
	}
}

// TestReaperLeavesOtherChildren: the node reaps what runs leave, never a
// child os/exec waits for, though sweeps run while such children exit.
func TestReaperLeavesOtherChildren(t *testing.T) {
	rt := process.New(process.Options{})
	defer func() { _ = rt.Close(t.Context()) }()
	var wg sync.WaitGroup
	for range 4 { // runs whose background children the sweep reaps
		wg.Go(func() {
			in, _, _ := inv(script(t, "sleep 300 &\nsetsid sleep 0.05 &\n"), "", nil)
			_, _, _ = runBounded(t, t.Context(), rt, in, 60*time.Second)
		})
	}
	for i := range 40 {
		wg.Go(func() {
			cmd := exec.Command("sh", "-c", "sleep 0.0$0", strconv.Itoa(i%10))
			if err := cmd.Run(); err != nil {
				t.Errorf("a child the runtime does not own: %v", err)
			}
		})
	}
	wg.Wait()
}

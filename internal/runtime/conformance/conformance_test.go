package conformance_test

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/runtime/conformance"
)

// TestFixture checks the fixture command itself, run directly, so that a
// runtime failing the suite is not a broken fixture.
func TestFixture(t *testing.T) {
	bin := conformance.BuildFixture(t, t.TempDir())

	t.Run("Static", func(t *testing.T) {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Fatal("fixture is dynamically linked (has PT_INTERP); it must run FROM scratch")
			}
		}
	})

	cases := []struct {
		name       string
		args       []string
		env        []string
		stdin      string
		wantOut    string
		wantErr    string
		wantStatus int
	}{
		{name: "Echo", args: []string{"echo"}, stdin: "hi\nthere", wantOut: "hi\nthere"},
		{name: "Stderr", args: []string{"stderr"}, stdin: "a\nb\n", wantOut: "ok", wantErr: "a\nb\n"},
		{name: "Exit", args: []string{"exit"}, wantErr: "boom", wantStatus: 3},
		{name: "Env", args: []string{"env"}, env: []string{"SPEAR_TEST_VAR=v a l"}, wantOut: "v a l"},
		{name: "Ticks", args: []string{"ticks"}, wantOut: "tick 0\ntick 1\ntick 2\ntick 3\ntick 4\n"},
		{name: "Alloc", args: []string{"alloc"}, wantOut: "survived 64\n"},
		{name: "Environ", args: []string{"environ"}, env: []string{"B=2", "A=1"}, wantOut: "A=1\nB=2\n"},
		{name: "Unknown", args: []string{"nope"}, wantErr: "fixture: unknown function \"nope\"\n", wantStatus: 2},
		{name: "NoArgs", wantErr: "fixture: no function name\n", wantStatus: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), bin, tc.args...)
			cmd.Env = tc.env
			if cmd.Env == nil {
				cmd.Env = []string{}
			}
			cmd.Stdin = strings.NewReader(tc.stdin)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			status := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				status = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if status != tc.wantStatus {
				t.Errorf("exit status %d, want %d", status, tc.wantStatus)
			}
			if stdout.String() != tc.wantOut {
				t.Errorf("stdout %q, want %q", stdout.String(), tc.wantOut)
			}
			if stderr.String() != tc.wantErr {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.wantErr)
			}
		})
	}

	// graceful waits for SIGTERM and says goodbye.
	t.Run("Graceful", func(t *testing.T) {
		cmd := exec.CommandContext(t.Context(), bin, "graceful")
		cmd.Env = []string{}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make([]byte, len("ready\n"))
		if _, err := io.ReadFull(stdout, ready); err != nil || string(ready) != "ready\n" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("first output %q (%v), want %q", ready, err, "ready\n")
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(stdout)
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("after SIGTERM: %v, want exit status 0", err)
		}
		if string(rest) != "bye\n" {
			t.Errorf("output after SIGTERM %q, want %q", rest, "bye\n")
		}
	})

	// sleep and spin never end on their own.
	for _, fn := range []string{"sleep", "spin"} {
		t.Run("Forever/"+fn, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			err := exec.CommandContext(ctx, bin, fn).Run()
			if ctx.Err() == nil {
				t.Fatalf("%s ended on its own: %v", fn, err)
			}
		})
	}
}

package datadir_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/spear-go/spear/internal/datadir"
	"github.com/spear-go/spear/internal/errdefs"
)

// holderEnv makes the test binary run TestHolderProcess as a lock holder
// of the directory it names.
const holderEnv = "DATADIR_TEST_HOLD"

func acquire(t *testing.T, dir string) *datadir.Lock {
	t.Helper()
	l, err := datadir.Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = l.Release() })
	return l
}

// wantInUse fails unless err refuses dir because pid holds it.
func wantInUse(t *testing.T, err error, dir string, pid int) {
	t.Helper()
	var inUse *datadir.InUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("second Acquire: %v, want an *InUseError", err)
	}
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("error %v does not wrap ErrFailedPrecondition", err)
	}
	if inUse.PID != pid {
		t.Errorf("holder pid %d, want %d", inUse.PID, pid)
	}
	for _, s := range []string{dir, fmt.Sprintf("pid %d", pid), "--data-dir"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q does not mention %q", err, s)
		}
	}
}

func lockFileContents(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, datadir.LockFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestSecondAcquireRefused: a second Acquire in the same process opens the
// file again (another open file description) and must be refused.
func TestSecondAcquireRefused(t *testing.T) {
	dir := t.TempDir()
	acquire(t, dir)
	if got, want := lockFileContents(t, dir), strconv.Itoa(os.Getpid()); got != want {
		t.Errorf("LOCK holds %q, want the holder's pid %s", got, want)
	}
	l, err := datadir.Acquire(dir)
	if err == nil {
		_ = l.Release()
		t.Fatal("second Acquire of a held dir succeeded")
	}
	wantInUse(t, err, dir, os.Getpid())
}

func TestReleaseThenAcquire(t *testing.T) {
	dir := t.TempDir()
	for i := range 3 {
		l, err := datadir.Acquire(dir)
		if err != nil {
			t.Fatalf("round %d: Acquire: %v", i, err)
		}
		if err := l.Release(); err != nil {
			t.Fatalf("round %d: Release: %v", i, err)
		}
		if err := l.Release(); err != nil {
			t.Fatalf("round %d: second Release: %v", i, err)
		}
	}
	if got := lockFileContents(t, dir); got != "" {
		t.Errorf("LOCK holds %q after release, want it empty", got)
	}
}

// TestStaleLockFile: what a holder left in the file does not matter, only
// whether someone holds the lock.
func TestStaleLockFile(t *testing.T) {
	for _, tc := range []struct{ name, contents string }{
		{"dead pid", "2147483646\n"},
		{"empty", ""},
		{"garbage", "not a pid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, datadir.LockFile), []byte(tc.contents), 0o644); err != nil {
				t.Fatal(err)
			}
			acquire(t, dir)
			if got, want := lockFileContents(t, dir), strconv.Itoa(os.Getpid()); got != want {
				t.Errorf("LOCK holds %q, want %s", got, want)
			}
		})
	}
}

func TestMissingDir(t *testing.T) {
	_, err := datadir.Acquire(filepath.Join(t.TempDir(), "absent"))
	if !errors.Is(err, errdefs.ErrInternal) {
		t.Fatalf("Acquire of a missing dir: %v, want ErrInternal", err)
	}
}

// TestKilledHolder: another process holds the lock, a node here is refused
// with its pid; once it is killed with SIGKILL the lock is free.
func TestKilledHolder(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHolderProcess$")
	cmd.Env = append(os.Environ(), holderEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe() // the holder waits on it
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "locked\n" {
		t.Fatalf("holder said %q, %v; want locked", line, err)
	}

	_, err = datadir.Acquire(dir)
	wantInUse(t, err, dir, cmd.Process.Pid)

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	acquire(t, dir)
}

// TestHolderProcess is the lock holder of TestKilledHolder: it takes the
// lock of $DATADIR_TEST_HOLD, says so and waits until its stdin closes.
func TestHolderProcess(t *testing.T) {
	dir := os.Getenv(holderEnv)
	if dir == "" {
		t.Skip("runs only as TestKilledHolder's helper process")
	}
	if _, err := datadir.Acquire(dir); err != nil {
		t.Fatal(err)
	}
	fmt.Println("locked")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}

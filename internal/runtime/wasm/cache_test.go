package wasm

import (
	"fmt"
	goruntime "runtime"
	"testing"

	"github.com/spear-go/spear/internal/runtime"
)

// TestForget: Forget releases a task's compiled modules in every engine
// (memory ceiling), only for the version it names, and a module in use only
// once its run is over; CachedArtifacts counts what is held.
func TestForget(t *testing.T) {
	ctx := t.Context()
	echo := fixture(t, "echo")
	echo.Digest = "sha256:" + hashFile(t, echo.Location)
	other := echo
	other.Digest = "sha256:" + hashFile(t, fixture(t, "env").Location)
	anyVersion := echo
	anyVersion.Digest = ""
	otherTask := echo
	otherTask.TaskID = "another-task"

	tests := []struct {
		name   string
		forget runtime.Artifact
		inUse  bool // a run holds the module of the unlimited engine
		want   int  // modules held after Forget (and after the run)
	}{
		{"the version held", echo, false, 0},
		{"any version", anyVersion, false, 0},
		{"another version", other, false, 2},
		{"another task", otherTask, false, 2},
		{"in use until released", echo, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntime(t, Options{})
			if err := r.Validate(ctx, echo); err != nil { // the unlimited engine
				t.Fatal(err)
			}
			limited := func(inv *runtime.Invocation) { inv.MemoryLimitBytes = 64 << 20 }
			if _, out, _, err := run(t, ctx, r, echo, "", "x", limited); err != nil || out != "x" {
				t.Fatalf("Run with a memory limit: %q %v", out, err)
			}
			if got := r.CachedArtifacts(); got != 2 {
				t.Fatalf("CachedArtifacts before Forget = %d, want 2 (one per engine)", got)
			}
			release := func() {}
			if tc.inUse {
				e, err := r.engine(ctx, 0)
				if err != nil {
					t.Fatal(err)
				}
				m, err := e.acquire(ctx, echo)
				if err != nil {
					t.Fatal(err)
				}
				release = func() { e.release(ctx, m) }
			}
			r.Forget(ctx, tc.forget)
			if tc.inUse {
				if got := r.CachedArtifacts(); got != 1 {
					t.Errorf("CachedArtifacts while a run uses the forgotten module = %d, want 1", got)
				}
				release()
			}
			if got := r.CachedArtifacts(); got != tc.want {
				t.Errorf("CachedArtifacts after Forget = %d, want %d", got, tc.want)
			}
			// Whatever was forgotten, the task still runs (compiled again).
			if _, out, _, err := run(t, ctx, r, echo, "", "again", nil); err != nil || out != "again" {
				t.Errorf("Run after Forget: %q %v", out, err)
			}
		})
	}
}

// TestForgetWhileCompiling: Forget may come while the module is being
// compiled; the module is then closed once its compilation's users are
// done, and nothing races.
func TestForgetWhileCompiling(t *testing.T) {
	ctx := t.Context()
	r := newRuntime(t, Options{})
	for i := range 20 {
		a := fixture(t, "echo")
		a.TaskID = fmt.Sprintf("task-%d", i)
		done := make(chan error, 1)
		go func() { done <- r.Validate(ctx, a) }()
		waitCompiling(t, r, a.TaskID, done)
		r.Forget(ctx, a)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		r.Forget(ctx, a) // whichever came first, now it is forgotten
	}
	if got := r.CachedArtifacts(); got != 0 {
		t.Errorf("CachedArtifacts = %d after every task was forgotten, want 0", got)
	}
}

// waitCompiling waits until the unlimited engine has a module for task
// (being compiled, or compiled), or until validated reports that the
// validation is over.
func waitCompiling(t *testing.T, r *Runtime, task string, validated chan error) {
	t.Helper()
	e, err := r.engine(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for {
		e.mu.Lock()
		_, ok := e.mods[task]
		e.mu.Unlock()
		if ok {
			return
		}
		select {
		case err := <-validated:
			validated <- err
			return
		default:
			goruntime.Gosched()
		}
	}
}

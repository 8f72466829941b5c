package process_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/runtime/conformance"
	"github.com/spear-go/spear/internal/runtime/process"
	"github.com/spear-go/spear/internal/sandbox"
	"github.com/spear-go/spear/internal/testwait"
)

// spareRuntime returns a runtime that starts spares, as ids of ids (made
// at the time when nil), closed with the test.
func spareRuntime(t *testing.T, mode sandbox.Mode, ttl time.Duration, ids ...*execution.IDs) *process.Runtime {
	t.Helper()
	if len(ids) == 0 {
		ids = append(ids, execution.NewIDs(time.Now))
	}
	rt := process.New(process.Options{
		Sandbox: mode, ReadRoots: []string{os.TempDir()}, NodeID: "spares-test", IDs: ids[0],
	})
	process.SetSpareTTL(rt, ttl)
	t.Cleanup(func() { _ = rt.Close(context.Background()) })
	return rt
}

// idScript echoes its execution id, then its input.
const idScript = `printf '%s:' "$SPEAR_EXECUTION_ID"; cat`

// reserveReady calls for a spare of the kind of tmpl until one is ready
// (the first call only counts as demand) and returns its id and release.
func reserveReady(t *testing.T, rt *process.Runtime, tmpl *runtime.Invocation) (string, func()) {
	t.Helper()
	if _, _, ok := rt.Reserve(tmpl); ok {
		t.Fatal("a spare was ready before any demand")
	}
	rt.Reserve(tmpl) // busy now: one starts
	testwait.Until(t, "a spare is ready", func() bool { return rt.Spares().Ready > 0 })
	id, release, ok := rt.Reserve(tmpl)
	if !ok || id == "" {
		t.Fatal("no spare reserved while one was ready")
	}
	return id, release
}

// runAs runs tmpl's kind of invocation as id with input and returns its
// output.
func runAs(t *testing.T, rt *process.Runtime, tmpl *runtime.Invocation, id, input string) string {
	t.Helper()
	in := *tmpl
	var out, errs conformance.Buffer
	in.ExecutionID, in.Input, in.Stdout, in.Stderr = id, strings.NewReader(input), &out, &errs
	res, err := rt.Run(context.Background(), &in)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run: %+v, %v (stderr %q)", res, err, errs.String())
	}
	return out.String()
}

func TestSpareRunsAsItsID(t *testing.T) {
	for _, mode := range []sandbox.Mode{sandbox.ModeOff, sandbox.ModeAuto} {
		t.Run(string(mode), func(t *testing.T) {
			rt := spareRuntime(t, mode, time.Minute)
			tmpl, _, _ := inv(script(t, idScript), "", nil)
			tmpl.Attempt = 1
			id, release := reserveReady(t, rt, tmpl)
			defer release()
			if got, want := runAs(t, rt, tmpl, id, "in"), id+":in"; got != want {
				t.Fatalf("output %q, want %q: the spare runs as the id it was reserved as", got, want)
			}
			if c := rt.Spares(); c.Used != 1 || c.Discarded != 0 {
				t.Fatalf("spares %+v, want 1 used, none discarded", c)
			}
			release() // after the run: nothing left to discard
			if c := rt.Spares(); c.Discarded != 0 {
				t.Fatalf("release after the run discarded: %+v", c)
			}
		})
	}
}

// TestSpareNotForEveryInvocation: invocations with an environment of their
// own, retries and tasks that opt out get no spare, and a spare reserved
// for one kind is not used by a run of another.
func TestSpareNotForEveryInvocation(t *testing.T) {
	rt := spareRuntime(t, sandbox.ModeOff, time.Minute)
	path := script(t, idScript)
	cases := map[string]func(*runtime.Invocation){
		"environment": func(in *runtime.Invocation) { in.Env = map[string]string{"A": "1"} },
		"retry":       func(in *runtime.Invocation) { in.Attempt = 2 },
		"opted out": func(in *runtime.Invocation) {
			in.Artifact.Metadata = map[string]string{process.MetaPrestart: "false"}
		},
	}
	for name, change := range cases {
		tmpl, _, _ := inv(path, "", nil)
		change(tmpl)
		for range 3 {
			if _, _, ok := rt.Reserve(tmpl); ok {
				t.Fatalf("%s: a spare was reserved", name)
			}
		}
	}
	if c := rt.Spares(); c.Ready != 0 {
		t.Fatalf("spares started for invocations that cannot have them: %+v", c)
	}

	tmpl, _, _ := inv(path, "", nil)
	id, release := reserveReady(t, rt, tmpl)
	defer release()
	other := *tmpl
	other.Function = "other"
	if got := runAs(t, rt, &other, id, "x"); got != id+":x" {
		t.Fatalf("output %q", got)
	}
	wantDiscarded(t, rt, "the mismatched one")
}

// wantDiscarded waits until rt has discarded a spare (off the run's path),
// and checks that none was used.
func wantDiscarded(t *testing.T, rt *process.Runtime, which string) {
	t.Helper()
	testwait.Until(t, which+" discarded", func() bool { return rt.Spares().Discarded > 0 })
	if c := rt.Spares(); c.Used != 0 {
		t.Fatalf("spares %+v: one was used", c)
	}
}

// TestSpareStillStarting: a call that finds its kind's spare still
// starting reserves it, and its run waits for the start instead of
// starting a child of its own.
func TestSpareStillStarting(t *testing.T) {
	rt := spareRuntime(t, sandbox.ModeOff, time.Minute)
	gate := make(chan struct{})
	process.SetSpareStartHook(rt, func() { <-gate })
	tmpl, _, _ := inv(script(t, idScript), "", nil)
	rt.Reserve(tmpl) // demand
	rt.Reserve(tmpl) // busy now: one starts, held at the gate
	id, release, ok := rt.Reserve(tmpl)
	if !ok {
		t.Fatal("the spare still starting was not reserved")
	}
	defer release()
	if c := rt.Spares(); c.Ready != 0 {
		t.Fatalf("spares %+v: one was ready before the gate opened", c)
	}
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		in := *tmpl
		var out, errs conformance.Buffer
		in.ExecutionID, in.Input, in.Stdout, in.Stderr = id, strings.NewReader("in"), &out, &errs
		_, err := rt.Run(context.Background(), &in)
		done <- result{out.String(), err}
	}()
	close(gate)
	r := <-done
	if r.err != nil || r.out != id+":in" {
		t.Fatalf("output %q, %v; want %q: the run is the spare's", r.out, r.err, id+":in")
	}
	if c := rt.Spares(); c.Used != 1 || c.Discarded != 0 {
		t.Fatalf("spares %+v, want 1 used, none discarded", c)
	}
}

// TestSpareOfOlderID: a spare whose id an execution made since would
// sort after is not used (ids keep creation order), and is discarded.
func TestSpareOfOlderID(t *testing.T) {
	ids := execution.NewIDs(time.Now)
	rt := spareRuntime(t, sandbox.ModeOff, time.Minute, ids)
	tmpl, _, _ := inv(script(t, idScript), "", nil)
	rt.Reserve(tmpl)
	rt.Reserve(tmpl)
	testwait.Until(t, "a spare is ready", func() bool { return rt.Spares().Ready > 0 })
	ids.New() // another execution,
	ids.New() // then the call asking
	if id, _, ok := rt.Reserve(tmpl); ok {
		t.Fatalf("spare %s reserved, though two ids were made after it", id)
	}
	wantDiscarded(t, rt, "the spare of an older id")
}

// TestSpareOfChangedArtifact: an artifact rewritten after its spare
// started runs as it is now.
func TestSpareOfChangedArtifact(t *testing.T) {
	rt := spareRuntime(t, sandbox.ModeOff, time.Minute)
	path := script(t, idScript)
	tmpl, _, _ := inv(path, "", nil)
	id, release := reserveReady(t, rt, tmpl)
	defer release()
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho new\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := runAs(t, rt, tmpl, id, "x"); got != "new\n" {
		t.Fatalf("output %q, want the new script's", got)
	}
	wantDiscarded(t, rt, "the stale one")
}

// TestSpareOfFunctionNotWaiting: a function that exits without waiting for
// its input is run again for its invocation, and its kind gets no more
// spares.
func TestSpareOfFunctionNotWaiting(t *testing.T) {
	rt := spareRuntime(t, sandbox.ModeOff, time.Minute)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	tmpl, _, _ := inv(script(t, fmt.Sprintf(`echo $$ > %s; echo "$SPEAR_EXECUTION_ID"`, pidFile)), "", nil)
	id, release := reserveReady(t, rt, tmpl)
	defer release()
	// The spare is a child not reaped until it is discarded: it has exited
	// once waitid says so (its having written is not enough).
	testwait.Until(t, "the spare has exited", func() bool {
		b, _ := os.ReadFile(pidFile)
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && process.Exited(pid)
	})
	if got := runAs(t, rt, tmpl, id, ""); got != id+"\n" {
		t.Fatalf("output %q", got)
	}
	wantDiscarded(t, rt, "the exited one")
	for range 3 {
		if _, _, ok := rt.Reserve(tmpl); ok {
			t.Fatal("a spare was reserved for a function that does not wait for its input")
		}
	}
	if c := rt.Spares(); c.Ready != 0 {
		t.Fatalf("spares %+v: started again for a function that does not wait", c)
	}
}

// TestSparesReaped: spares are killed when released unused, when they
// wait too long, when their task is forgotten and when the runtime
// closes; none of their processes is left.
func TestSparesReaped(t *testing.T) {
	cases := map[string]struct {
		reap func(t *testing.T, rt *process.Runtime, tmpl *runtime.Invocation) string
		all  bool // every spare is gone, not only the one named
	}{
		"released": {reap: func(t *testing.T, rt *process.Runtime, tmpl *runtime.Invocation) string {
			id, release := reserveReady(t, rt, tmpl)
			release()
			return id
		}},
		"forgotten": {all: true, reap: func(t *testing.T, rt *process.Runtime, tmpl *runtime.Invocation) string {
			_, release := reserveReady(t, rt, tmpl) // another starts: wait for it
			defer release()
			testwait.Until(t, "a second spare", func() bool { return rt.Spares().Ready > 0 })
			rt.Forget(context.Background(), runtime.Artifact{TaskID: tmpl.Artifact.TaskID})
			return ""
		}},
		"closed": {all: true, reap: func(t *testing.T, rt *process.Runtime, tmpl *runtime.Invocation) string {
			reserveReady(t, rt, tmpl)
			testwait.Until(t, "a second spare", func() bool { return rt.Spares().Ready > 0 })
			_ = rt.Close(context.Background())
			return ""
		}},
		"expired": {all: true, reap: func(t *testing.T, rt *process.Runtime, tmpl *runtime.Invocation) string {
			process.SetSpareTTL(rt, 200*time.Millisecond)
			rt.Reserve(tmpl)
			rt.Reserve(tmpl)
			testwait.Until(t, "the spare expired", func() bool { return rt.Spares().Discarded > 0 })
			return ""
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			rt := spareRuntime(t, sandbox.ModeOff, time.Minute)
			tmpl, _, _ := inv(script(t, "cat"), "", nil)
			tmpl.Artifact.TaskID = "task-" + name
			id := tc.reap(t, rt, tmpl)
			testwait.Until(t, "the spares' processes are gone", func() bool {
				if tc.all {
					return rt.Spares().Ready == 0 && processesWith(process.EnvNodeID+"=spares-test") == 0
				}
				return processesWith(process.EnvExecutionID+"="+id) == 0
			})
			if c := rt.Spares(); c.Discarded == 0 || c.Used != 0 {
				t.Fatalf("spares %+v: want some discarded, none used", c)
			}
		})
	}
}

// processesWith counts the live processes (zombies included) whose
// environment holds the variable kv.
func processesWith(kv string) int {
	n := 0
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(append([]byte{0}, b...), []byte("\x00"+kv+"\x00")) {
			n++
		}
	}
	return n
}

func TestValidatePrestart(t *testing.T) {
	rt := process.New(process.Options{})
	defer func() { _ = rt.Close(context.Background()) }()
	path := script(t, "cat")
	for v, ok := range map[string]bool{"": true, "true": true, "false": true, "no": false} {
		err := rt.Validate(context.Background(), runtime.Artifact{Location: path, Metadata: map[string]string{process.MetaPrestart: v}})
		if (err == nil) != ok || (err != nil && !errors.Is(err, errdefs.ErrInvalidArgument)) {
			t.Errorf("prestart %q: %v", v, err)
		}
	}
}

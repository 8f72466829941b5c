package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/confine"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/runtime/conformance"
	"github.com/spear-go/spear/internal/runtime/process"
	"github.com/spear-go/spear/internal/runtime/wasm"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
	"github.com/spear-go/spear/internal/testwait"
)

type fixture struct {
	st       *store.Store
	runtimes map[runtime.Type]runtime.Runtime
	dir      string // scratch files
	echo     string // an executable script
	wasmEcho string // a valid wasm module
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	data := t.TempDir()
	st, err := store.Open(ctx, store.Options{DataDir: data})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	w, err := wasm.New(ctx, wasm.Options{})
	if err != nil {
		st.Close()
		t.Fatalf("wasm.New: %v", err)
	}
	t.Cleanup(func() {
		_ = w.Close(context.Background())
		st.Close()
	})
	samples, err := filepath.Abs(filepath.Join("..", "..", "samples"))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{
		st:       st,
		runtimes: map[runtime.Type]runtime.Runtime{runtime.TypeProcess: process.New(process.Options{}), runtime.TypeWasm: w},
		dir:      t.TempDir(),
		echo:     filepath.Join(samples, "process", "echo.sh"),
		wasmEcho: filepath.Join(samples, "wasm", "echo.wasm"),
	}
}

// registry returns a registry watching the store until the test ends.
func (f *fixture) registry(t *testing.T) *Registry {
	t.Helper()
	r := New(f.st, f.runtimes, f.roots(t), time.Now, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.Watch(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// roots are the artifact roots of the fixture's registries: the samples
// and the scratch directory.
func (f *fixture) roots(t *testing.T) confine.Roots {
	t.Helper()
	roots, err := confine.New([]string{filepath.Dir(filepath.Dir(f.echo)), f.dir})
	if err != nil {
		t.Fatal(err)
	}
	return roots
}

// link makes a symbolic link to target in the scratch directory and
// returns its path.
func (f *fixture) link(t *testing.T, name, target string) string {
	t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// file writes a scratch file and returns its path.
func (f *fixture) file(t *testing.T, name string, content []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, content, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func digestOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRegisterValidation(t *testing.T) {
	f := newFixture(t)
	r := f.registry(t)
	notExec := f.file(t, "not-exec.sh", []byte("#!/bin/sh\necho\n"), 0o644)
	notWasm := f.file(t, "fake.wasm", []byte("this is not wasm"), 0o644)
	random := f.file(t, "random", []byte{0x00, 0x9f, 0x13, 0x07}, 0o755)
	noShebang := f.file(t, "plain.sh", []byte("echo hi\n"), 0o755)
	foreign := f.file(t, "foreign", conformance.ELFExecutable(conformance.ForeignMachine(), elf.ET_EXEC, ""), 0o755)
	echoDigest := digestOf(t, f.echo)

	proc := func(loc string) task.Artifact { return task.Artifact{Type: runtime.TypeProcess, Location: loc} }
	tests := []struct {
		name  string
		reg   Registration
		class error
		code  string // "" means the class alone is checked
	}{
		{"no id or name", Registration{Artifact: proc(f.echo)}, errdefs.ErrInvalidArgument, "MISSING_TASK_NAME"},
		{"invalid id", Registration{ID: "a.b", Artifact: proc(f.echo)}, errdefs.ErrInvalidArgument, "INVALID_TASK_ID"},
		{"id too long", Registration{ID: strings.Repeat("a", 129), Artifact: proc(f.echo)}, errdefs.ErrInvalidArgument, "INVALID_TASK_ID"},
		{"missing type", Registration{ID: "t", Artifact: task.Artifact{Location: f.echo}}, errdefs.ErrInvalidArgument, "MISSING_ARTIFACT_TYPE"},
		{"unknown type", Registration{ID: "t", Artifact: task.Artifact{Type: "jar", Location: f.echo}}, errdefs.ErrInvalidArgument, "UNKNOWN_ARTIFACT_TYPE"},
		{"missing location", Registration{ID: "t", Artifact: task.Artifact{Type: runtime.TypeProcess}}, errdefs.ErrInvalidArgument, "MISSING_ARTIFACT_LOCATION"},
		{"relative path", Registration{ID: "t", Artifact: proc("samples/process/echo.sh")}, errdefs.ErrPermissionDenied, "ARTIFACT_OUTSIDE_ROOT"},
		{"outside the roots", Registration{ID: "t", Artifact: proc("/bin/sh")}, errdefs.ErrPermissionDenied, "ARTIFACT_OUTSIDE_ROOT"},
		{"dot-dot out of a root", Registration{ID: "t", Artifact: proc(f.dir + "/../../../bin/sh")}, errdefs.ErrPermissionDenied, "ARTIFACT_OUTSIDE_ROOT"},
		{"file URI outside", Registration{ID: "t", Artifact: proc("file:///bin/sh")}, errdefs.ErrPermissionDenied, "ARTIFACT_OUTSIDE_ROOT"},
		{"symlink out of a root", Registration{ID: "t", Artifact: proc(f.link(t, "sh-link", "/bin/sh"))}, errdefs.ErrPermissionDenied, "ARTIFACT_OUTSIDE_ROOT"},
		{"NUL byte", Registration{ID: "t", Artifact: proc(f.echo + "\x00")}, errdefs.ErrInvalidArgument, "INVALID_ARTIFACT_LOCATION"},
		{"relative file URI", Registration{ID: "t", Artifact: proc("file:echo.sh")}, errdefs.ErrInvalidArgument, "INVALID_ARTIFACT_LOCATION"},
		{"file URI on another host", Registration{ID: "t", Artifact: proc("file://example.com" + f.echo)}, errdefs.ErrInvalidArgument, "INVALID_ARTIFACT_LOCATION"},
		{"missing file", Registration{ID: "t", Artifact: proc(filepath.Join(f.dir, "nope"))}, errdefs.ErrFailedPrecondition, "ARTIFACT_NOT_FOUND"},
		{"directory", Registration{ID: "t", Artifact: proc(f.dir)}, errdefs.ErrFailedPrecondition, "ARTIFACT_NOT_A_FILE"},
		{"wasm directory", Registration{ID: "t", Artifact: task.Artifact{Type: runtime.TypeWasm, Location: f.dir}}, errdefs.ErrFailedPrecondition, "ARTIFACT_NOT_A_FILE"},
		{"random bytes", Registration{ID: "t", Artifact: proc(random)}, errdefs.ErrFailedPrecondition, "ARTIFACT_NOT_RUNNABLE"},
		{"script without #!", Registration{ID: "t", Artifact: proc(noShebang)}, errdefs.ErrFailedPrecondition, "ARTIFACT_NOT_RUNNABLE"},
		{"foreign ELF", Registration{ID: "t", Artifact: proc(foreign)}, errdefs.ErrFailedPrecondition, "ARTIFACT_WRONG_ARCH"},
		{"bad checksum format", Registration{ID: "t", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: f.echo, Checksum: "md5:1234"}}, errdefs.ErrInvalidArgument, "INVALID_CHECKSUM"},
		{"short checksum", Registration{ID: "t", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: f.echo, Checksum: "sha256:abcd"}}, errdefs.ErrInvalidArgument, "INVALID_CHECKSUM"},
		{"checksum mismatch", Registration{ID: "t", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: f.echo, Checksum: "sha256:" + strings.Repeat("0", 64)}}, errdefs.ErrInvalidArgument, "CHECKSUM_MISMATCH"},
		{"not executable", Registration{ID: "t", Artifact: proc(notExec)}, errdefs.ErrFailedPrecondition, "ARTIFACT_NOT_EXECUTABLE"},
		{"wasm that is not wasm", Registration{ID: "t", Artifact: task.Artifact{Type: runtime.TypeWasm, Location: notWasm}}, errdefs.ErrInvalidArgument, "INVALID_ARTIFACT"},
		{"no docker runtime", Registration{ID: "t", Artifact: task.Artifact{Type: runtime.TypeDocker, Location: "alpine:3"}}, errdefs.ErrFailedPrecondition, "RUNTIME_UNAVAILABLE"},
		{"invalid UTF-8 name with id", Registration{ID: "t", Name: "bad\xff", Artifact: proc(f.echo)}, errdefs.ErrInvalidArgument, "INVALID_UTF8"},
		{"invalid UTF-8 name", Registration{Name: "bad\xffname", Artifact: proc(f.echo)}, errdefs.ErrInvalidArgument, "INVALID_UTF8"},
		{"invalid UTF-8 description", Registration{ID: "t", Description: "\xc3", Artifact: proc(f.echo)}, errdefs.ErrInvalidArgument, "INVALID_UTF8"},
		{"uploaded artifact unknown", Registration{ID: "t", Artifact: proc("artifact:sha256:" + strings.Repeat("1", 64))}, errdefs.ErrFailedPrecondition, "ARTIFACT_NOT_FOUND"},
		{"uploaded artifact malformed", Registration{ID: "t", Artifact: proc("artifact:sha256:xyz")}, errdefs.ErrInvalidArgument, "INVALID_ARTIFACT_LOCATION"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, created, err := r.Register(ctxT(t), tc.reg)
			if err == nil {
				t.Fatalf("Register = %v, %v; want an error", got, created)
			}
			if !errors.Is(err, tc.class) {
				t.Errorf("error %v is not of class %v", err, tc.class)
			}
			if tc.code != "" && errdefs.CodeOf(err) != tc.code {
				t.Errorf("error code %s, want %s (%v)", errdefs.CodeOf(err), tc.code, err)
			}
		})
	}
	// Nothing was stored by the failures.
	if all, _, err := r.List(ctxT(t), "", "", 100); err != nil || len(all) != 0 {
		t.Errorf("tasks after failed registrations: %v %v", all, err)
	}

	accepted := []struct {
		name string
		reg  Registration
	}{
		{"absolute path", Registration{ID: "abs", Artifact: proc(f.echo)}},
		{"file URI", Registration{ID: "uri", Artifact: proc("file://" + f.echo)}},
		{"file URI on localhost", Registration{ID: "local", Artifact: proc("file://localhost" + f.echo)}},
		{"uncleaned path", Registration{ID: "unclean", Artifact: proc(filepath.Dir(f.echo) + "/../process/./echo.sh")}},
		{"matching checksum in upper case", Registration{ID: "sum", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: f.echo, Checksum: echoDigest[:7] + strings.ToUpper(echoDigest[7:])}}},
		{"wasm", Registration{ID: "wasm", Artifact: task.Artifact{Type: runtime.TypeWasm, Location: f.wasmEcho}}},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			tk, created, err := r.Register(ctxT(t), tc.reg)
			if err != nil || !created {
				t.Fatalf("Register: %v %v", created, err)
			}
			if tk.ID != tc.reg.ID || tk.Name != tc.reg.ID || tk.CreatedAt.IsZero() || tk.Artifact.Location != tc.reg.Artifact.Location {
				t.Errorf("task %+v", tk)
			}
			if !strings.EqualFold(tk.Artifact.Checksum, digestOf(t, strings.TrimPrefix(strings.TrimPrefix(tc.reg.Artifact.Location, "file://"), "localhost"))) {
				t.Errorf("checksum %q not filled in from the file", tk.Artifact.Checksum)
			}
			_, art, err := r.Artifact(ctxT(t), tk.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !filepath.IsAbs(art.Location) || art.Location != filepath.Clean(art.Location) || art.TaskID != tk.ID || art.Type != tc.reg.Artifact.Type ||
				!strings.EqualFold(art.Digest, tk.Artifact.Checksum) {
				t.Errorf("resolved artifact %+v", art)
			}
		})
	}
}

func TestRegisterIdempotence(t *testing.T) {
	f := newFixture(t)
	r := f.registry(t)
	upper := filepath.Join(filepath.Dir(f.echo), "upper.sh")
	reg := Registration{ID: "same", Description: "d", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: f.echo, Metadata: map[string]string{"k": "v"}}}

	first, created, err := r.Register(ctxT(t), reg)
	if err != nil || !created {
		t.Fatalf("first: %v %v", created, err)
	}
	second, created, err := r.Register(ctxT(t), reg)
	if err != nil || created {
		t.Fatalf("second: created=%v %v", created, err)
	}
	if !second.CreatedAt.Equal(first.CreatedAt) || second.Artifact.Checksum != first.Artifact.Checksum {
		t.Errorf("second registration returned %+v, want the first %+v", second, first)
	}
	// The same artifact with its checksum spelled out is the same too.
	withSum := reg
	withSum.Artifact.Checksum = strings.ToUpper(first.Artifact.Checksum[7:])
	withSum.Artifact.Checksum = "sha256:" + withSum.Artifact.Checksum
	if _, created, err := r.Register(ctxT(t), withSum); err != nil || created {
		t.Errorf("with checksum: created=%v %v", created, err)
	}

	for name, other := range map[string]task.Artifact{
		"other location": {Type: runtime.TypeProcess, Location: upper},
		"other version":  {Type: runtime.TypeProcess, Location: f.echo, Version: "2", Metadata: map[string]string{"k": "v"}},
		"other metadata": {Type: runtime.TypeProcess, Location: f.echo, Metadata: map[string]string{"k": "w"}},
	} {
		_, _, err := r.Register(ctxT(t), Registration{ID: "same", Artifact: other})
		if !errors.Is(err, errdefs.ErrAlreadyExists) || errdefs.CodeOf(err) != "TASK_EXISTS" {
			t.Errorf("%s: %v, want TASK_EXISTS", name, err)
		}
	}
	// Limits: none given is the task as it is; the same again too; others
	// would be ignored, so they are refused.
	limited := reg
	limited.ID, limited.Limits = "limited", task.Limits{MaxConcurrency: 2}
	if _, created, err := r.Register(ctxT(t), limited); err != nil || !created {
		t.Fatalf("limited: %v %v", created, err)
	}
	for name, tc := range map[string]struct {
		l       task.Limits
		refused bool
	}{
		"no limits":    {task.Limits{}, false},
		"same limits":  {task.Limits{MaxConcurrency: 2}, false},
		"other limits": {task.Limits{MaxConcurrency: 3}, true},
	} {
		again := limited
		again.Limits = tc.l
		got, _, err := r.Register(ctxT(t), again)
		if refused := errdefs.TaskExists.Is(err); refused != tc.refused || (!refused && (err != nil || got.Limits.MaxConcurrency != 2)) {
			t.Errorf("%s: %v %v, want refused=%v", name, got, err, tc.refused)
		}
	}
	// A second registry (another node) sees the same.
	r2 := f.registry(t)
	if _, created, err := r2.Register(ctxT(t), reg); err != nil || created {
		t.Errorf("other registry: created=%v %v", created, err)
	}
}

func TestDerivedIDs(t *testing.T) {
	f := newFixture(t)
	r := f.registry(t)
	art := task.Artifact{Type: runtime.TypeProcess, Location: f.echo}
	names := []string{"my task", "my task ✓", "my_task", "日本語の関数", "---", strings.Repeat("long name ", 40), "ünïcödé name"}
	seen := map[string]string{}
	for _, name := range names {
		id, err := taskID(Registration{Name: name})
		if err != nil {
			t.Fatalf("taskID(%q): %v", name, err)
		}
		if err := task.ValidateID(id); err != nil {
			t.Errorf("taskID(%q) = %q: %v", name, id, err)
		}
		if again, _ := taskID(Registration{Name: name}); again != id {
			t.Errorf("taskID(%q) is not stable: %q then %q", name, id, again)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("names %q and %q share the id %q", other, name, id)
		}
		seen[id] = name

		tk, created, err := r.Register(ctxT(t), Registration{Name: name, Artifact: art})
		if err != nil || !created || tk.ID != id || tk.Name != name {
			t.Errorf("Register(%q) = %+v, %v, %v; want id %q", name, tk, created, err, id)
		}
		tk2, created, err := r.Register(ctxT(t), Registration{Name: name, Artifact: art})
		if err != nil || created || tk2.ID != id {
			t.Errorf("Register(%q) again = %v, %v", name, created, err)
		}
	}
	if id, _ := taskID(Registration{Name: "valid-id_1"}); id != "valid-id_1" {
		t.Errorf("a name that is a valid id becomes %q", id)
	}
	if id, _ := taskID(Registration{Name: "my task"}); !strings.HasPrefix(id, "my-task-") {
		t.Errorf("id of %q is %q", "my task", id)
	}
	if id, _ := taskID(Registration{Name: "日本語の関数"}); !strings.HasPrefix(id, "task-") {
		t.Errorf("id of a name without ASCII is %q", id)
	}
	if _, err := taskID(Registration{Name: "a\xffb c"}); errdefs.CodeOf(err) != "INVALID_UTF8" {
		t.Errorf("invalid UTF-8 name: %v", err)
	}
}

func TestUploadedArtifact(t *testing.T) {
	f := newFixture(t)
	r := f.registry(t)
	script := []byte("#!/bin/sh\necho uploaded\n")
	digest, _, err := f.st.Artifacts.Put(ctxT(t), "up.sh", bytes.NewReader(script), "")
	if err != nil {
		t.Fatal(err)
	}
	tk, created, err := r.Register(ctxT(t), Registration{ID: "up", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: store.ArtifactScheme + digest, Checksum: digest}})
	if err != nil || !created {
		t.Fatalf("Register: %v %v", created, err)
	}
	_, art, err := r.Artifact(ctxT(t), tk.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(art.Location)
	if err != nil || !bytes.Equal(b, script) {
		t.Fatalf("materialised file %s: %q %v", art.Location, b, err)
	}
	if st, err := os.Stat(art.Location); err != nil || st.Mode().Perm()&0o100 == 0 {
		t.Errorf("materialised file is not executable: %v %v", st.Mode(), err)
	}
	if art.Digest != digest || tk.Artifact.Location != store.ArtifactScheme+digest {
		t.Errorf("artifact %+v, task artifact %+v", art, tk.Artifact)
	}
	// Another registry (a fresh cache) resolves the same location again,
	// even after the local copy is gone.
	if err := os.Remove(art.Location); err != nil {
		t.Fatal(err)
	}
	r2 := f.registry(t)
	_, art2, err := r2.Artifact(ctxT(t), "up")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(art2.Location); err != nil || !bytes.Equal(b, script) {
		t.Errorf("re-materialised %s: %q %v", art2.Location, b, err)
	}
}

func TestGetListDelete(t *testing.T) {
	f := newFixture(t)
	r := f.registry(t)
	for _, id := range []string{"b", "a", "c2", "c1", "d"} {
		if _, _, err := r.Register(ctxT(t), Registration{ID: id, Artifact: task.Artifact{Type: runtime.TypeProcess, Location: f.echo}}); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(ts []*task.Task) string {
		var s []string
		for _, t := range ts {
			s = append(s, t.ID)
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		prefix, after string
		limit         int
		want          string
		more          bool
	}{
		{"", "", 10, "a,b,c1,c2,d", false},
		{"", "", 2, "a,b", true},
		{"", "b", 2, "c1,c2", true},
		{"", "c2", 2, "d", false},
		{"", "", 5, "a,b,c1,c2,d", false},
		{"c", "", 10, "c1,c2", false},
		{"c", "c1", 10, "c2", false},
		{"zz", "", 10, "", false},
	} {
		got, more, err := r.List(ctxT(t), tc.prefix, tc.after, tc.limit)
		if err != nil || ids(got) != tc.want || more != tc.more {
			t.Errorf("List(%q, %q, %d) = %s, %v, %v; want %s, %v", tc.prefix, tc.after, tc.limit, ids(got), more, err, tc.want, tc.more)
		}
	}

	if _, err := r.Get(ctxT(t), "nope"); errdefs.CodeOf(err) != "TASK_NOT_FOUND" || !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get unknown: %v", err)
	}
	if _, err := r.Get(ctxT(t), "no/pe"); errdefs.CodeOf(err) != "INVALID_TASK_ID" {
		t.Errorf("Get invalid: %v", err)
	}
	if err := r.Delete(ctxT(t), "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctxT(t), "a"); errdefs.CodeOf(err) != "TASK_NOT_FOUND" {
		t.Errorf("Get after Delete: %v", err)
	}
	if err := r.Delete(ctxT(t), "a"); errdefs.CodeOf(err) != "TASK_NOT_FOUND" {
		t.Errorf("Delete twice: %v", err)
	}
}

// TestDeleteVanishedArtifact: a task whose artifact disappeared can still be
// looked up and deleted.
func TestDeleteVanishedArtifact(t *testing.T) {
	f := newFixture(t)
	r := f.registry(t)
	script := f.file(t, "gone.sh", []byte("#!/bin/sh\ncat\n"), 0o755)
	if _, _, err := r.Register(ctxT(t), Registration{ID: "gone", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: script}}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(script); err != nil {
		t.Fatal(err)
	}
	r2 := f.registry(t) // another node, nothing cached
	if _, _, err := r2.Artifact(ctxT(t), "gone"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Artifact of a vanished file: %v", err)
	}
	tk, err := r2.Lookup(ctxT(t), "gone")
	if err != nil || tk.ID != "gone" {
		t.Errorf("Lookup: %v %v", tk, err)
	}
	if err := r2.Delete(ctxT(t), "gone"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	// r learns of r2's delete through its watch, asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := r.Lookup(ctxT(t), "gone")
		if errdefs.CodeOf(err) == "TASK_NOT_FOUND" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Lookup after another registry's Delete: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchInvalidatesCache: a registry sees other nodes' deletes and
// re-registrations through Watch.
func TestWatchInvalidatesCache(t *testing.T) {
	f := newFixture(t)
	r1, r2 := f.registry(t), f.registry(t)
	upper := filepath.Join(filepath.Dir(f.echo), "upper.sh")
	if _, _, err := r1.Register(ctxT(t), Registration{ID: "w", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: f.echo}}); err != nil {
		t.Fatal(err)
	}
	if _, art, err := r2.Artifact(ctxT(t), "w"); err != nil || art.Location != f.echo {
		t.Fatalf("r2 before: %v %v", art, err)
	}
	if err := r1.Delete(ctxT(t), "w"); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "r2 sees the delete", func() bool {
		_, err := r2.Get(ctxT(t), "w")
		return errdefs.CodeOf(err) == "TASK_NOT_FOUND"
	})
	if _, _, err := r1.Register(ctxT(t), Registration{ID: "w", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: upper}}); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "r2 sees the new artifact", func() bool {
		_, art, err := r2.Artifact(ctxT(t), "w")
		return err == nil && art.Location == upper
	})
	// Delete and re-register again while r2 holds the task in its cache.
	if err := r1.Delete(ctxT(t), "w"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r1.Register(ctxT(t), Registration{ID: "w", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: f.echo}}); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "r2 sees the third artifact", func() bool {
		_, art, err := r2.Artifact(ctxT(t), "w")
		return err == nil && art.Location == f.echo
	})
}

// TestConfinedAtRunTime: a task registered through a symbolic link inside
// an artifact root is refused before a run once the link points out of the
// roots — even at the same content, which the pin alone would let pass —
// by this node (cached) and by a node resolving it afresh.
func TestConfinedAtRunTime(t *testing.T) {
	f := newFixture(t)
	r := f.registry(t)
	content := []byte("#!/bin/sh\necho confined\n")
	inside := f.file(t, "fn.sh", content, 0o755)
	outside := filepath.Join(t.TempDir(), "fn.sh")
	if err := os.WriteFile(outside, content, 0o755); err != nil {
		t.Fatal(err)
	}
	link := f.link(t, "fn-link", inside)
	if _, _, err := r.Register(ctxT(t), Registration{ID: "linked", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: link}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Artifact(ctxT(t), "linked"); err != nil {
		t.Fatalf("Artifact before the swap: %v", err)
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	for name, reg := range map[string]*Registry{"cached": r, "fresh": f.registry(t)} {
		if _, _, err := reg.Artifact(ctxT(t), "linked"); errdefs.CodeOf(err) != "ARTIFACT_OUTSIDE_ROOT" {
			t.Errorf("%s: Artifact after the link left the roots = %v, want ARTIFACT_OUTSIDE_ROOT", name, err)
		}
	}
}

package registry

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/runtime/wasm"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
	"github.com/spear-go/spear/internal/testwait"
)

// TestArtifactChanged: a task runs only the content it was registered
// with. However its file changes, Get and Artifact refuse it with
// ARTIFACT_CHANGED (on this node and on a node that resolves it afresh);
// a change that keeps the content (touch, copy over) is no change.
func TestArtifactChanged(t *testing.T) {
	const original = "#!/bin/sh\necho one\n"
	tests := []struct {
		name    string
		change  func(t *testing.T, path string)
		changed bool
	}{
		{"rewritten in place, same size", func(t *testing.T, p string) { writeInPlace(t, p, "#!/bin/sh\necho two\n") }, true},
		{"rewritten in place, other size", func(t *testing.T, p string) { writeInPlace(t, p, "#!/bin/sh\necho three\n") }, true},
		{"replaced by rename", func(t *testing.T, p string) { replace(t, p, "#!/bin/sh\necho four\n") }, true},
		{"touched", func(t *testing.T, p string) { touch(t, p, time.Now()) }, false},
		{"same content copied over", func(t *testing.T, p string) { replace(t, p, original) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			r := f.registry(t)
			path := f.file(t, "fn.sh", []byte(original), 0o755)
			touch(t, path, time.Now().Add(-time.Hour)) // its stamp is trusted
			tk, _, err := r.Register(ctxT(t), Registration{ID: "fn", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: path}})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := r.Artifact(ctxT(t), "fn"); err != nil {
				t.Fatalf("Artifact before the change: %v", err)
			}
			tc.change(t, path)
			for name, reg := range map[string]*Registry{"cached": r, "fresh": f.registry(t)} {
				_, _, aerr := reg.Artifact(ctxT(t), "fn")
				_, gerr := reg.Get(ctxT(t), "fn")
				for _, err := range []error{aerr, gerr} {
					if !tc.changed {
						if err != nil {
							t.Errorf("%s: %v, want no error", name, err)
						}
						continue
					}
					if errdefs.CodeOf(err) != "ARTIFACT_CHANGED" || !errors.Is(err, errdefs.ErrFailedPrecondition) ||
						!strings.Contains(err.Error(), "spear task update fn --location "+path) {
						t.Errorf("%s: %v (%s), want ARTIFACT_CHANGED with the update hint", name, err, errdefs.CodeOf(err))
					}
				}
			}
			if got, err := r.Lookup(ctxT(t), "fn"); err != nil || got.Artifact.Checksum != tk.Artifact.Checksum {
				t.Errorf("Lookup: %v %v, want the task as registered", got, err)
			}
		})
	}
}

// TestUpdate: re-registering a changed file is refused with a hint to
// update; Update re-pins the task to the content now, and runs resume.
func TestUpdate(t *testing.T) {
	f := newFixture(t)
	r := f.registry(t)
	path := f.file(t, "fn.sh", []byte("#!/bin/sh\necho one\n"), 0o755)
	reg := Registration{ID: "fn", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: path, Version: "1"}}
	first, _, err := r.Register(ctxT(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	replace(t, path, "#!/bin/sh\necho two\n")
	if _, _, err := r.Register(ctxT(t), reg); errdefs.CodeOf(err) != "TASK_EXISTS" || !strings.Contains(err.Error(), "spear task update fn") {
		t.Errorf("re-registering the changed file: %v, want TASK_EXISTS with the update hint", err)
	}

	for _, tc := range []struct {
		name string
		a    task.Artifact
		code string
	}{
		{"unknown task", task.Artifact{}, "TASK_NOT_FOUND"},
		{"wrong checksum", task.Artifact{Checksum: first.Artifact.Checksum}, "CHECKSUM_MISMATCH"},
		{"missing file", task.Artifact{Location: filepath.Join(f.dir, "nope")}, "ARTIFACT_NOT_FOUND"},
	} {
		id := "fn"
		if tc.code == "TASK_NOT_FOUND" {
			id = "nope"
		}
		if _, _, err := r.Update(ctxT(t), id, tc.a); errdefs.CodeOf(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}

	u, changed, err := r.Update(ctxT(t), "fn", task.Artifact{})
	if err != nil || !changed {
		t.Fatalf("Update: %v %v", changed, err)
	}
	if u.Artifact.Checksum != digestOf(t, path) || u.Artifact.Location != path || u.Artifact.Version != "1" ||
		!u.CreatedAt.Equal(first.CreatedAt) || !u.UpdatedAt.After(first.UpdatedAt) {
		t.Errorf("updated task %+v, first %+v", u, first)
	}
	if _, art, err := r.Artifact(ctxT(t), "fn"); err != nil || art.Digest != u.Artifact.Checksum {
		t.Errorf("Artifact after Update: %+v %v", art, err)
	}
	if _, _, err := f.registry(t).Artifact(ctxT(t), "fn"); err != nil {
		t.Errorf("Artifact on another node after Update: %v", err)
	}
	if _, changed, err := r.Update(ctxT(t), "fn", task.Artifact{}); err != nil || changed {
		t.Errorf("Update again: changed=%v %v, want unchanged", changed, err)
	}
}

// TestUploadedCopyRefetched: a local copy of an uploaded artifact is
// read-only, and one changed anyway is fetched again from the store.
func TestUploadedCopyRefetched(t *testing.T) {
	f := newFixture(t)
	r := f.registry(t)
	script := []byte("#!/bin/sh\necho uploaded\n")
	digest, _, err := f.st.Artifacts.Put(ctxT(t), "up.sh", bytes.NewReader(script), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Register(ctxT(t), Registration{ID: "up", Artifact: task.Artifact{Type: runtime.TypeProcess, Location: store.ArtifactScheme + digest}}); err != nil {
		t.Fatal(err)
	}
	_, art, err := r.Artifact(ctxT(t), "up")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(art.Location); err != nil || st.Mode().Perm()&0o222 != 0 {
		t.Errorf("local copy %s is writable: %v %v", art.Location, st.Mode(), err)
	}
	if err := os.Chmod(art.Location, 0o755); err != nil {
		t.Fatal(err)
	}
	writeInPlace(t, art.Location, "#!/bin/sh\necho tampered\n")
	if _, art, err = r.Artifact(ctxT(t), "up"); err != nil || art.Digest != digest {
		t.Fatalf("Artifact after the copy changed: %+v %v, want it fetched again", art, err)
	}
	if b, err := os.ReadFile(art.Location); err != nil || !bytes.Equal(b, script) {
		t.Errorf("copy after refetch: %q %v", b, err)
	}
}

// TestRuntimeReleases: deleting or re-pinning a wasm task — here or on
// another node — releases its compiled module.
func TestRuntimeReleases(t *testing.T) {
	f := newFixture(t)
	w := f.runtimes[runtime.TypeWasm].(*wasm.Runtime)
	upper := filepath.Join(filepath.Dir(f.wasmEcho), "upper.wasm")
	r := f.registry(t)
	// other is another node: its own wasm runtime, the same store.
	otherWasm, err := wasm.New(ctxT(t), wasm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = otherWasm.Close(context.Background()) })
	other := New(f.st, map[runtime.Type]runtime.Runtime{runtime.TypeWasm: otherWasm}, f.roots(t), time.Now, nil)
	register := func(id string) {
		t.Helper()
		if _, _, err := r.Register(ctxT(t), Registration{ID: id, Artifact: task.Artifact{Type: runtime.TypeWasm, Location: f.wasmEcho}}); err != nil {
			t.Fatal(err)
		}
	}
	cached := func(want int) func() bool { return func() bool { return w.CachedArtifacts() == want } }

	register("a")
	register("b")
	register("c")
	if got := w.CachedArtifacts(); got != 3 {
		t.Fatalf("modules after 3 registrations: %d", got)
	}
	if err := r.Delete(ctxT(t), "a"); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "delete releases the module", cached(2))
	if _, _, err := r.Update(ctxT(t), "b", task.Artifact{Location: upper}); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "update keeps only the new module", cached(2))
	if err := other.Delete(ctxT(t), "c"); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "a delete by another node releases the module", cached(1))
	if _, _, err := r.Artifact(ctxT(t), "b"); err != nil {
		t.Errorf("the updated task: %v", err)
	}
}

func writeInPlace(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func replace(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func touch(t *testing.T, path string, when time.Time) {
	t.Helper()
	if err := os.Chtimes(path, when, when); err != nil {
		t.Fatal(err)
	}
}

// TestPinReadsOnStampChange: a check reads the file only when its stamp
// (size, modification time, inode) changed or is too recent to be trusted:
// a change that keeps the whole stamp is not seen, by design.
func TestPinReadsOnStampChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fn")
	if err := os.WriteFile(path, []byte("aaaa"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	touch(t, path, old)
	p, pinned, err := pinFile(ctxT(t), path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	writeInPlace(t, path, "bbbb")
	touch(t, path, old)
	if got, err := p.check(ctxT(t), nil); err != nil || got != pinned {
		t.Errorf("check with the stamp unchanged = %s %v, want the pinned %s without reading", got, err, pinned)
	}
	touch(t, path, time.Now())
	if got, err := p.check(ctxT(t), nil); err != nil || got == pinned {
		t.Errorf("check with a recent stamp = %s %v, want the new content's digest", got, err)
	}
}

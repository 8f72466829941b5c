// Package registry registers tasks, validates their artifacts, and resolves a
// task to what its runtime runs. Tasks are stored durably; resolved tasks are
// cached in memory and the cache follows changes made by any node.
//
// A task whose artifact is a local file (a path, a file:// URI or an
// uploaded artifact's copy) is pinned to the file's content when it is
// registered: a run of a file that changed since is refused with
// ARTIFACT_CHANGED until the task is re-pinned (Update). When a task is
// deleted or re-pinned, its runtime releases what it held for the old
// content (runtime.Forgetter).
//
// A process or wasm artifact named by a local path must lie inside the
// node's artifact roots (package confine), when it is registered and before
// every run; an uploaded artifact is always allowed.
package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spear-go/spear/internal/confine"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
)

// Registration is a request to register a task.
type Registration struct {
	ID          string
	Name        string
	Description string
	Artifact    task.Artifact
	Metadata    map[string]string
	Limits      task.Limits
}

// Registry is the set of registered tasks.
type Registry struct {
	store    *store.Store
	runtimes map[runtime.Type]runtime.Runtime
	roots    confine.Roots
	now      func() time.Time
	log      *slog.Logger

	mu    sync.Mutex
	cache map[string]*entry
	// held is, by task, the artifact last handed to the task's runtime:
	// what the runtime may hold (a compiled module) until it is told to
	// forget it.
	held map[string]runtime.Artifact
}

type entry struct {
	task     *task.Task
	artifact runtime.Artifact
	pin      *pin // nil when the artifact is not a local file (docker)
	// confined is the path checked against the artifact roots before each
	// run: "" for an uploaded artifact or an image.
	confined string
}

// New returns a registry over st. runtimes are the runtimes this node has;
// tasks of other types can be registered only if their type is known.
// Artifacts named by local paths must lie inside roots.
func New(st *store.Store, runtimes map[runtime.Type]runtime.Runtime, roots confine.Roots, now func() time.Time, log *slog.Logger) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{
		store: st, runtimes: runtimes, roots: roots, now: now, log: log,
		cache: map[string]*entry{}, held: map[string]runtime.Artifact{},
	}
}

// Watch keeps the cache coherent with changes made by any node until ctx
// ends, and has runtimes release what they hold for tasks deleted or
// re-pinned elsewhere.
func (r *Registry) Watch(ctx context.Context) error {
	return r.store.Tasks.Watch(ctx, func(id string) { r.changed(ctx, id) })
}

var (
	checksumPattern = regexp.MustCompile(`^sha256:[0-9a-fA-F]{64}$`)
	idUnsafe        = regexp.MustCompile(`[^A-Za-z0-9_-]+`)
)

// Register validates reg and stores the task. Registering the same id with
// the same artifact again returns the existing task and created=false; with
// a different artifact it fails with TASK_EXISTS.
func (r *Registry) Register(ctx context.Context, reg Registration) (*task.Task, bool, error) {
	id, err := taskID(reg)
	if err != nil {
		return nil, false, err
	}
	if reg.Name == "" {
		reg.Name = id
	}
	for _, s := range []string{reg.Name, reg.Description} {
		if !utf8.ValidString(s) {
			return nil, false, errdefs.InvalidUTF8.New("task name and description must be valid UTF-8")
		}
	}
	if err := reg.Limits.Validate(); err != nil {
		return nil, false, err
	}
	art, p, err := r.resolveNew(ctx, id, reg.Artifact)
	if err != nil {
		return nil, false, err
	}
	a := reg.Artifact
	if a.Checksum == "" {
		a.Checksum = art.Digest
	}
	now := r.now()
	t := &task.Task{
		ID: id, Name: reg.Name, Description: reg.Description, Artifact: a,
		Metadata: reg.Metadata, Limits: reg.Limits, CreatedAt: now, UpdatedAt: now,
	}
	if err := r.store.Tasks.Create(ctx, t); err != nil {
		if !errors.Is(err, errdefs.ErrAlreadyExists) {
			return nil, false, err
		}
		old, gerr := r.store.Tasks.Get(ctx, id)
		if gerr != nil {
			return nil, false, gerr
		}
		if err := sameTask(old, a, reg.Limits); err != nil {
			return nil, false, err
		}
		return old, false, nil
	}
	r.mu.Lock()
	r.cache[id] = &entry{task: t, artifact: art, pin: p, confined: confinedPath(a, art)}
	r.mu.Unlock()
	return t, true, nil
}

// Update re-pins task id to an artifact's content as it is now: a's empty
// fields keep the task's, except the checksum, which when given must match
// the content. It reports whether the task changed; its runtime releases
// what it held for the previous content.
func (r *Registry) Update(ctx context.Context, id string, a task.Artifact) (*task.Task, bool, error) {
	old, err := r.Lookup(ctx, id)
	if err != nil {
		return nil, false, err
	}
	a = a.Or(old.Artifact)
	art, p, err := r.resolveNew(ctx, id, a)
	if err != nil {
		return nil, false, err
	}
	if a.Checksum == "" {
		a.Checksum = art.Digest
	}
	if sameArtifact(old.Artifact, a) {
		return old, false, nil
	}
	u := *old
	u.Artifact, u.UpdatedAt = a, r.now()
	if err := r.store.Tasks.Put(ctx, &u); err != nil {
		return nil, false, err
	}
	r.mu.Lock()
	r.cache[id] = &entry{task: &u, artifact: art, pin: p, confined: confinedPath(a, art)}
	r.mu.Unlock()
	return &u, true, nil
}

// sameTask refuses, with TASK_EXISTS, registering again an existing task
// with another artifact, or with limits (when given) other than its own:
// the same registration again is the existing task, anything else would
// be silently ignored.
func sameTask(old *task.Task, a task.Artifact, l task.Limits) error {
	if !sameArtifact(old.Artifact, a) {
		return errdefs.TaskExists.New("task %q already exists with another artifact, or with other content of the same file; "+
			"to re-pin it: spear task update %s --location %s (or delete it first, or use another name)",
			old.ID, old.ID, a.Location)
	}
	if l != (task.Limits{}) && l != old.Limits {
		return errdefs.TaskExists.New("task %q already exists with other limits; "+
			"to change them: spear task limits %s (the UpdateTaskLimits method), or use another name", old.ID, old.ID)
	}
	return nil
}

func sameArtifact(a, b task.Artifact) bool {
	return a.Type == b.Type && a.Location == b.Location && a.Version == b.Version &&
		strings.EqualFold(a.Checksum, b.Checksum) && maps.Equal(a.Metadata, b.Metadata)
}

func taskID(reg Registration) (string, error) {
	if reg.ID != "" {
		return reg.ID, task.ValidateID(reg.ID)
	}
	if reg.Name == "" {
		return "", errdefs.MissingTaskName.New("a new task needs a task_name (or task_id)")
	}
	if task.ValidateID(reg.Name) == nil {
		return reg.Name, nil
	}
	if !utf8.ValidString(reg.Name) {
		return "", errdefs.InvalidUTF8.New("task name must be valid UTF-8")
	}
	base := strings.Trim(idUnsafe.ReplaceAllString(reg.Name, "-"), "-")
	if len(base) > 100 {
		base = base[:100]
	}
	sum := sha256.Sum256([]byte(reg.Name))
	if base == "" {
		base = "task"
	}
	return base + "-" + hex.EncodeToString(sum[:4]), nil
}

// UpdateLimits replaces a task's limits.
func (r *Registry) UpdateLimits(ctx context.Context, id string, l task.Limits) (*task.Task, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	t, err := r.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	u := *t
	u.Limits, u.UpdatedAt = l, r.now()
	if err := r.store.Tasks.Put(ctx, &u); err != nil {
		return nil, err
	}
	r.mu.Lock()
	delete(r.cache, id) // resolved again, with the new limits, on next use
	r.mu.Unlock()
	return &u, nil
}

// Get returns task id.
func (r *Registry) Get(ctx context.Context, id string) (*task.Task, error) {
	e, err := r.entry(ctx, id)
	if err != nil {
		return nil, err
	}
	return e.task, nil
}

// Lookup returns task id as stored, without resolving its artifact: it
// works for a task whose artifact is gone or whose runtime this node lacks,
// so that such a task can still be shown and deleted.
func (r *Registry) Lookup(ctx context.Context, id string) (*task.Task, error) {
	if err := task.ValidateID(id); err != nil {
		return nil, err
	}
	r.mu.Lock()
	e := r.cache[id]
	r.mu.Unlock()
	if e != nil {
		return e.task, nil
	}
	return r.store.Tasks.Get(ctx, id)
}

// Artifact returns the task and what its runtime runs.
func (r *Registry) Artifact(ctx context.Context, id string) (*task.Task, runtime.Artifact, error) {
	e, err := r.entry(ctx, id)
	if err != nil {
		return nil, runtime.Artifact{}, err
	}
	return e.task, e.artifact, nil
}

func (r *Registry) entry(ctx context.Context, id string) (*entry, error) {
	r.mu.Lock()
	e := r.cache[id]
	r.mu.Unlock()
	if e != nil {
		if err := r.verify(ctx, e); err != nil {
			return nil, err
		}
		return e, nil
	}
	if err := task.ValidateID(id); err != nil {
		return nil, err
	}
	t, err := r.store.Tasks.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	e, err = r.resolveStored(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("task %q: %w", id, err)
	}
	r.mu.Lock()
	r.cache[id] = e
	r.mu.Unlock()
	return e, nil
}

// List returns tasks whose id starts with prefix, after startAfter, at most
// limit, and whether more exist.
func (r *Registry) List(ctx context.Context, prefix, startAfter string, limit int) ([]*task.Task, bool, error) {
	all, err := r.store.Tasks.List(ctx)
	if err != nil {
		return nil, false, err
	}
	var out []*task.Task
	for _, t := range all {
		if !strings.HasPrefix(t.ID, prefix) || t.ID <= startAfter {
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, t)
	}
	return out, false, nil
}

// Delete removes task id; its runtime releases what it held for it.
func (r *Registry) Delete(ctx context.Context, id string) error {
	if _, err := r.Lookup(ctx, id); err != nil {
		return err
	}
	if err := r.store.Tasks.Delete(ctx, id); err != nil {
		return err
	}
	r.changed(ctx, id)
	return nil
}

// resolveNew resolves an artifact a user gives (to register or re-pin a
// task): a checksum, when given, must match the content.
func (r *Registry) resolveNew(ctx context.Context, id string, a task.Artifact) (runtime.Artifact, *pin, error) {
	art, p, err := r.locate(ctx, id, a)
	if err != nil {
		return runtime.Artifact{}, nil, err
	}
	if p != nil && a.Checksum != "" && !strings.EqualFold(a.Checksum, art.Digest) {
		return runtime.Artifact{}, nil, errdefs.ChecksumMismatch.New("artifact %s: checksum %s given, file is %s", a.Location, a.Checksum, art.Digest)
	}
	if err := r.prepare(ctx, art); err != nil {
		return runtime.Artifact{}, nil, err
	}
	return art, p, nil
}

// resolveStored resolves a stored task's artifact, which must still have
// the content the task is pinned to.
func (r *Registry) resolveStored(ctx context.Context, t *task.Task) (*entry, error) {
	art, p, err := r.locate(ctx, t.ID, t.Artifact)
	if err != nil {
		return nil, err
	}
	if p != nil && !p.matches(art.Digest) {
		return nil, artifactChanged(t, art.Digest)
	}
	if err := r.prepare(ctx, art); err != nil {
		return nil, err
	}
	return &entry{task: t, artifact: art, pin: p, confined: confinedPath(t.Artifact, art)}, nil
}

// verify checks that a cached task's artifact still has the content the
// task is pinned to.
func (r *Registry) verify(ctx context.Context, e *entry) error {
	if e.pin == nil {
		return nil
	}
	// A symbolic link inside a root may have been pointed out of it. The
	// path is checked again whenever it no longer leads to the file (the
	// same inode, size and time) that was confirmed inside the roots.
	var confine func() error
	if e.confined != "" {
		confine = func() error { return r.roots.Check(e.confined) }
	}
	digest, err := e.pin.check(ctx, confine)
	if err != nil {
		return fmt.Errorf("task %q: %w", e.task.ID, err)
	}
	if !e.pin.matches(digest) {
		return artifactChanged(e.task, digest)
	}
	return nil
}

func artifactChanged(t *task.Task, digest string) error {
	return errdefs.ArtifactChanged.New("task %q: artifact %s changed since the task was registered (content %s, task pinned to %s); nothing was run. "+
		"To run the new content, re-pin the task: spear task update %s --location %s",
		t.ID, t.Artifact.Location, digest, t.Artifact.Checksum, t.ID, t.Artifact.Location)
}

// locate validates an artifact spec and finds what the runtime runs: for a
// local file, its path, pinned to a.Checksum (or, without one, to the
// content now), and the digest of its content now.
func (r *Registry) locate(ctx context.Context, id string, a task.Artifact) (runtime.Artifact, *pin, error) {
	switch a.Type {
	case runtime.TypeProcess, runtime.TypeWasm, runtime.TypeDocker:
	case "":
		return runtime.Artifact{}, nil, errdefs.MissingArtifactType.New("artifact_spec.artifact_type is required: process, wasm or docker")
	default:
		return runtime.Artifact{}, nil, errdefs.UnknownArtifactType.New("artifact_type %q is not one of process, wasm, docker", a.Type)
	}
	if a.Location == "" {
		return runtime.Artifact{}, nil, errdefs.MissingArtifactLocation.New("artifact_spec.location is required")
	}
	if a.Checksum != "" && !checksumPattern.MatchString(a.Checksum) {
		return runtime.Artifact{}, nil, errdefs.InvalidChecksum.New("checksum %q: want sha256:<64 hex digits>", a.Checksum)
	}
	art := runtime.Artifact{TaskID: id, Type: a.Type, Location: a.Location, Metadata: a.Metadata}
	if a.Type == runtime.TypeDocker {
		return art, nil, nil
	}
	path, err := r.localPath(ctx, a.Location)
	if err != nil {
		return runtime.Artifact{}, nil, err
	}
	want, refetch := a.Checksum, (func(context.Context) error)(nil)
	if digest, ok := strings.CutPrefix(a.Location, store.ArtifactScheme); ok {
		// A copy of content-addressed bytes: pinned to its address, and
		// fetched again should it change.
		want, refetch = digest, r.refetcher(digest, path)
	}
	p, digest, err := pinFile(ctx, path, want, refetch)
	if err != nil {
		return runtime.Artifact{}, nil, err
	}
	art.Location, art.Digest = path, digest
	return art, p, nil
}

// prepare checks that this node can run art and lets its runtime validate
// it (and warm its cache).
func (r *Registry) prepare(ctx context.Context, art runtime.Artifact) error {
	rt, ok := r.runtimes[art.Type]
	if !ok {
		return errdefs.RuntimeUnavailable.New("this node has no %s runtime", art.Type)
	}
	if v, ok := rt.(runtime.Validator); ok {
		if err := v.Validate(ctx, art); err != nil {
			return err
		}
	}
	r.hold(ctx, art)
	return nil
}

// localPath turns a location into a local file path: an uploaded
// artifact's copy, or an absolute path or file:// URI inside the artifact
// roots.
func (r *Registry) localPath(ctx context.Context, loc string) (string, error) {
	if digest, ok := strings.CutPrefix(loc, store.ArtifactScheme); ok {
		return r.store.Artifacts.Materialize(ctx, digest)
	}
	path, err := r.roots.Path(loc)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", errdefs.ArtifactNotFound.New("artifact %s: %v", path, err)
	}
	if st.IsDir() {
		return "", errdefs.ArtifactNotAFile.New("artifact %s is a directory: name the file in it to run", path)
	}
	if !st.Mode().IsRegular() {
		return "", errdefs.ArtifactNotAFile.New("artifact %s is not a regular file (mode %v)", path, st.Mode().Type())
	}
	return path, nil
}

// confinedPath is the path of a task's artifact to check against the
// artifact roots before each run: "" for an uploaded artifact (the node's
// own copy) or an image.
func confinedPath(a task.Artifact, art runtime.Artifact) string {
	if a.Type == runtime.TypeDocker || strings.HasPrefix(a.Location, store.ArtifactScheme) {
		return ""
	}
	return art.Location
}

package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
)

// engine is one wazero runtime (one memory ceiling) with WASI instantiated
// and its compiled modules.
type engine struct {
	r     *Runtime
	pages uint32 // memory ceiling in pages; 0 = none
	rt    wazero.Runtime
	wasi  api.Module

	mu   sync.Mutex
	mods map[string]*module // by slot (see cacheKey)
}

// module is a compiled module, shared by the runs of one task version.
type module struct {
	slot, key string
	ready     chan struct{} // closed once compiled (or failed)
	cm        wazero.CompiledModule
	err       error
	// start and startErr are entryPoints(cm, ""): the calls that run the
	// default function.
	start    []string
	startErr error

	// Guarded by engine.mu.
	refs  int
	stale bool // replaced by a newer version or forgotten: close when unused
}

// engine returns the engine for a memory ceiling, starting it if needed.
func (r *Runtime) engine(ctx context.Context, pages uint32) (*engine, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errClosed()
	}
	if e := r.engines[pages]; e != nil {
		return e, nil
	}
	cfg := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithCompilationCache(r.cache)
	if pages > 0 {
		cfg = cfg.WithMemoryLimitPages(pages)
	}
	ctx = context.WithoutCancel(ctx) // the engine outlives this call
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("wasm: instantiate WASI: %w: %w", errdefs.ErrInternal, err)
	}
	e := &engine{
		r:     r,
		pages: pages,
		rt:    rt,
		wasi:  rt.Module(wasi_snapshot_preview1.ModuleName),
		mods:  make(map[string]*module),
	}
	r.engines[pages] = e
	if pages > 0 {
		r.log.Debug("started wasm engine", "memory_limit_pages", pages, "engines", len(r.engines))
	}
	return e, nil
}

// Forget implements runtime.Forgetter: it drops the compiled module of a's
// task (of the version a.Digest names, or any version when it is empty)
// from every engine, closing it once no run uses it.
func (r *Runtime) Forget(ctx context.Context, a runtime.Artifact) {
	r.mu.Lock()
	engines := slices.Collect(maps.Values(r.engines))
	r.mu.Unlock()
	for _, e := range engines {
		e.forget(ctx, slotOf(a), a.Digest)
	}
}

// CachedArtifacts implements runtime.CacheReporter: the compiled modules
// held in memory, in every engine, including replaced ones that a run
// still uses.
func (r *Runtime) CachedArtifacts() int { return int(r.held.Load()) }

// forget drops the module in slot if its version is key (any when key is
// empty).
func (e *engine) forget(ctx context.Context, slot, key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.mods[slot]
	if m == nil || (key != "" && !strings.EqualFold(m.key, key)) {
		return
	}
	delete(e.mods, slot)
	m.stale = true
	e.closeIfUnused(ctx, m)
}

// acquire returns the compiled module of a, compiling it on first use. The
// caller must release it.
func (e *engine) acquire(ctx context.Context, a runtime.Artifact) (*module, error) {
	slot, key, err := cacheKey(a)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	m := e.mods[slot]
	if m != nil && m.key != key { // a new version of the task's module
		delete(e.mods, slot)
		m.stale = true
		e.closeIfUnused(ctx, m)
		m = nil
	}
	created := m == nil
	if created {
		m = &module{slot: slot, key: key, ready: make(chan struct{})}
		e.mods[slot] = m
	}
	m.refs++
	e.mu.Unlock()

	if created {
		e.compile(ctx, m, a)
	}
	select {
	case <-m.ready:
	case <-ctx.Done():
		e.release(ctx, m)
		return nil, fmt.Errorf("wasm: waiting for %s to compile: %w", a.Location, ctx.Err())
	}
	if m.err != nil {
		e.mu.Lock()
		if e.mods[slot] == m { // let a later call retry
			delete(e.mods, slot)
		}
		e.mu.Unlock()
		e.release(ctx, m)
		return nil, m.err
	}
	return m, nil
}

// release ends a use of m.
func (e *engine) release(ctx context.Context, m *module) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m.refs--
	e.closeIfUnused(ctx, m)
}

// closeIfUnused closes a stale module nobody uses. e.mu is held.
func (e *engine) closeIfUnused(ctx context.Context, m *module) {
	if !m.stale || m.refs > 0 || m.cm == nil {
		return
	}
	if err := m.cm.Close(context.WithoutCancel(ctx)); err != nil {
		e.r.log.Warn("closing compiled wasm module", "slot", m.slot, "error", err)
	}
	m.cm = nil
	e.r.held.Add(-1)
}

// compile reads, checks and compiles a into m, then marks m ready.
func (e *engine) compile(ctx context.Context, m *module, a runtime.Artifact) {
	defer close(m.ready)
	bin, err := os.ReadFile(a.Location)
	if err != nil {
		m.err = fileError(a, err)
		return
	}
	if want, ok := strings.CutPrefix(a.Digest, "sha256:"); ok {
		if sum := sha256.Sum256(bin); !strings.EqualFold(hex.EncodeToString(sum[:]), want) {
			m.err = errdefs.ArtifactChanged.New("wasm: %s: content does not match digest %s", a.Location, a.Digest)
			return
		}
	}
	e.r.compiles.Add(1)
	start := time.Now()
	// Compiling is not abandoned when this caller goes: others may wait.
	cctx := context.WithoutCancel(ctx)
	cm, err := e.rt.CompileModule(cctx, bin)
	if err != nil {
		if e.r.isClosed() {
			m.err = errClosed()
			return
		}
		m.err = invalidArtifact(a, "not a valid wasm module: %v", err)
		return
	}
	if err := checkWASI(cm, e.wasi); err != nil {
		_ = cm.Close(cctx)
		m.err = invalidArtifact(a, "not a WASI preview 1 module: %v", err)
		return
	}
	m.cm = cm
	e.r.held.Add(1)
	m.start, m.startErr = entryPoints(cm, "")
	e.r.log.DebugContext(ctx, "compiled wasm module", "task_id", a.TaskID, "location", a.Location,
		"digest", a.Digest, "memory_limit_pages", e.pages, "took", time.Since(start))
}

// cacheKey returns the cache slot of a (its task, or its file when it has no
// task) and the key of its current version (its digest, or its file's path,
// modification time and size).
func cacheKey(a runtime.Artifact) (slot, key string, err error) {
	slot = slotOf(a)
	if a.Digest != "" {
		return slot, a.Digest, nil
	}
	fi, err := os.Stat(a.Location)
	if err != nil {
		return "", "", fileError(a, err)
	}
	if !fi.Mode().IsRegular() {
		return "", "", invalidArtifact(a, "not a regular file")
	}
	return slot, fmt.Sprintf("%s|%d|%d", a.Location, fi.ModTime().UnixNano(), fi.Size()), nil
}

// slotOf is the cache slot of a: its task, or its file when it has no task.
func slotOf(a runtime.Artifact) string {
	if a.TaskID == "" {
		return "file:" + a.Location
	}
	return a.TaskID
}

func fileError(a runtime.Artifact, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return errdefs.ArtifactNotFound.New("wasm: artifact %s: %v", a.Location, err)
	}
	return errdefs.ArtifactUnreadable.New("wasm: artifact %s: %v", a.Location, err)
}

func invalidArtifact(a runtime.Artifact, format string, args ...any) error {
	return errdefs.InvalidArtifact.New("wasm: %s: "+format, append([]any{a.Location}, args...)...)
}

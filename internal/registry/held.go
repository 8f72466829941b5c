package registry

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
)

// hold records art as what its task's runtime holds now; the runtime
// releases the version it replaces.
func (r *Registry) hold(ctx context.Context, art runtime.Artifact) {
	r.mu.Lock()
	prev, had := r.held[art.TaskID]
	r.held[art.TaskID] = art
	r.mu.Unlock()
	if had && !sameVersion(prev, art) {
		r.forget(ctx, prev)
	}
}

// changed drops task id from the cache after a change by any node. If the
// task is gone, its runtime releases all it held for it; if it is now
// pinned to other content, the version it held.
func (r *Registry) changed(ctx context.Context, id string) {
	r.mu.Lock()
	delete(r.cache, id)
	prev, had := r.held[id]
	r.mu.Unlock()
	if !had {
		return
	}
	t, err := r.store.Tasks.Get(ctx, id)
	release := prev
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		release.Digest = "" // every version
	case err != nil:
		r.log.Warn("reading a changed task", "task", id, "err", err)
		return
	case sameVersion(prev, runtime.Artifact{Type: t.Artifact.Type, Digest: t.Artifact.Checksum}):
		return
	}
	r.mu.Lock()
	cur, still := r.held[id]
	current := still && sameVersion(cur, prev) // not replaced meanwhile
	if current {
		delete(r.held, id)
	}
	r.mu.Unlock()
	if current {
		r.forget(ctx, release)
	}
}

// forget has a's runtime release what it holds for a.
func (r *Registry) forget(ctx context.Context, a runtime.Artifact) {
	if f, ok := r.runtimes[a.Type].(runtime.Forgetter); ok {
		f.Forget(ctx, a)
	}
}

// sameVersion reports whether a runtime holding a holds b too.
func sameVersion(a, b runtime.Artifact) bool {
	return a.Type == b.Type && strings.EqualFold(a.Digest, b.Digest)
}

// refetcher returns how to replace the local copy at path of the uploaded
// artifact digest: remove it and materialise it again from the store.
func (r *Registry) refetcher(digest, path string) func(context.Context) error {
	return func(ctx context.Context) error {
		r.log.Warn("the local copy of an uploaded artifact changed; fetching it again", "artifact", digest, "path", path)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return errdefs.ArtifactUnreadable.New("artifact %s: %v", path, err)
		}
		_, err := r.store.Artifacts.Materialize(ctx, digest)
		return err
	}
}

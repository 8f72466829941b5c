package store

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
)

// Retention by size. Records expire by age (--retention); when the store
// passes reclaimAbove of its budget, what may be dropped goes, oldest
// first, until it is under reclaimBelow: uploaded artifacts no task uses,
// then the stored output and input of finished executions. A finished
// execution keeps its record — status, outcome, the output's first part,
// size and sha256 — and says its output is no longer stored. Pending and
// running work is never touched.
const (
	reclaimAbove = 0.8
	reclaimBelow = 0.7
	// unusedArtifactAge spares an artifact uploaded moments ago for a task
	// about to be registered.
	unusedArtifactAge = 10 * time.Minute
)

// reclaimLoop reclaims space every interval until ctx ends.
func (s *Store) reclaimLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.Reclaim(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			// Said once, then once a minute while it goes on.
			if failures%30 == 0 {
				s.log.Warn("reclaiming store space", "err", err, "failures", failures+1)
			}
			failures++
		case err == nil:
			failures = 0
		}
		if n > 0 {
			s.log.Info("reclaimed store space", "dropped", n, "store_bytes", s.usage.used(), "budget", s.usage.budget())
		}
	}
}

// Reclaim drops what may be dropped while the store is over reclaimAbove
// of its budget, and returns how many things it dropped.
func (s *Store) Reclaim(ctx context.Context) (int, error) {
	b := s.usage.budget()
	over := func() (bool, error) {
		used, err := s.measure(ctx)
		if err != nil {
			return false, err
		}
		return float64(used) > reclaimBelow*float64(b), nil
	}
	if b == 0 || float64(s.usage.used()) <= reclaimAbove*float64(b) {
		return 0, nil
	}
	n, err := s.dropUnusedArtifacts(ctx)
	if err != nil {
		return n, err
	}
	if more, err := over(); err != nil || !more {
		return n, err
	}
	ids, err := s.Records.ids(ctx, "")
	if err != nil {
		return n, err
	}
	for i, id := range ids {
		dropped, err := s.dropOutput(ctx, id)
		if err != nil {
			return n, err
		}
		if dropped {
			n++
		}
		if i%16 == 15 {
			if more, err := over(); err != nil || !more {
				return n, err
			}
		}
	}
	return n, nil
}

// dropUnusedArtifacts deletes uploaded artifacts that no task names.
func (s *Store) dropUnusedArtifacts(ctx context.Context) (int, error) {
	infos, err := s.artifacts.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0, nil
	}
	if err != nil {
		return 0, s.unavailable("list artifacts", err)
	}
	tasks, err := s.Tasks.List(ctx)
	if err != nil {
		return 0, err
	}
	used := map[string]bool{}
	for _, t := range tasks {
		used[strings.TrimPrefix(t.Artifact.Location, ArtifactScheme)] = true
	}
	n := 0
	for _, info := range infos {
		if used[info.Name] || time.Since(info.ModTime) < unusedArtifactAge {
			continue
		}
		if err := s.artifacts.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return n, s.unavailable("delete artifact", err)
		}
		n++
	}
	return n, nil
}

// dropOutput drops a finished execution's stored output and input; it
// reports whether there was any to drop.
func (s *Store) dropOutput(ctx context.Context, id string) (bool, error) {
	r, rev, err := s.Records.Get(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil // expired since listed
	}
	if err != nil || !r.Status.Terminal() || r.OutputDropped {
		return false, err
	}
	if err := s.Outputs.Delete(ctx, id); err != nil {
		return false, err
	}
	if err := s.Inputs.Delete(ctx, id); err != nil {
		return false, err
	}
	r.OutputStored, r.OutputDropped = false, true
	if _, err := s.Records.Update(ctx, r, rev); err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
		return false, err
	}
	return true, nil
}

package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/errdefs"
)

// The store's budget: how many bytes Spear's streams and buckets may hold.
// It is --max-store-bytes when given; else, embedded, 90% of what the data
// dir's filesystem could hold at start (the embedded server is held to it
// too); else the account's JetStream limit; else it is learned: the usage
// at which the server first refused a write for lack of space.
//
// A reserve is kept so that accepted work can always finish: new work is
// refused (STORAGE_FULL) once the usage reaches the budget less the
// reserve, output stops being stored at the budget less half the reserve,
// and the final records of what was accepted fit in the rest.

// storageFull is the error of work refused for lack of space.
func storageFull(format string, args ...any) error {
	return errdefs.StorageFull.New(format, args...)
}

// noSpace reports whether the server refused an operation for lack of
// space (JetStream's insufficient resources, or a full disk).
func noSpace(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == 10023 || apiErr.ErrorCode == 10047) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "insufficient resources") || strings.Contains(msg, "insufficient storage") ||
		strings.Contains(msg, "no space left on device")
}

// usage tracks the store's size against its budget.
type usage struct {
	limit   int64        // the budget; 0: not known
	learned atomic.Int64 // the most the streams held when the server refused a write (limit unknown)
	// measured is the usage last measured; inflight is output published
	// and not yet acknowledged, which a measurement may not see yet.
	measured atomic.Int64
	inflight atomic.Int64
	refused  atomic.Int64 // Unix nanoseconds of the latest refused write
	learning atomic.Bool  // a refused write's usage is being measured
}

// refusedRecently is how long a refused write makes the store report
// itself full, whatever the measured usage says.
const refusedRecently = 5 * time.Second

// used is the usage: as measured, plus output on its way.
func (u *usage) used() int64 { return u.measured.Load() + u.inflight.Load() }

func (u *usage) budget() int64 {
	if u.limit > 0 {
		return u.limit
	}
	return u.learned.Load()
}

// reserve is what new work may not use: a tenth of the budget, at least
// 4 MiB.
func reserve(budget int64) int64 { return max(budget/10, 4<<20) }

// admit refuses new work when accepting it would eat into the reserve.
func (u *usage) admit() error {
	b, used := u.budget(), u.used()
	if b > 0 && used+reserve(b) >= b {
		return storageFull("the store holds %d of its %d bytes (%d kept for work already accepted): new work is refused until retention frees space; raise --max-store-bytes or free disk", used, b, reserve(b))
	}
	if t := u.refused.Load(); t != 0 && time.Since(time.Unix(0, t)) < refusedRecently {
		return storageFull("the store refused a write for lack of space moments ago: new work is refused until retention frees space; raise --max-store-bytes or free disk")
	}
	return nil
}

// allowOutput refuses to store n more bytes of output once the usage
// reaches the budget less half the reserve; else the n bytes count as on
// their way until outputLanded.
func (u *usage) allowOutput(n int) error {
	b := u.budget()
	used := u.measured.Load() + u.inflight.Add(int64(n))
	if b > 0 && used > b-reserve(b)/2 {
		u.inflight.Add(-int64(n)) // not written
		return storageFull("the store is nearly full (%d of %d bytes): the rest of this output is not stored", used, b)
	}
	return nil
}

// outputLanded says n bytes of output allowed by allowOutput were
// acknowledged (the store's own byte count has them now) or refused.
func (u *usage) outputLanded(n int) { u.inflight.Add(-int64(n)) }

// note records a write the server refused for lack of space.
func (s *core) note(err error) {
	if !errdefs.StorageFull.Is(err) {
		return
	}
	s.usage.refused.Store(time.Now().UnixNano())
	if s.usage.limit == 0 && s.usage.learning.CompareAndSwap(false, true) {
		go s.learnBudget()
	}
}

// learnBudget measures what the streams hold when the server just refused
// a write: the budget learned is the most they held at a refusal. Not the
// usage last measured (up to a second old: far off with output pouring
// in), nor output on its way (the server has not got it); meanwhile the
// refusal itself holds new work back (refusedRecently).
func (s *core) learnBudget() {
	defer s.usage.learning.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := s.measure(ctx)
	if err != nil {
		return
	}
	for {
		old := s.usage.learned.Load()
		if n <= old || s.usage.learned.CompareAndSwap(old, n) {
			return
		}
	}
}

// AdmitWork refuses new work when it could not be recorded: with
// CLUSTER_UNAVAILABLE while the cluster has no quorum (see quorum.go), with
// STORAGE_FULL when the store is too full to be sure it can be finished.
func (s *Store) AdmitWork() error {
	if err := s.quorum.check(); err != nil {
		return fmt.Errorf("accepting work: %w", err)
	}
	return s.usage.admit()
}

// StorageState is the store's usage, for health, stats and metrics.
type StorageState struct {
	Used, Budget int64 // Budget 0: not known
	// Full says a write was refused for lack of space moments ago.
	Full bool
}

// Storage returns the store's usage as last measured.
func (s *Store) Storage() StorageState {
	t := s.usage.refused.Load()
	return StorageState{Used: s.usage.used(), Budget: s.usage.budget(),
		Full: t != 0 && time.Since(time.Unix(0, t)) < refusedRecently}
}

// measureUsage refreshes the usage every interval until ctx ends.
func (s *Store) measureUsage(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_, _ = s.measure(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// measure refreshes the usage: what the streams hold, and for the
// embedded server what its files take on disk, if more (deleted messages
// take disk space until their blocks are compacted), or all of the
// budget when the filesystem itself is nearly full.
func (s *core) measure(ctx context.Context) (int64, error) {
	n, err := s.StorageBytes(ctx)
	if err != nil {
		return 0, err
	}
	if s.srv != nil {
		dir := filepath.Join(s.opts.DataDir, "jetstream")
		n = max(n, dirBytes(dir))
		if free, err := freeBytes(dir); err == nil && free < reserve(s.usage.limit)/2 {
			n = max(n, s.usage.limit)
		}
	}
	s.usage.measured.Store(n)
	return n, nil
}

// embeddedBudget is 90% of what the data dir's filesystem can hold for
// the embedded server: its free space plus what the server already keeps.
func embeddedBudget(dir string) (int64, error) {
	free, err := freeBytes(dir)
	if err != nil {
		return 0, err
	}
	return (free + dirBytes(dir)) / 10 * 9, nil
}

func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// dirBytes is the size of the files under dir.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// accountBudget is the account's JetStream storage limit, 0 if it has
// none.
func (s *Store) accountBudget(ctx context.Context) int64 {
	info, err := s.js.AccountInfo(ctx)
	if err != nil || info.Limits.MaxStore <= 0 {
		return 0
	}
	return info.Limits.MaxStore
}

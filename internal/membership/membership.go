// Package membership puts this node in the node registry (store.Nodes)
// and keeps a view of every live node sharing the store: it claims the
// node's id at start (refusing a second live node of that id, or one whose
// store format differs), renews the node's entry every second with its
// current figures, and removes it when the node stops cleanly. The view is
// refreshed with each renewal, so reading it costs nothing.
package membership

import (
	"context"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/store"
)

// Registry is what membership needs of store.Nodes.
type Registry interface {
	Claim(ctx context.Context, e store.NodeEntry) error
	Announce(ctx context.Context, e store.NodeEntry) error
	List(ctx context.Context) ([]store.NodeEntry, error)
	Leave(ctx context.Context, id string) error
}

// Figures returns this node's current figures (slots and waiting); the
// rest of its entry is fixed at Join.
type Figures func() (total, busy, waiting int)

// Member is this node's membership.
type Member struct {
	reg     Registry
	self    store.NodeEntry
	figures Figures
	now     func() time.Time
	log     *slog.Logger

	mu   sync.Mutex
	view []store.NodeEntry

	stop context.CancelFunc
	done chan struct{}
}

// Options configures Join.
type Options struct {
	// Self is this node's entry: ID, Address, Runtimes and Home are used.
	Self    store.NodeEntry
	Figures Figures
	// Interval between renewals; 0 means store.NodeHeartbeat.
	Interval time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
}

// Join claims the node's id and starts renewing its entry. It refuses a
// store whose live nodes keep another store format (STORE_FORMAT_MISMATCH)
// and an id a live node has (NODE_ID_IN_USE).
func Join(ctx context.Context, reg Registry, opts Options) (*Member, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Interval <= 0 {
		opts.Interval = store.NodeHeartbeat
	}
	m := &Member{reg: reg, self: opts.Self, figures: opts.Figures, now: opts.Now, log: opts.Logger, done: make(chan struct{})}
	m.self.Version, m.self.Format, m.self.StartedAt = Version(), store.StoreFormat, opts.Now()
	others, err := reg.List(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkFormats(m.self.ID, others); err != nil {
		return nil, err
	}
	if err := reg.Claim(ctx, m.entry()); err != nil {
		return nil, err
	}
	m.refresh(ctx)
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	m.stop = stop
	go m.loop(bg, opts.Interval)
	return m, nil
}

// checkFormats refuses live nodes (other than an earlier run of self)
// that keep the store in another format.
func checkFormats(self string, nodes []store.NodeEntry) error {
	for _, n := range nodes {
		if n.ID != self && n.Format != store.StoreFormat {
			return errdefs.StoreFormatMismatch.New(
				"node %s (version %s) keeps the store in format %d, this node (version %s) in format %d: run one version per store",
				n.ID, n.Version, n.Format, Version(), store.StoreFormat)
		}
	}
	return nil
}

// entry is this node's entry as of now.
func (m *Member) entry() store.NodeEntry {
	e := m.self
	e.Runtimes = slices.Clone(e.Runtimes)
	if m.figures != nil {
		e.SlotsTotal, e.SlotsBusy, e.Waiting = m.figures()
	}
	e.Heartbeat = m.now()
	return e
}

func (m *Member) loop(ctx context.Context, every time.Duration) {
	defer close(m.done)
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := m.reg.Announce(ctx, m.entry())
		if err != nil && !failing && ctx.Err() == nil {
			m.log.Warn("node registry: cannot renew this node's entry; other nodes will stop seeing it", "err", err)
		} else if err == nil && failing {
			m.log.Info("node registry: this node's entry is renewed again")
		}
		failing = err != nil
		m.refresh(ctx)
	}
}

// refresh reads the registry into the view; on failure the view keeps
// only this node.
func (m *Member) refresh(ctx context.Context) {
	nodes, err := m.reg.List(ctx)
	if err != nil {
		nodes = nil
	}
	self := m.entry()
	nodes = slices.DeleteFunc(nodes, func(n store.NodeEntry) bool { return n.ID == self.ID })
	nodes = append(nodes, self)
	slices.SortFunc(nodes, func(a, b store.NodeEntry) int { return strings.Compare(a.ID, b.ID) })
	m.mu.Lock()
	m.view = nodes
	m.mu.Unlock()
}

// Nodes returns the live nodes as last seen, this node with its current
// figures, ordered by id.
func (m *Member) Nodes() []store.NodeEntry {
	m.mu.Lock()
	out := slices.Clone(m.view)
	m.mu.Unlock()
	for i := range out {
		if out[i].ID == m.self.ID {
			out[i] = m.entry()
		}
	}
	return out
}

// Self is this node's id.
func (m *Member) Self() string { return m.self.ID }

// Leave stops renewing and removes the node's entry, so that other nodes
// stop seeing it at once.
func (m *Member) Leave(ctx context.Context) {
	m.stop()
	<-m.done
	if err := m.reg.Leave(ctx, m.self.ID); err != nil {
		m.log.Warn("node registry: removing this node's entry", "err", err)
	}
}

// Version is the spear build's version: the module version, else the
// VCS revision it was built from, else "devel".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}

package membership

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/testwait"
)

// fakeRegistry is an in-memory store.Nodes.
type fakeRegistry struct {
	mu      sync.Mutex
	entries map[string]store.NodeEntry
	renewed int
}

func newFake(others ...store.NodeEntry) *fakeRegistry {
	f := &fakeRegistry{entries: map[string]store.NodeEntry{}}
	for _, e := range others {
		f.entries[e.ID] = e
	}
	return f
}

func (f *fakeRegistry) Claim(_ context.Context, e store.NodeEntry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.entries[e.ID]; ok {
		return errdefs.NodeIDInUse.New("in use")
	}
	f.entries[e.ID] = e
	return nil
}

func (f *fakeRegistry) Announce(_ context.Context, e store.NodeEntry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries[e.ID] = e
	f.renewed++
	return nil
}

func (f *fakeRegistry) List(context.Context) ([]store.NodeEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []store.NodeEntry
	for _, e := range f.entries {
		out = append(out, e)
	}
	return out, nil
}

func (f *fakeRegistry) Leave(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.entries, id)
	return nil
}

func (f *fakeRegistry) renewals() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.renewed
}

func TestJoin(t *testing.T) {
	other := store.NodeEntry{ID: "b", Format: store.StoreFormat}
	for _, tc := range []struct {
		name string
		reg  *fakeRegistry
		want errdefs.Code
	}{
		{"alone", newFake(), errdefs.Code{}},
		{"with another node", newFake(other), errdefs.Code{}},
		{"id in use", newFake(store.NodeEntry{ID: "a", Format: store.StoreFormat}), errdefs.NodeIDInUse},
		{"other format", newFake(store.NodeEntry{ID: "b", Format: store.StoreFormat + 1}), errdefs.StoreFormatMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Join(t.Context(), tc.reg, Options{Self: store.NodeEntry{ID: "a"}})
			if tc.want != (errdefs.Code{}) {
				if !tc.want.Is(err) {
					t.Fatalf("Join: %v, want %s", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m.Leave(t.Context())
		})
	}
}

// TestMember: the view lists every node, this one with its current
// figures; the entry is renewed; Leave removes it.
func TestMember(t *testing.T) {
	reg := newFake(store.NodeEntry{ID: "b", Format: store.StoreFormat})
	var mu sync.Mutex
	busy := 1
	m, err := Join(t.Context(), reg, Options{
		Self:     store.NodeEntry{ID: "a", Address: "127.0.0.1:1", Runtimes: []string{"process"}},
		Figures:  func() (int, int, int) { mu.Lock(); defer mu.Unlock(); return 4, busy, 2 },
		Interval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	busy = 3
	mu.Unlock()
	nodes := m.Nodes()
	if ids := []string{nodes[0].ID, nodes[1].ID}; !slices.Equal(ids, []string{"a", "b"}) {
		t.Fatalf("view %v", ids)
	}
	if a := nodes[0]; a.SlotsTotal != 4 || a.SlotsBusy != 3 || a.Waiting != 2 || a.Version == "" || a.Format != store.StoreFormat {
		t.Errorf("self entry %+v", a)
	}
	testwait.Until(t, "three renewals", func() bool { return reg.renewals() >= 3 })
	m.Leave(t.Context())
	if got, _ := reg.List(t.Context()); len(got) != 1 || got[0].ID != "b" {
		t.Errorf("after Leave: %v", got)
	}
}

package store

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
)

// TestNodesClaim: a new id is claimed; an entry of the same home (this
// node's previous run) is taken over at once; an entry another home keeps
// renewing is refused with NODE_ID_IN_USE; one nobody renews is claimed
// once it expires; Leave removes an entry.
func TestNodesClaim(t *testing.T) {
	s := openStore(t, t.TempDir(), time.Second)
	ctx := testCtx(t)
	a := NodeEntry{ID: "a", Address: "127.0.0.1:1", Home: "h:/data/a", Format: StoreFormat}
	if err := s.Nodes.Claim(ctx, a); err != nil {
		t.Fatalf("Claim new: %v", err)
	}
	if err := s.Nodes.Claim(ctx, a); err != nil {
		t.Fatalf("Claim of the same home: %v", err)
	}

	renewing, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for renewing.Err() == nil {
			_ = s.Nodes.Announce(renewing, a)
			select {
			case <-renewing.Done():
			case <-time.After(NodeHeartbeat / 5):
			}
		}
	}()
	other := a
	other.Home = "h:/data/other"
	err := s.Nodes.Claim(ctx, other)
	stop()
	<-done
	if !errdefs.NodeIDInUse.Is(err) {
		t.Fatalf("Claim of a live node's id: %v, want NODE_ID_IN_USE", err)
	}
	if err := s.Nodes.Claim(ctx, other); err != nil {
		t.Fatalf("Claim once the entry expires: %v", err)
	}

	b := NodeEntry{ID: "b", Home: "h:/data/b", Format: StoreFormat}
	if err := s.Nodes.Claim(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := nodeIDs(t, s); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("List: %v", got)
	}
	if err := s.Nodes.Leave(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got := nodeIDs(t, s); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("List after Leave: %v", got)
	}
}

func nodeIDs(t *testing.T, s *Store) []string {
	t.Helper()
	nodes, err := s.Nodes.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestAddStatsConcurrent: nodes adding their shares of a task's stats at
// the same time lose none of them.
func TestAddStatsConcurrent(t *testing.T) {
	s := openStore(t, t.TempDir(), time.Second)
	ctx := testCtx(t)
	const adders, each = 4, 25
	var wg sync.WaitGroup
	for range adders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := s.Tasks.AddStats(ctx, "t", &TaskStats{Count: 1, RecentMs: []int64{5}}, 8); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	all, err := s.Tasks.AllStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := all["t"]; got == nil || got.Count != adders*each || len(got.RecentMs) != 8 {
		t.Fatalf("stats %+v, want count %d and 8 durations", got, adders*each)
	}
}

// TestNodesBucketOnDisk: the registry's bucket is kept on disk; one kept
// in memory by an earlier version is replaced when a node provisions.
func TestNodesBucketOnDisk(t *testing.T) {
	s := openStore(t, t.TempDir(), time.Second)
	ctx := t.Context()
	storage := func() jetstream.StorageType {
		kv, err := s.js.KeyValue(ctx, BucketNodes)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Storage
	}
	if got := storage(); got != jetstream.FileStorage {
		t.Fatalf("registry bucket storage %v; want file", got)
	}
	if err := s.js.DeleteKeyValue(ctx, BucketNodes); err != nil {
		t.Fatal(err)
	}
	if _, err := s.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketNodes, TTL: NodeTTL, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	if err := (&provisioner{s.core}).provisionNodes(ctx); err != nil {
		t.Fatal(err)
	}
	if got := storage(); got != jetstream.FileStorage {
		t.Fatalf("registry bucket storage after provisioning over a memory one %v; want file", got)
	}
}

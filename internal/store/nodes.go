package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
)

// The node registry: every node puts what it advertises into the KV
// bucket spear_nodes, under its id, every second (NodeHeartbeat). The
// bucket's TTL removes the entry of a node that stopped (NodeTTL), so a
// list of the bucket is the live nodes. The registry is advisory: which
// node runs what rests on the work queue's AckWait, not on it.
const (
	BucketNodes = "spear_nodes"
	// NodeHeartbeat is how often a node renews its entry.
	NodeHeartbeat = time.Second
	// NodeTTL is how long an entry outlives its last renewal.
	NodeTTL = 3 * time.Second
)

// StoreFormat is the version of what Spear keeps in the store (record,
// queue message and bucket layouts). Nodes of different formats cannot
// share a store: a node refuses to join one whose live nodes have another.
// 2: queue subjects carry the task's runtime (format 1's queued work is
// moved at start-up, see sources.go).
const StoreFormat = 2

// NodeEntry is what a node advertises in the registry.
type NodeEntry struct {
	ID       string   `json:"id"`
	Address  string   `json:"address"`
	Runtimes []string `json:"runtimes"`
	// SlotsTotal is its run slots; SlotsBusy those running now; Waiting
	// the executions waiting there for one.
	SlotsTotal int    `json:"slots_total"`
	SlotsBusy  int    `json:"slots_busy"`
	Waiting    int    `json:"waiting"`
	Version    string `json:"version"`
	// Home is where the node keeps its data: host name and data dir,
	// which one node at a time holds (package datadir).
	Home string `json:"home"`
	// Format is the node's StoreFormat.
	Format    int       `json:"format"`
	StartedAt time.Time `json:"started_at"`
	Heartbeat time.Time `json:"heartbeat"`
}

// Nodes is the node registry (see BucketNodes).
type Nodes struct{ *core }

// provisionNodes creates the registry's bucket, entries expiring NodeTTL
// after their last write. It is kept on disk although nothing in it needs
// to outlive the servers: with 3 copies in memory, a cluster that lost two
// servers could not elect a leader for it once one came back (its copy
// restarts empty), and a restarted node waited for it for good. A bucket
// in memory, made by an earlier version, is replaced (its entries come
// back within a heartbeat).
func (s *provisioner) provisionNodes(ctx context.Context) error {
	if old, err := s.js.KeyValue(ctx, BucketNodes); err == nil {
		st, err := old.Status(ctx)
		if b, ok := st.(*jetstream.KeyValueBucketStatus); err == nil && ok && b.StreamInfo().Config.Storage == jetstream.MemoryStorage {
			s.log.Info("node registry: replacing the bucket kept in memory by one on disk", "bucket", BucketNodes)
			if err := s.js.DeleteKeyValue(ctx, BucketNodes); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
				return fmt.Errorf("bucket %s: %w", BucketNodes, err)
			}
		}
	}
	nodes, err := s.ensureKV(ctx, jetstream.KeyValueConfig{
		Bucket:   BucketNodes,
		History:  1,
		TTL:      NodeTTL,
		Storage:  jetstream.FileStorage,
		Replicas: s.opts.Replicas,
	})
	if err != nil {
		return fmt.Errorf("bucket %s: %w", BucketNodes, err)
	}
	s.nodes = boundKV{nodes, s.core}
	return nil
}

// Claim puts e as a new entry. An entry of e.ID that is still there is
// either what a node of that id left when it died or a live node's. One of
// the same Home was left by this node's previous run (the caller holds the
// home): Claim takes it over. Another expires within NodeTTL if its node
// is dead (Claim waits for that) and is renewed if not (Claim refuses with
// NODE_ID_IN_USE).
func (s *Nodes) Claim(ctx context.Context, e NodeEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(NodeTTL + time.Second)
	var seen uint64
	for {
		_, err := s.nodes.Create(ctx, e.ID, b)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return unavailable("node registry", err)
		}
		cur, err := s.nodes.Get(ctx, e.ID)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
			continue
		case err != nil:
			return unavailable("node registry", err)
		case e.Home != "" && entryOf(cur.Value()).Home == e.Home:
			return s.Announce(ctx, e)
		case seen != 0 && cur.Revision() != seen || time.Now().After(deadline):
			return errdefs.NodeIDInUse.New("node id %q is in use by a live node (%s): give each node its own --node-id", e.ID, addressOf(entryOf(cur.Value())))
		}
		seen = cur.Revision()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(NodeHeartbeat / 4):
		}
	}
}

// entryOf decodes an entry's value (the zero entry if it cannot).
func entryOf(v []byte) NodeEntry {
	var e NodeEntry
	_ = json.Unmarshal(v, &e)
	return e
}

// addressOf returns where an entry's node is, for messages.
func addressOf(e NodeEntry) string {
	if e.Address == "" {
		return "address unknown"
	}
	return "at " + e.Address
}

// Announce renews e's entry.
func (s *Nodes) Announce(ctx context.Context, e NodeEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := s.nodes.Put(ctx, e.ID, b); err != nil {
		return unavailable("node registry", err)
	}
	return nil
}

// List returns the live nodes' entries, by id.
func (s *Nodes) List(ctx context.Context) ([]NodeEntry, error) {
	keys, err := s.nodes.ListKeys(ctx)
	if err != nil {
		return nil, unavailable("node registry", err)
	}
	var out []NodeEntry
	for k := range keys.Keys() {
		v, err := s.nodes.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return nil, unavailable("node registry", err)
		}
		var e NodeEntry
		if err := json.Unmarshal(v.Value(), &e); err != nil {
			s.log.Warn("node registry: an entry that is not a node's", "key", k, "err", err)
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// Leave removes node id's entry at once (a node that stops cleanly).
func (s *Nodes) Leave(ctx context.Context, id string) error {
	if err := s.nodes.Delete(ctx, id); err != nil {
		return unavailable("node registry", err)
	}
	return nil
}

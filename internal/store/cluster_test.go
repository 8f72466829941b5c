package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
)

// freePorts returns n loopback HOST:PORT that were free a moment ago.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l.Addr().String())
		defer l.Close()
	}
	return out
}

// openCluster opens n stores at once, each with its embedded server in one
// cluster, and closes them when the test ends.
func openCluster(t *testing.T, n int, replicas int) []*Store {
	t.Helper()
	c := newTestCluster(t, n)
	return c.open(t, replicas, nil)
}

// testCluster is where the members of an embedded cluster keep their data
// and accept routes, so that a member can be opened again.
type testCluster struct {
	addrs, dirs []string
}

func newTestCluster(t *testing.T, n int) *testCluster {
	c := &testCluster{addrs: freePorts(t, n)}
	for range n {
		c.dirs = append(c.dirs, t.TempDir())
	}
	return c
}

// open opens the members (all when nil) at once, closed when the test ends.
func (c *testCluster) open(t *testing.T, replicas int, members []int) []*Store {
	t.Helper()
	var routes []string
	for _, a := range c.addrs {
		routes = append(routes, "nats://"+a)
	}
	if members == nil {
		for i := range c.addrs {
			members = append(members, i)
		}
	}
	stores := make([]*Store, len(members))
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for j, i := range members {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second) // over Open's 2 min in a cluster
			defer cancel()
			stores[j], errs[j] = Open(ctx, Options{
				DataDir: c.dirs[i], NodeID: fmt.Sprintf("n%d", i+1), Replicas: replicas,
				Cluster: Cluster{Listen: c.addrs[i], Routes: routes}, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
			})
		})
	}
	wg.Wait()
	for j, s := range stores {
		if s != nil {
			t.Cleanup(s.Close)
		}
		if errs[j] != nil {
			t.Fatalf("Open node %d: %v", members[j]+1, errs[j])
		}
	}
	return stores
}

// testWriter writes a logger's lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestEmbeddedCluster: three stores opened at once, their embedded servers
// routed to each other, form one JetStream cluster and keep 3 copies of
// every stream; what one writes, the others read.
func TestEmbeddedCluster(t *testing.T) {
	stores := openCluster(t, 3, 0)
	ctx := testCtx(t)
	for i, s := range stores {
		if s.Replicas() != 3 {
			t.Errorf("node %d: replicas %d, want 3 (auto, 3 servers)", i+1, s.Replicas())
		}
	}
	for _, name := range []string{StreamQueue, StreamChunks, "KV_" + BucketExecutions, "OBJ_" + BucketArtifacts} {
		st, err := stores[0].js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info := st.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("stream %s: replicas %d, cluster %+v; want 3 copies on 3 servers", name, info.Config.Replicas, info.Cluster)
		}
	}
	rec := newRecord("e1", "t1", execution.StatusPending)
	if _, err := stores[0].Records.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got, _, err := stores[2].Records.Get(ctx, "e1")
	if err != nil || got.ID != "e1" {
		t.Fatalf("record written on node 1, read on node 3: %+v, %v", got, err)
	}
	// The leader's read sees a write at once, from any node, and knows an
	// unknown record as not found.
	rec.Status = execution.StatusRunning
	rev, err := stores[1].Records.Put(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	if got, grev, err := stores[2].Records.GetLatest(ctx, "e1"); err != nil || got.Status != execution.StatusRunning || grev != rev {
		t.Fatalf("GetLatest on node 3 after a write on node 2 = %+v rev %d, %v; want RUNNING rev %d", got, grev, err, rev)
	}
	if _, _, err := stores[0].Records.GetLatest(ctx, "never"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetLatest of an unknown record = %v, want not found", err)
	}
}

// TestReplicasRefusedOnSingleServer: more than one copy needs a cluster;
// a single embedded server refuses it, saying why and what to do.
func TestReplicasRefusedOnSingleServer(t *testing.T) {
	_, err := Open(testCtx(t), Options{DataDir: t.TempDir(), Replicas: 3})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "--replicas 3") ||
		!strings.Contains(err.Error(), "single server") {
		t.Fatalf("Open with --replicas 3 on one embedded server: %v; want a refusal naming --replicas and why", err)
	}
}

// TestClusterSettingsRefused: settings that cannot form a cluster are
// refused before anything starts, naming the flag.
func TestClusterSettingsRefused(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"routes without a listen address", Options{Cluster: Cluster{Routes: []string{"nats://127.0.0.1:6222"}}}, "--nats-routes needs --nats-cluster"},
		{"cluster with an external server", Options{URL: "nats://127.0.0.1:4222", Cluster: Cluster{Listen: "127.0.0.1:6222"}}, "one or the other"},
		{"a route that is no URL", Options{Cluster: Cluster{Listen: "127.0.0.1:6222", Routes: []string{"peer1:6222"}}}, "--nats-routes"},
		{"negative replicas", Options{Replicas: -1}, "--replicas -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.DataDir = t.TempDir()
			_, err := Open(testCtx(t), tt.opts)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open: %v; want invalid argument mentioning %q", err, tt.want)
			}
		})
	}
}

// TestJetStreamNotReady: a cluster that cannot elect a leader (its peers
// never come) makes Open fail once the ready timeout has passed, saying
// what it waited for, not hang.
func TestJetStreamNotReady(t *testing.T) {
	addrs := freePorts(t, 3)
	routes := []string{"nats://" + addrs[0], "nats://" + addrs[1], "nats://" + addrs[2]}
	start := time.Now()
	_, err := Open(testCtx(t), Options{DataDir: t.TempDir(), NodeID: "lonely", ReadyTimeout: 3 * time.Second,
		Cluster: Cluster{Listen: addrs[0], Routes: routes}})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "not ready after 3s") ||
		!strings.Contains(err.Error(), "embedded NATS server") {
		t.Fatalf("Open with peers that never come: %v; want UNAVAILABLE after the ready timeout, naming the server", err)
	}
	t.Logf("gave up after %v", time.Since(start).Round(time.Millisecond))
}

// TestTransient: what provisioning retries at start-up.
func TestTransient(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("bucket x: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008}), true},
		{fmt.Errorf("bucket x: %w", &jetstream.APIError{Code: 500, ErrorCode: 10074}), false},
		{fmt.Errorf("x: %w", errdefs.ErrInvalidArgument), false},
		{errors.New("permissions violation"), false},
	}
	for _, tt := range tests {
		if got := transient(tt.err); got != tt.want {
			t.Errorf("transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

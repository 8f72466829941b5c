// Package node wires a spearlet node together: the store, the runtimes, the
// registry, the executor, the metrics and the server. It is the one place
// where components are assembled.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spear-go/spear/internal/callback"
	"github.com/spear-go/spear/internal/confine"
	"github.com/spear-go/spear/internal/console"
	"github.com/spear-go/spear/internal/datadir"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/executor"
	"github.com/spear-go/spear/internal/membership"
	"github.com/spear-go/spear/internal/metrics"
	"github.com/spear-go/spear/internal/registry"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/runtime/docker"
	"github.com/spear-go/spear/internal/runtime/process"
	"github.com/spear-go/spear/internal/runtime/wasm"
	"github.com/spear-go/spear/internal/sandbox"
	"github.com/spear-go/spear/internal/server"
	"github.com/spear-go/spear/internal/store"
)

// Config is everything a node needs.
type Config struct {
	Listen     string
	DataDir    string
	NodeID     string
	NATSURL    string
	NATSListen string
	// Replicas of every stream and bucket (0: auto; see store.Options).
	Replicas int
	// NATSCluster makes the embedded NATS server join the other nodes'
	// (store.Cluster): --nats-cluster and --nats-routes.
	NATSCluster store.Cluster
	Sync        store.SyncPolicy
	// Docker is "auto" (use the engine if it answers), "on" or "off".
	Docker     string
	DockerHost string
	Workers    int
	// Sandbox is the process sandbox: "auto" (every level the host
	// allows; the default) or "off". SandboxUIDBase is the first uid of
	// its slots (0: derived from the node id).
	Sandbox        string
	SandboxUIDBase int
	// ProcessSpares is how many process functions the node may start
	// ahead of their invocations, for tasks called often (0: none).
	ProcessSpares int

	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	QueueTTL       time.Duration
	StopGrace      time.Duration
	MaxQueued      int64
	Retention      time.Duration
	AckWait        time.Duration
	ShutdownGrace  time.Duration

	MaxMessageBytes int
	MaxInputBytes   int
	MaxOutputBytes  int64
	// MaxStoreBytes is the store's budget; 0 derives it.
	MaxStoreBytes int64

	// Samples is a directory of sample functions to register at start-up.
	Samples string
	// ArtifactRoots are the directories a task's local artifact may lie
	// in, besides the data dir's artifacts and Samples (package confine).
	ArtifactRoots []string
	// CallbackAllow are the host patterns a callback_url may name (package
	// callback); none allows loopback hosts only.
	CallbackAllow []string
	// Pprof serves Go's profiler under /debug/pprof/ on the HTTP side.
	Pprof bool
	// Security: tokens, TLS, the safe default (security.go).
	Security Security
	// NATSAuth: credentials and TLS of the connection to --nats-url.
	NATSAuth store.ClientAuth
	Logger   *slog.Logger
}

// Node is a running spearlet.
type Node struct {
	cfg      Config
	log      *slog.Logger
	store    *store.Store
	runtimes map[spearrt.Type]spearrt.Runtime
	mgr      *executor.Manager
	// ids makes the node's execution ids, and its process spares'.
	ids      *execution.IDs
	server   *server.Server
	listener net.Listener
	cancel   context.CancelFunc
	// lock holds the data dir for this node until close.
	lock *datadir.Lock
	// member is the node's entry in the node registry.
	member *membership.Member
}

// Start brings a node up and starts serving; Addr tells where.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := cfg.Security.check(cfg.Listen, cfg.NATSListen, cfg.NATSCluster.Listen); err != nil {
		return nil, err
	}
	// First of all: the data dir is this node's, or nothing else happens
	// (another node's store stays closed, its processes alive).
	lock, err := claimDataDir(&cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	n := &Node{cfg: cfg, log: log, lock: lock, ids: execution.NewIDs(time.Now)}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	// Then the port: a port in use is said before anything else starts.
	if n.listener, err = cfg.Security.listen(cfg.Listen); err != nil {
		return nil, err
	}
	bg, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	cfg.Security.warn(log, cfg.Listen, cfg.NATSListen, cfg.NATSCluster.Listen)
	keys, err := cfg.Security.openAuth(bg, log)
	if err != nil {
		return nil, err
	}

	n.store, err = store.Open(ctx, store.Options{
		DataDir: cfg.DataDir, URL: cfg.NATSURL, Sync: cfg.Sync, Listen: cfg.NATSListen,
		Retention: cfg.Retention, AckWait: cfg.AckWait, MaxStoreBytes: cfg.MaxStoreBytes, Logger: log,
		ClientAuth: cfg.NATSAuth, Replicas: cfg.Replicas, Cluster: cfg.NATSCluster, NodeID: cfg.NodeID,
	})
	if err != nil {
		return nil, err
	}
	m := n.newMetrics()
	reg, allow, err := n.openExecution(ctx, bg, m)
	if err != nil {
		return nil, err
	}
	mode := storeMode(cfg)
	if err := n.join(ctx); err != nil {
		return nil, err
	}
	svc := server.NewService(server.ServiceOptions{
		NodeID: cfg.NodeID, MaxInputBytes: cfg.MaxInputBytes, CallbackAllow: allow, Logger: log,
		SystemInfo: n.systemInfo(mode), Cluster: n.member, IDs: n.ids,
	}, n.mgr, reg, n.store)
	n.server = server.New(svc, server.Options{MaxMessageBytes: cfg.MaxMessageBytes, Metrics: m.Handler(), Pprof: cfg.Pprof,
		Auth: keys, MetricsPublic: cfg.Security.MetricsPublic, Console: console.Handler(), Logger: log})
	go func() {
		if err := n.server.Serve(n.listener); err != nil {
			log.Error("server stopped", "err", err)
		}
	}()
	if cfg.Samples != "" {
		registerSamples(ctx, reg, cfg.Samples, n.runtimes, log)
	}
	log.Info("spearlet serving", "addr", n.listener.Addr().String(), "data_dir", cfg.DataDir,
		"store", mode, "replicas", n.store.Replicas(), "runtimes", runtimeNames(n.runtimes), "workers", n.mgr.Workers(),
		"auth", keys != nil || cfg.Security.ClientCA != "", "tls", cfg.Security.TLSCert != "")
	return n, nil
}

// openExecution opens the runtimes, the registry and the executor, and
// starts the executor.
func (n *Node) openExecution(ctx, bg context.Context, m *metrics.Metrics) (*registry.Registry, callback.Allowlist, error) {
	cfg, log := n.cfg, n.log
	roots, err := artifactRoots(cfg)
	if err != nil {
		return nil, callback.Allowlist{}, err
	}
	if n.runtimes, err = n.openRuntimes(ctx, roots); err != nil {
		return nil, callback.Allowlist{}, err
	}
	allow, err := callback.ParseAllowlist(cfg.CallbackAllow)
	if err != nil {
		return nil, callback.Allowlist{}, fmt.Errorf("--callback-allow: %w", err)
	}
	log.Info("artifact roots: tasks may name local files in these only", "roots", strings.Join(roots.Dirs(), ","))
	reg := registry.New(n.store, n.runtimes, roots, time.Now, log)
	if err := reg.Watch(bg); err != nil {
		return nil, callback.Allowlist{}, err
	}
	n.mgr = executor.New(executor.Options{
		NodeID: cfg.NodeID, Workers: cfg.Workers, Shared: cfg.NATSURL != "" || cfg.NATSListen != "" || cfg.NATSCluster.Listen != "",
		DefaultTimeout: cfg.DefaultTimeout, MaxTimeout: cfg.MaxTimeout, MaxOutputBytes: cfg.MaxOutputBytes,
		QueueTTL: cfg.QueueTTL, StopGrace: cfg.StopGrace, MaxQueued: cfg.MaxQueued,
		CallbackBody: server.StatusJSON, CallbackAllow: allow, Logger: log, Hooks: m, Peers: n.clusterNodes,
	}, n.store, reg, n.runtimes)
	n.reconcileRuntimes(ctx)
	if err := n.mgr.Start(ctx); err != nil {
		return nil, callback.Allowlist{}, err
	}
	return reg, allow, nil
}

// storeMode says how the node keeps its store: embedded, in an embedded
// cluster, or on external NATS servers.
func storeMode(cfg Config) string {
	switch {
	case cfg.NATSURL != "":
		return "external"
	case cfg.NATSCluster.Listen != "":
		return "embedded-cluster"
	}
	return "embedded"
}

// newMetrics makes the node's metrics; the gauges read the executor
// (n.mgr, set before the node serves) when scraped.
func (n *Node) newMetrics() *metrics.Metrics {
	return metrics.New(metrics.Gauges{
		Running: func() float64 { r, _ := n.mgr.Counts(); return float64(r) },
		Waiting: func() float64 { _, w := n.mgr.Counts(); return float64(w) },
		QueuedByBand: func() []int64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			q, _ := n.mgr.QueueDepthByBand(ctx)
			return q
		},
		CachedArtifacts:  func() map[spearrt.Type]int { return cachedArtifacts(n.runtimes) },
		Spares:           func() map[spearrt.Type]spearrt.SpareCounts { return sparesOf(n.runtimes) },
		StoreBytes:       func() float64 { return float64(n.store.Storage().Used) },
		StoreBudgetBytes: func() float64 { return float64(n.store.Storage().Budget) },
		ClusterNodes:     func() float64 { return float64(len(n.clusterNodes())) },
		NodeSlots:        n.nodeSlots,
	})
}

// validate refuses settings that make no sense, naming the flag, before
// anything starts.
func (cfg *Config) validate() error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
	}
	switch {
	case cfg.MaxStoreBytes < 0:
		return invalid("--max-store-bytes %d: want a positive number of bytes, or 0 to derive it", cfg.MaxStoreBytes)
	case cfg.Workers < 0:
		return invalid("--workers %d: want a positive number of executions, or 0 for the default", cfg.Workers)
	}
	if cfg.Samples != "" {
		if fi, err := os.Stat(cfg.Samples); err != nil || !fi.IsDir() {
			return invalid("--samples %s: not a directory of sample functions", cfg.Samples)
		}
	}
	return nil
}

// Addr is the address the node serves on.
func (n *Node) Addr() string { return n.listener.Addr().String() }

// Shutdown stops accepting calls, lets running work finish within the
// grace period, leaves queued async work in the durable queue and closes
// everything.
func (n *Node) Shutdown(ctx context.Context) {
	grace := n.cfg.ShutdownGrace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	if running := len(n.mgr.Live()); running > 0 {
		n.log.Info(fmt.Sprintf("shutting down: waiting up to %v for %d running executions to finish; "+
			"signal again (Ctrl-C) to stop them now (async ones go back to the queue)", grace, running),
			"grace", grace, "running", running)
	} else {
		n.log.Info("shutting down", "grace", grace)
	}
	done := make(chan struct{})
	go func() { n.server.Shutdown(ctx); close(done) }()
	n.mgr.Shutdown(ctx)
	<-done
	n.close()
	n.log.Info("stopped")
}

// StopNow says a shutdown under way stops running work at once (the
// caller then ends Shutdown's context).
func (n *Node) StopNow() {
	n.log.Warn("stopping now: running executions are stopped; async ones go back to the queue and restart at the next start")
}

func (n *Node) close() {
	if n.server == nil && n.listener != nil { // it never served
		_ = n.listener.Close()
	}
	n.leave()
	if n.cancel != nil {
		n.cancel()
	}
	for _, rt := range n.runtimes {
		if c, ok := rt.(spearrt.Closer); ok {
			_ = c.Close(context.Background())
		}
	}
	if n.store != nil {
		n.store.Close()
	}
	// Last: nothing of this node uses the data dir any more.
	if err := n.lock.Release(); err != nil {
		n.log.Warn("releasing the data dir lock", "err", err)
	}
}

// artifactRoots are the directories a task's local artifact may lie in:
// the data dir's artifacts (uploaded artifacts' copies), the samples and
// those configured.
func artifactRoots(cfg Config) (confine.Roots, error) {
	own := filepath.Join(cfg.DataDir, "artifacts")
	if err := os.MkdirAll(own, 0o755); err != nil {
		return confine.Roots{}, fmt.Errorf("artifact dir: %w", err)
	}
	dirs := append([]string{own}, cfg.ArtifactRoots...)
	if st, err := os.Stat(cfg.Samples); cfg.Samples != "" && err == nil && st.IsDir() {
		dirs = append(dirs, cfg.Samples)
	}
	roots, err := confine.New(dirs)
	if err != nil {
		return confine.Roots{}, fmt.Errorf("--artifact-root: %w", err)
	}
	return roots, nil
}

// claimDataDir creates cfg.DataDir if needed and locks it for this node
// (see package datadir), then fills in cfg.NodeID from the data dir when it
// is not set.
func claimDataDir(cfg *Config) (*datadir.Lock, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("node: a data directory is required: %w", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	lock, err := datadir.Acquire(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if cfg.NodeID == "" {
		if cfg.NodeID, err = persistentID(filepath.Join(cfg.DataDir, "node-id")); err != nil {
			_ = lock.Release()
			return nil, err
		}
	}
	return lock, nil
}

// systemInfo is what GetHealth reports of the node: its store, runtimes,
// sync policy and process sandbox.
func (n *Node) systemInfo(storeMode string) map[string]string {
	info := map[string]string{"store": storeMode, "runtimes": runtimeNames(n.runtimes), "sync": syncName(n.cfg.Sync),
		"replicas": strconv.Itoa(n.store.Replicas())}
	if p, ok := n.runtimes[spearrt.TypeProcess].(*process.Runtime); ok {
		maps.Copy(info, p.SandboxReport().Info())
	}
	return info
}

// DefaultProcessSpares is the default of Config.ProcessSpares for
// `spear serve`.
const DefaultProcessSpares = process.DefaultSpares

// spares is process.Options.Spares for --process-spares n.
func spares(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

func (n *Node) openRuntimes(ctx context.Context, roots confine.Roots) (map[spearrt.Type]spearrt.Runtime, error) {
	mode, err := sandbox.ParseMode(n.cfg.Sandbox)
	if err != nil {
		return nil, fmt.Errorf("node: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	rts := map[spearrt.Type]spearrt.Runtime{
		spearrt.TypeProcess: process.New(process.Options{
			Logger: n.log, NodeID: n.cfg.NodeID, Sandbox: mode,
			WorkRoot: filepath.Join(n.cfg.DataDir, "work"), UIDBase: n.cfg.SandboxUIDBase,
			ReadRoots: roots.Dirs(), Spares: spares(n.cfg.ProcessSpares),
			IDs: n.ids,
		}),
	}
	w, err := wasm.New(ctx, wasm.Options{
		CacheDir:   filepath.Join(n.cfg.DataDir, "wasm-cache"),
		ScratchDir: filepath.Join(n.cfg.DataDir, "wasm-scratch"),
		Logger:     n.log,
	})
	if err != nil {
		return nil, err
	}
	rts[spearrt.TypeWasm] = w
	switch n.cfg.Docker {
	case "off":
	case "", "auto", "on":
		d, err := docker.New(ctx, docker.Options{
			Host: n.cfg.DockerHost, NodeID: n.cfg.NodeID, Logger: n.log,
			// memory_used_bytes of containers: sampled while they run.
			MemorySampleInterval: 100 * time.Millisecond,
		})
		if err != nil {
			return nil, err
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = d.Ping(pctx)
		cancel()
		if err != nil {
			_ = d.Close(ctx)
			if n.cfg.Docker == "on" {
				return nil, fmt.Errorf("docker runtime: %w", err)
			}
			n.log.Info("no Docker engine answers; the docker runtime is off", "err", err)
			break
		}
		rts[spearrt.TypeDocker] = d
	default:
		return nil, fmt.Errorf("docker %q: want auto, on or off", n.cfg.Docker)
	}
	return rts, nil
}

// reconcileRuntimes has every runtime that can clean up after an earlier
// run of this node (processes, containers left by a node that died) do so:
// those executions will run again from the queue. Nothing of this node is
// live yet.
func (n *Node) reconcileRuntimes(ctx context.Context) {
	for _, t := range runtimeTypes() {
		rc, ok := n.runtimes[t].(spearrt.Reconciler)
		if !ok {
			continue
		}
		if cleaned, err := rc.Reconcile(ctx); err != nil {
			n.log.Warn("reconciling what an earlier run of this node left", "runtime", t, "cleaned", cleaned, "err", err)
		} else if cleaned > 0 {
			n.log.Info("cleaned up what an earlier run of this node left", "runtime", t, "count", cleaned)
		}
	}
}

// runtimeTypes returns the runtime types in the order the node reports
// them.
func runtimeTypes() []spearrt.Type {
	return []spearrt.Type{spearrt.TypeProcess, spearrt.TypeWasm, spearrt.TypeDocker}
}

// cachedArtifacts counts the artifacts held by the runtimes that cache them.
func cachedArtifacts(rts map[spearrt.Type]spearrt.Runtime) map[spearrt.Type]int {
	out := map[spearrt.Type]int{}
	for t, rt := range rts {
		if c, ok := rt.(spearrt.CacheReporter); ok {
			out[t] = c.CachedArtifacts()
		}
	}
	return out
}

// sparesOf reports the spares of the runtimes that start functions ahead.
func sparesOf(rts map[spearrt.Type]spearrt.Runtime) map[spearrt.Type]spearrt.SpareCounts {
	out := map[spearrt.Type]spearrt.SpareCounts{}
	for t, rt := range rts {
		if p, ok := rt.(spearrt.Prestarter); ok {
			out[t] = p.Spares()
		}
	}
	return out
}

func runtimeNames(rts map[spearrt.Type]spearrt.Runtime) string {
	var names []string
	for _, t := range runtimeTypes() {
		if rts[t] != nil {
			names = append(names, string(t))
		}
	}
	return strings.Join(names, ",")
}

func syncName(p store.SyncPolicy) string {
	if p == store.SyncAlways {
		return "always"
	}
	return "interval"
}

// persistentID reads the node id kept in path, creating one on first start.
func persistentID(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	host, _ := os.Hostname()
	id := "node-" + hex.EncodeToString(b[:])
	if host != "" {
		id = strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
				return r
			}
			return '-'
		}, host) + "-" + hex.EncodeToString(b[:3])
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("node id: %w", err)
	}
	return id, nil
}

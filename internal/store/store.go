// Package store keeps Spear's durable state in NATS JetStream: tasks and
// execution records in KV buckets, the async work queue in a work-queue
// stream, and uploaded artifacts in an object store.
//
// By default it embeds nats-server in-process with its data under the node's
// data directory; given a URL it uses an external NATS cluster instead, so
// that many nodes share the same buckets and queue.
package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
)

// SyncPolicy says when the embedded JetStream server flushes writes to disk.
type SyncPolicy int

// Sync policies. The zero value is SyncInterval.
const (
	// SyncInterval acknowledges a write once it is in the server's file
	// (the OS page cache) and fsyncs periodically: an accepted execution
	// survives a crash of the node process, not a power cut of the machine.
	SyncInterval SyncPolicy = iota
	// SyncAlways fsyncs every write before acknowledging it: it survives a
	// power cut too, at roughly 15x the acceptance latency.
	SyncAlways
)

// ParseSyncPolicy parses "interval" or "always".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	switch s {
	case "", "interval":
		return SyncInterval, nil
	case "always":
		return SyncAlways, nil
	}
	return 0, fmt.Errorf("sync policy %q: want interval or always: %w", s, errdefs.ErrInvalidArgument)
}

// Names of the JetStream assets Spear uses.
const (
	BucketTasks      = "spear_tasks"
	BucketExecutions = "spear_executions"
	BucketExecIndex  = "spear_exec_index"
	BucketTaskStats  = "spear_task_stats"
	BucketArtifacts  = "spear_artifacts"
	StreamQueue      = "SPEAR_QUEUE"
	// ConsumerWorkers prefixes the durable consumers of the queue, one per
	// runtime and priority band: spear_workers_process_p0 (lowest) ..
	// spear_workers_docker_p4.
	ConsumerWorkers  = "spear_workers"
	queueSubjectBase = "spear.queue."
	// CancelSubjectBase prefixes the core NATS subjects on which a node
	// owning a running execution answers cancel requests.
	CancelSubjectBase = "spear.cancel."
)

// Options configures Open.
type Options struct {
	// DataDir holds the embedded server's files and materialised artifacts.
	DataDir string
	// URL of an external NATS server; empty embeds one.
	URL string
	// Sync is the embedded server's disk sync policy.
	Sync SyncPolicy
	// Listen, when set, makes the embedded server accept NATS clients (other
	// nodes, tools) on this host:port. Empty: in-process connections only.
	Listen string
	// Retention is how long execution records are kept.
	Retention time.Duration
	// AckWait is how long a dequeued execution may go without a progress
	// signal before JetStream hands it to another worker (after a crash).
	AckWait time.Duration
	// Replicas: copies JetStream keeps of every stream and bucket; 0 is
	// auto (those of the existing streams, else 3 on a cluster of at least
	// 3 servers, else 1). More than 1 needs a JetStream cluster.
	Replicas int
	// Cluster makes the embedded server one of a cluster of nodes'
	// embedded servers (cluster.go); NodeID names the server in it.
	Cluster Cluster
	NodeID  string
	// ReadyTimeout bounds the wait for JetStream at start-up, and for the
	// streams to be provisioned (0: 30 s; 2 min in an embedded cluster).
	ReadyTimeout time.Duration
	// MaxPayload bounds one message (queued input, a record) in the embedded
	// server. With an external server, the server's own limit is read at
	// connection and used instead.
	MaxPayload int32
	// MaxStoreBytes is the store's budget (see budget.go); 0 derives it.
	MaxStoreBytes int64
	// OpTimeout bounds each request to JetStream on a call's path (a read,
	// a write, a publish's acknowledgement), so that a call fails fast
	// with CLUSTER_UNAVAILABLE when the cluster has no quorum (see
	// quorum.go); 0: DefaultOpTimeout. A caller's shorter deadline wins.
	OpTimeout time.Duration
	// ClientAuth: credentials and TLS for the external server at URL.
	ClientAuth ClientAuth
	// LeaseTTL is how long a run lease lives without renewal (leases.go;
	// 0: DefaultLeaseTTL).
	LeaseTTL time.Duration
	Logger   *slog.Logger
}

// core is what every part of the store shares: the connection, the
// JetStream assets, the options, the byte sizes and the usage against the
// budget.
type core struct {
	opts      Options
	log       *slog.Logger
	srv       *server.Server // nil with an external NATS
	nc        *nats.Conn
	js        jetstream.JetStream
	tasks     jetstream.KeyValue
	execs     jetstream.KeyValue
	index     jetstream.KeyValue
	stats     jetstream.KeyValue
	nodes     jetstream.KeyValue
	slots     jetstream.KeyValue // run leases (leases.go)
	leaseTTL  time.Duration
	artifacts jetstream.ObjectStore
	inputs    jetstream.ObjectStore
	queue     jetstream.Stream
	chunks    jetstream.Stream
	// sources are the queue's consumers this node takes work from (see
	// sources.go), once the executor opened them.
	sources atomic.Pointer[[]*Source]
	// callbacks consumes the callback outbox (see callbacks.go).
	callbacks jetstream.Consumer
	// sizes are derived from the server's max payload (see sizes.go).
	sizes Sizes
	// usage is the store's size against its budget (see budget.go).
	usage usage
	// quorum is what the writes say of the cluster's quorum (quorum.go).
	quorum *quorum
	// unindexed are the executions whose index entry indexSoon is still
	// writing, by id (the value is the task's id).
	unindexed sync.Map
	// wantReplicas is Options.Replicas as given (0: auto); resolved says
	// why opts.Replicas is what it is (cluster.go).
	wantReplicas int
	resolved     string
}

// setup is the store's start-up: connecting, waiting for JetStream and
// choosing the replicas (cluster.go); a provisioner then creates the
// buckets and streams.
type setup struct{ *core }

// provisioner creates (or updates) the buckets and streams, each part in
// its own provision function, with the replicas setup chose (ensure.go).
type provisioner struct{ *core }

// Store is Spear's durable state, in parts with one job each, over one
// connection: execution records, tasks, the work queue, output chunks,
// stored inputs, uploaded artifacts and the callback outbox. The Store
// itself owns the connection, the budget and the reclaiming of space.
type Store struct {
	*core
	Records   *Records
	Tasks     *Tasks
	Queue     *Queue
	Workers   *Workers
	Outputs   *Outputs
	Inputs    *Inputs
	Artifacts *Artifacts
	Callbacks *Callbacks
	Control   *Control
	Nodes     *Nodes
	Leases    *Leases

	stopMeasure context.CancelFunc
}

// Records are executions' records, with a per-task index (records.go).
type Records struct{ *core }

// Tasks are registered tasks and their measured stats (tasks.go).
type Tasks struct{ *core }

// Queue is the durable work queue of async executions (queue.go).
type Queue struct {
	*core
	inputs *Inputs // where inputs too large for a message go
}

// Outputs are executions' output chunks (chunks.go).
type Outputs struct{ *core }

// Inputs are stored inputs: async inputs too large for a queue message,
// and uploaded artifacts used as input (inputs.go).
type Inputs struct{ *core }

// Artifacts are uploaded artifacts, by content digest (artifacts.go).
type Artifacts struct{ *core }

// Callbacks is the durable outbox of completion callbacks (callbacks.go).
type Callbacks struct{ *core }

func newStore(opts Options) *Store {
	c := &core{opts: opts, log: opts.Logger, wantReplicas: opts.Replicas, quorum: &quorum{log: opts.Logger, now: time.Now}}
	c.usage.limit = opts.MaxStoreBytes
	inputs := &Inputs{c}
	return &Store{core: c, Records: &Records{c}, Tasks: &Tasks{c}, Queue: &Queue{core: c, inputs: inputs}, Workers: &Workers{c},
		Outputs: &Outputs{c}, Inputs: inputs, Artifacts: &Artifacts{c}, Callbacks: &Callbacks{c}, Control: &Control{c}, Nodes: &Nodes{c},
		Leases: &Leases{core: c, watches: map[string]*leaseWatch{}}}
}

// Open starts (or connects to) NATS and creates the buckets, the queue
// stream and its consumer if they do not exist.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Retention <= 0 {
		opts.Retention = 24 * time.Hour
	}
	if opts.AckWait <= 0 {
		opts.AckWait = 30 * time.Second
	}
	if opts.Replicas < 0 {
		return nil, fmt.Errorf("--replicas %d: want 1 or more copies, or 0 for auto: %w", opts.Replicas, errdefs.ErrInvalidArgument)
	}
	if err := opts.Cluster.validate(opts.URL != ""); err != nil {
		return nil, err
	}
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = 8 << 20
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = DefaultOpTimeout
	}
	s := newStore(opts)
	up := &setup{s.core}
	if err := up.connect(); err != nil {
		s.Close()
		return nil, err
	}
	if err := up.startUp(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if s.usage.limit == 0 && s.srv == nil {
		s.usage.limit = s.accountBudget(ctx)
	}
	mctx, cancel := context.WithCancel(context.Background())
	s.stopMeasure = cancel
	// Copies can be behind: reads are refused while writes fail.
	s.quorum.start(mctx, s.opts.Replicas > 1, s.probe)
	go s.measureUsage(mctx, time.Second)
	go s.reclaimLoop(mctx, 2*time.Second)
	return s, nil
}

func (s *setup) connect() error {
	connOpts := []nats.Option{nats.Name("spear"), nats.MaxReconnects(-1)}
	authOpts, err := s.opts.ClientAuth.options(s.opts.URL)
	if err != nil {
		return err
	}
	if s.opts.URL != "" {
		connOpts = append(connOpts, authOpts...)
		nc, err := nats.Connect(s.opts.URL, connOpts...)
		if err != nil {
			// No server of the list answered: fail now (once connected,
			// the connection reconnects for ever).
			return fmt.Errorf("no NATS server answers at %s (--nats-url): %w: %w", s.where(), errdefs.ErrUnavailable, err)
		}
		s.nc = nc
	} else {
		dir := filepath.Join(s.opts.DataDir, "jetstream")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		if s.usage.limit == 0 {
			b, err := embeddedBudget(dir)
			if err != nil {
				return err
			}
			s.usage.limit = b
		}
		so := &server.Options{
			ServerName:         "spear-embedded",
			JetStream:          true,
			StoreDir:           dir,
			NoSigs:             true,
			MaxPayload:         s.opts.MaxPayload,
			SyncAlways:         s.opts.Sync == SyncAlways,
			DontListen:         s.opts.Listen == "",
			NoLog:              true,
			MaxPending:         max(64<<20, int64(s.opts.MaxPayload)*4),
			JetStreamMaxMemory: 256 << 20,
			JetStreamMaxStore:  s.usage.limit,
		}
		if s.opts.Listen != "" {
			host, port, err := splitHostPort(s.opts.Listen)
			if err != nil {
				return err
			}
			so.Host, so.Port = host, port
		}
		if err := s.opts.Cluster.configure(so, s.opts.NodeID); err != nil {
			return err
		}
		srv, err := server.NewServer(so)
		if err != nil {
			return fmt.Errorf("embedded NATS: %w", err)
		}
		srv.Start()
		if !srv.ReadyForConnections(30 * time.Second) {
			srv.Shutdown()
			return fmt.Errorf("embedded NATS did not start (is %s free?): %w", cmp.Or(s.opts.Cluster.Listen, s.opts.Listen, "its port"), errdefs.ErrUnavailable)
		}
		s.srv = srv
		nc, err := nats.Connect("", append(connOpts, nats.InProcessServer(srv))...)
		if err != nil {
			return fmt.Errorf("connect to embedded NATS: %w", err)
		}
		s.nc = nc
	}
	// A publish whose acknowledgement never comes (sent while a stream of
	// a cluster elects a leader) fails after requestTimeout instead of
	// holding its caller until the caller's own deadline.
	js, err := jetstream.New(s.nc, jetstream.WithPublishAsyncTimeout(requestTimeout))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	s.js = js
	s.sizes = sizesFor(s.nc.MaxPayload())
	s.log.Debug("message sizes", "max_payload", s.sizes.Payload, "inline", s.sizes.Inline, "block", s.sizes.Block)
	return nil
}

func (s *provisioner) provision(ctx context.Context) error {
	var err error
	kv := func(name string, ttl time.Duration) jetstream.KeyValue {
		if err != nil {
			return nil
		}
		var b jetstream.KeyValue
		b, err = s.ensureKV(ctx, jetstream.KeyValueConfig{
			Bucket:   name,
			History:  1,
			TTL:      ttl,
			Storage:  jetstream.FileStorage,
			Replicas: s.opts.Replicas,
		})
		if err != nil {
			err = fmt.Errorf("bucket %s: %w", name, err)
			return nil
		}
		return boundKV{b, s.core}
	}
	s.tasks = kv(BucketTasks, 0)
	s.execs = kv(BucketExecutions, s.opts.Retention)
	s.index = kv(BucketExecIndex, s.opts.Retention)
	s.stats = kv(BucketTaskStats, 0)
	if err != nil {
		return err
	}
	artifacts, err := s.ensureObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:   BucketArtifacts,
		Storage:  jetstream.FileStorage,
		Replicas: s.opts.Replicas,
	})
	if err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	s.artifacts = boundObjects{artifacts, s.core}
	if err := s.provisionInputs(ctx); err != nil {
		return err
	}
	s.queue, err = s.ensureStream(ctx, jetstream.StreamConfig{
		Name:       StreamQueue,
		Subjects:   []string{queueSubjectBase + ">"},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   s.opts.Replicas,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("queue stream: %w", err)
	}
	for _, provision := range []func(context.Context) error{s.provisionChunks, s.provisionCallbacks, s.provisionNodes, s.provisionSlots} {
		if err := provision(ctx); err != nil {
			return err
		}
	}
	// A work-queue stream allows no overlapping consumers: drop the single
	// consumer of earlier versions.
	if err := s.queue.DeleteConsumer(ctx, ConsumerWorkers); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("queue consumer: %w", err)
	}
	return nil
}

// Embedded reports whether the store runs its own NATS server.
func (s *Store) Embedded() bool { return s.srv != nil }

// Close drains the connection and stops the embedded server.
func (s *Store) Close() {
	if s.stopMeasure != nil {
		s.stopMeasure()
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
}

// StorageBytes is what JetStream holds for Spear, in bytes.
func (s *core) StorageBytes(ctx context.Context) (int64, error) {
	var total int64
	for _, name := range []string{StreamQueue, StreamChunks, StreamCallbacks, "KV_" + BucketTasks, "KV_" + BucketExecutions,
		"KV_" + BucketExecIndex, "KV_" + BucketTaskStats, "OBJ_" + BucketArtifacts, "OBJ_" + BucketInputs} {
		st, err := s.js.Stream(ctx, name)
		if err != nil {
			return 0, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return 0, err
		}
		total += int64(info.State.Bytes)
	}
	return total, nil
}

// unavailable wraps a failed store operation: CLUSTER_UNAVAILABLE when
// JetStream has no quorum (see quorum.go), STORAGE_FULL when the server
// refused it for lack of space, else the Unavailable class.
func unavailable(what string, err error) error {
	switch {
	case errdefs.ClusterUnavailable.Is(err):
		return fmt.Errorf("%s: %w", what, err)
	case noQuorum(err):
		return errdefs.ClusterUnavailable.New("%s: no JetStream quorum: %v", what, err)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", what, err)
	}
	if noSpace(err) {
		return storageFull("%s: the store is out of space (%v)", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, errdefs.ErrUnavailable, err)
}

// unavailable is the package function, and notes a write the server
// refused for lack of space in the store's usage.
func (s *core) unavailable(what string, err error) error {
	if noQuorum(err) {
		s.quorum.failed(err)
	}
	e := unavailable(what, err)
	s.note(e)
	return e
}

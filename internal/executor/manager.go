// Package executor runs executions: a bounded pool of run slots shared by
// sync, stream and async work, the async dispatcher that takes durable work
// from the JetStream queue, cancellation, deadlines, retries and the live
// view of what runs on this node.
package executor

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spear-go/spear/internal/callback"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/registry"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
)

// Options configures a Manager.
type Options struct {
	NodeID string
	// Shared says other nodes may use the same store: cancel requests for
	// executions not live here are then asked of them.
	Shared bool
	// Workers is the number of executions that run at once.
	Workers int
	// DefaultTimeout bounds an execution that names no timeout;
	// MaxTimeout caps any timeout.
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	// QueueTTL bounds the time an execution may wait to start.
	QueueTTL time.Duration
	// StopGrace is how long a cancelled function (without force) may take
	// to exit after a gentle signal.
	StopGrace time.Duration
	// MaxQueued bounds the async executions waiting in the queue, for all
	// tasks (0: no bound); beyond it invocations get QUEUE_FULL.
	MaxQueued int64
	// CallbackBody renders a terminal record as a callback's body.
	CallbackBody func(*execution.Record) []byte
	// CallbackAllow are the hosts callbacks may be sent to; the zero
	// Allowlist allows loopback hosts only.
	CallbackAllow callback.Allowlist
	// MaxOutputBytes cuts a function's output; the execution then fails
	// with OUTPUT_TOO_LARGE.
	MaxOutputBytes int64
	// MaxLogBytes is how much of standard error is kept.
	MaxLogBytes int
	// ClaimAfter is how long a fresh async execution's first attempt runs
	// before its claim is written (0: claimAfter; see lateclaim.go).
	ClaimAfter time.Duration
	// Now is the clock.
	Now    func() time.Time
	Logger *slog.Logger
	// Hooks observe executions (metrics); may be nil.
	Hooks Hooks
	// Peers returns the live nodes as the node registry last saw them,
	// with their runtimes and free slots (nil: a node alone); sync and
	// stream calls this node cannot run now are handed on to them.
	Peers func() []store.NodeEntry
}

// Hooks observe what the manager does.
type Hooks interface {
	// Finished is called once per terminal execution.
	Finished(r *execution.Record, runtime spearrt.Type, queueWait time.Duration)
	// Retried is called when a failed attempt is queued again.
	Retried(r *execution.Record)
	// CallbackDelivered is called once per completion callback, with its
	// final state (delivered or failed).
	CallbackDelivered(state string)
}

// Errors the run context may end with, telling how the run was stopped.
var (
	errTimeout        = errors.New("execution timeout")
	errCancelled      = errors.New("cancelled")
	errOutputTooLarge = errors.New("output too large")
	errShutdown       = errors.New("node shutting down")
	errQueueTimeout   = errors.New("queue timeout")
	errQueueFull      = errors.New("queue full")
)

// Manager runs executions. Its parts each have one job: sync and stream
// runs (Runs), async acceptance (Async), the dispatcher that takes work
// from the queue, the engine that runs one execution, the callback outbox,
// status and output views (Views), cancellation (Cancels) and the table of
// what is live on this node. They share the node's state in core.
type Manager struct {
	*core
	Runs    *SyncRuns
	Async   *Async
	Views   *Views
	Cancels *Cancels
	Graphs  *Graphs
}

// SyncRuns runs sync and stream executions on the caller's goroutine.
type SyncRuns struct{ *core }

// Async accepts async executions into the durable queue, and requeues
// dead-lettered ones.
type Async struct{ *core }

// dispatcher takes async work from the queue while this node has room, runs
// it and settles it: final record, retry or dead letter.
type dispatcher struct{ *core }

// claims marks the async executions this node runs as its own in the
// store, and fences their writes: the claim before a run (or late, while
// it runs: lateclaim.go), the check that it still holds, and the final
// writes made under it.
type claims struct{ *core }

// engine runs one execution: output, input, deadline, outcome.
type engine struct{ *core }

// outbox delivers completion callbacks through the durable outbox.
type outbox struct{ *core }

// Views answer what an execution is and was: records, waits, watches and
// output attachments.
type Views struct{ *core }

// forwarder hands the sync and stream calls this node cannot run now on
// to another node: straight to a peer (handoff.go), else through the
// queue (forward.go).
type forwarder struct{ *core }

// offers runs the calls other nodes hand to this one (handon.go).
type offers struct{ *core }

// Cancels stops executions, here or on the node that runs them.
type Cancels struct{ *core }

// liveTable is what is live on this node: running, waiting for a slot, or
// finished with its record not yet written.
type liveTable struct{ *core }

// runner is the engine as the other parts use it: it runs one execution
// and records its outcome. Tests give the dispatcher and SyncRuns a fake.
type runner interface {
	runtime(t spearrt.Type) (spearrt.Runtime, error)
	execute(ctx context.Context, l *live, rt spearrt.Runtime, art spearrt.Artifact, spec *execution.Spec, limits task.Limits, onChunk func(Chunk))
	classify(l *live, ctx context.Context, err error)
	finish(l *live, queueWait time.Duration)
	runtimeOf(taskID string) spearrt.Type
}

// notifier is the callback outbox as the other parts use it.
type notifier interface {
	notify(r *execution.Record)
	deliverCallbacks(ctx context.Context)
}

// deliverer posts one completion callback (callback.Deliverer).
type deliverer interface {
	Deliver(ctx context.Context, target, executionID string, body []byte) callback.Outcome
}

// core is the state the parts share, and the parts themselves.
type core struct {
	opts     Options
	log      *slog.Logger
	store    *store.Store
	registry *registry.Registry
	runtimes map[spearrt.Type]spearrt.Runtime
	slots    *slots
	stats    *stats
	persist  *persister

	callbacks     deliverer
	callbackSlots chan struct{}

	mu   sync.Mutex
	live map[string]*live
	// cancelled are executions a cancel found not live here (see
	// cancelLocal), by id: one that becomes live a moment later (taken
	// from the queue just then) starts cancelled rather than waiting for
	// a slot it would only give up.
	cancelled map[string]cancelMark
	// asyncInFlight counts deliveries taken from the queue and not yet
	// finished.
	asyncInFlight int
	// reserved counts deliveries taken that wait for a slot: the
	// dispatcher takes no more than the free slots less these.
	reserved atomic.Int32
	draining bool
	// line counts the executions waiting in the queue, for estimates and
	// the node's queue bound (estimate.go).
	line queueLine
	// probe is the queue depth health reports (RecentQueueDepth).
	probe queueProbe

	baseCtx    context.Context
	baseCancel context.CancelCauseFunc
	wg         sync.WaitGroup // async runs and background loops
	// syncRuns counts sync and stream runs in progress, so that Shutdown
	// waits for their final records before its last persister flush.
	syncRuns sync.WaitGroup
	// stopCancels stops answering other nodes: cancel requests and
	// handed-on runs.
	stopCancels func()
	shared      bool
	// afterRead, in tests, runs between a worker's read of a record and its
	// claim.
	afterRead func()
	// afterEnqueue, in tests, runs between a keyed submission's queue
	// message and its record; an error stops the submission there (as a
	// crash would).
	afterEnqueue func() error
	started      time.Time
	// admission serializes the quota check and enqueue of async
	// submissions per task.
	admission taskLocks
	// renew renews a run's cluster-wide lease (nil: the store's Renew;
	// tests make it fail).
	renew func(context.Context, *store.Lease) error
	// attachStall bounds an attachment's wait for the rest of an output
	// stored whole (defaultAttachStall; tests shorten it).
	attachStall time.Duration

	runs       *SyncRuns
	fwd        *forwarder
	offers     *offers
	async      *Async
	dispatcher *dispatcher
	claims     *claims
	engine     runner
	outbox     notifier
	views      *Views
	cancels    *Cancels
	lives      *liveTable
	graphs     *Graphs
	inputs     *stepInputs
}

// live is an execution that runs, or waits for a slot, on this node.
type live struct {
	mu  sync.Mutex
	rec *execution.Record
	// claimed is the revision of the stored record of an async execution
	// this node claimed (0: not claimed), or of a handed-on run's RUNNING
	// record; see claims.putClaimed and offers.storeFinal.
	claimed uint64
	// late is the deferred claim of a fresh async execution's first
	// attempt (lateclaim.go); nil for any other run.
	late *lateClaim
	// handedOn says another node handed this sync or stream run on to
	// this one: its records are written fenced (handon.go).
	handedOn bool
	cancel   context.CancelCauseFunc // nil until the run context exists
	// cancelCause is recorded when a cancel arrives before the run starts.
	cancelCause error
	force       bool
	// inputErr is why its input stopped short (a graph step's parent
	// failed or runs again): such a run never completes, however it ends.
	inputErr error
	// preCancelled says a cancel came just before it became live (see
	// liveTable.markCancelled): that cancel is what ends it.
	preCancelled bool
	output       *outputSink
	logs         *logSink
	// runtime is the type of runtime that runs it, once it started.
	runtime spearrt.Type
	// done is closed when the execution reaches a terminal state (or goes
	// back to the queue).
	done chan struct{}
}

func (l *live) snapshot() *execution.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := *l.rec
	if l.output != nil && r.Status == execution.StatusRunning {
		r.Output = l.output.bytes()
	}
	if l.logs != nil && !r.Status.Terminal() {
		r.Logs = l.logs.result()
	}
	return &r
}

// New returns a Manager. Call Start to begin taking async work.
func New(opts Options, st *store.Store, reg *registry.Registry, runtimes map[spearrt.Type]spearrt.Runtime) *Manager {
	if opts.Workers <= 0 {
		opts.Workers = max(4, 2*runtime.NumCPU())
	}
	if opts.DefaultTimeout <= 0 {
		opts.DefaultTimeout = 5 * time.Minute
	}
	if opts.MaxTimeout <= 0 {
		opts.MaxTimeout = time.Hour
	}
	if opts.QueueTTL <= 0 {
		opts.QueueTTL = time.Hour
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 5 * time.Second
	}
	if opts.MaxOutputBytes <= 0 {
		opts.MaxOutputBytes = 256 << 20
	}
	if opts.MaxLogBytes <= 0 {
		opts.MaxLogBytes = 64 << 10
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &core{
		opts: opts, log: opts.Logger, store: st, registry: reg, runtimes: runtimes,
		slots: newSlots(opts.Workers), live: map[string]*live{}, started: opts.Now(), shared: opts.Shared,
		attachStall: defaultAttachStall,
	}
	c.runs, c.async, c.dispatcher, c.engine = &SyncRuns{c}, &Async{c}, &dispatcher{c}, &engine{c}
	c.claims = &claims{c}
	c.outbox, c.views, c.cancels, c.lives = &outbox{c}, &Views{c}, &Cancels{c}, &liveTable{c}
	c.fwd, c.offers, c.graphs, c.inputs = &forwarder{c}, &offers{c}, &Graphs{core: c}, &stepInputs{c}
	c.stats = newStats(opts.Now)
	c.callbacks = callback.New(callback.Options{Allow: opts.CallbackAllow})
	c.callbackSlots = make(chan struct{}, maxCallbacks)
	c.persist = newPersister(st, opts.Logger, c.lives.forget)
	c.baseCtx, c.baseCancel = context.WithCancelCause(context.Background())
	return &Manager{core: c, Runs: c.runs, Async: c.async, Views: c.views, Cancels: c.cancels, Graphs: c.graphs}
}

// Start loads history, answers cancel requests from other nodes and starts
// the async dispatcher.
func (m *Manager) Start(ctx context.Context) error {
	all, err := m.store.Tasks.AllStats(ctx)
	if err != nil {
		return err
	}
	m.stats.load(all)
	stop, err := m.store.Control.ServeCancels(m.cancels.onCancelRequest)
	if err != nil {
		return err
	}
	if m.shared {
		stopRuns, err := m.offers.serve()
		if err != nil {
			stop()
			return err
		}
		m.stopCancels = func() { stopRuns(); stop() }
	} else {
		m.stopCancels = stop
	}
	sources, err := m.dispatcher.openSources(ctx)
	if err != nil {
		m.stopCancels()
		return err
	}
	m.wg.Add(4)
	go func() { defer m.wg.Done(); m.persist.run(m.baseCtx) }()
	go func() { defer m.wg.Done(); m.stats.flushLoop(m.baseCtx, m.store, m.log) }()
	go func() { defer m.wg.Done(); m.dispatcher.dispatch(m.baseCtx, sources) }()
	go func() { defer m.wg.Done(); m.outbox.deliverCallbacks(m.baseCtx) }()
	return nil
}

// Workers is the size of the run pool.
func (m *Manager) Workers() int { return m.opts.Workers }

// Shutdown stops taking async work, lets running executions finish until ctx
// ends, then stops the rest: async ones go back to the durable queue, sync
// and stream ones end FAILED with NODE_SHUTDOWN.
func (m *Manager) Shutdown(ctx context.Context) {
	m.mu.Lock()
	m.draining = true
	m.mu.Unlock()
	if m.stopCancels != nil {
		m.stopCancels()
	}
	done := make(chan struct{})
	go func() {
		for {
			m.mu.Lock()
			n := len(m.live)
			m.mu.Unlock()
			if n == 0 {
				close(done)
				return
			}
			select {
			case <-ctx.Done():
				close(done)
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	<-done
	m.baseCancel(errShutdown)
	m.mu.Lock()
	for _, l := range m.live {
		l.stop(errShutdown, true)
	}
	m.mu.Unlock()
	m.wg.Wait()
	// Sync and stream runs were stopped above: wait for them to hand their
	// final records to the persister, bounded, as a caller's stream may be
	// stuck.
	runsDone := make(chan struct{})
	go func() { m.syncRuns.Wait(); close(runsDone) }()
	select {
	case <-runsDone:
	case <-time.After(10 * time.Second):
		m.log.Warn("sync executions still stopping at shutdown; their records may be lost")
	}
	m.persist.flush(context.Background())
	m.stats.flush(context.Background(), m.store, m.log)
}

// Live returns a snapshot of the live executions' records.
func (m *Manager) Live() []*execution.Record { return m.lives.snapshots() }

// LiveOfTask counts the executions of a task running or waiting on this
// node.
func (m *Manager) LiveOfTask(taskID string) int { return m.lives.ofTask(taskID) }

// snapshots returns a snapshot of the live executions' records.
func (m *liveTable) snapshots() []*execution.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*execution.Record, 0, len(m.live))
	for _, l := range m.live {
		out = append(out, l.snapshot())
	}
	return out
}

// Counts returns how many executions run and wait for a slot on this node.
func (m *Manager) Counts() (running, waiting int) {
	free, waiting := m.slots.state()
	return m.opts.Workers - free, waiting
}

// Uptime is how long the manager has existed.
func (m *Manager) Uptime() time.Duration { return m.opts.Now().Sub(m.started) }

// TaskStats returns a task's execution count and last status.
func (m *Manager) TaskStats(taskID string) (count int64, last execution.Status) {
	return m.stats.task(taskID)
}

// Get returns the record of execution id: live from this node if it runs
// here, otherwise from the store (any of its copies: reading from the
// stream's leader would fail while a lost server's streams elect new
// leaders), or from the queue while no worker took it.
func (m *Views) Get(ctx context.Context, id string) (*execution.Record, error) {
	if err := execution.ValidateID(id); err != nil {
		return nil, err
	}
	m.mu.Lock()
	l := m.live[id]
	m.mu.Unlock()
	if l != nil {
		return l.snapshot(), nil
	}
	r, _, err := m.store.Records.Get(ctx, id)
	return r, err
}

func (m *liveTable) addLive(l *live) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addLiveLocked(l)
}

// addSyncLive is addLive for a sync or stream run, which Shutdown waits
// for: the caller must call m.syncRuns.Done once it handed the final record
// to the persister.
func (m *liveTable) addSyncLive(l *live) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.addLiveLocked(l); err != nil {
		return err
	}
	// Under m.mu with draining unset, so this Add happens before Shutdown's
	// Wait.
	m.syncRuns.Add(1)
	return nil
}

func (m *liveTable) addLiveLocked(l *live) error {
	if m.draining {
		return errdefs.NodeShuttingDown.New("the node is shutting down")
	}
	if _, ok := m.live[l.rec.ID]; ok {
		return errdefs.ExecutionExists.New("execution %q is already running", l.rec.ID)
	}
	if c, ok := m.cancelled[l.rec.ID]; ok && !c.taken {
		c.taken = true
		m.cancelled[l.rec.ID] = c
		l.cancelCause, l.preCancelled = c.cause, true
	}
	m.live[l.rec.ID] = l
	return nil
}

// markTaken reports whether the mark of a cancel of id was taken by the
// execution becoming live (it started cancelled).
func (m *liveTable) markTaken(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cancelled[id].taken
}

// cancelMark is a cancel that found its execution not live; taken once
// the execution became live, cancelled.
type cancelMark struct {
	cause error
	at    time.Time
	taken bool
}

// markCancelled notes a cancel of id, not live here; marks older than a
// minute go (the race they cover lasts milliseconds). Call with mu held.
func (m *liveTable) markCancelled(id string, cause error) {
	now := m.opts.Now()
	if m.cancelled == nil {
		m.cancelled = map[string]cancelMark{}
	}
	for k, c := range m.cancelled {
		if now.Sub(c.at) > time.Minute {
			delete(m.cancelled, k)
		}
	}
	if c, ok := m.cancelled[id]; ok && c.taken {
		return
	}
	m.cancelled[id] = cancelMark{cause: cause, at: now}
}

// forget drops a finished execution from the live table once its record is
// durable.
func (m *liveTable) forget(id string) {
	m.mu.Lock()
	delete(m.live, id)
	m.mu.Unlock()
}

// failInput records that the run's input stopped short, and stops it.
func (l *live) failInput(err error) {
	l.mu.Lock()
	if l.inputErr == nil {
		l.inputErr = err
	}
	l.mu.Unlock()
	l.stop(err, true)
}

// inputFailure is why the run's input stopped short, or nil.
func (l *live) inputFailure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inputErr
}

// stop cancels a live execution with cause.
func (l *live) stop(cause error, force bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cancelCause == nil {
		l.cancelCause = cause
		l.force = force
	}
	if l.cancel != nil {
		l.cancel(cause)
	}
}

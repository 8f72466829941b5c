package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/task"
)

// Chunk is one piece of a function's output, in order from Seq 0.
type Chunk struct {
	Seq  int64
	Data []byte
}

// Run runs spec now (sync and stream modes): it waits for a slot, runs the
// function and returns the final record. onChunk, if set, receives output as
// the function writes it, from the goroutine reading it. The caller's ctx
// bounds the wait and the run: when it ends the execution is stopped. An
// error means no execution was created (unknown task, bad input, full
// queue, node shutting down); every outcome of the function itself is in
// the record. With an idempotency key, an execution that already exists
// is the answer: Run waits for it and returns its record.
func (m *SyncRuns) Run(ctx context.Context, spec *execution.Spec, onChunk func(Chunk)) (*execution.Record, error) {
	t, art, rt, forward, err := m.resolve(ctx, spec.TaskID)
	if err != nil {
		return nil, err
	}
	if err := m.store.AdmitWork(); err != nil {
		return nil, err
	}
	if spec.Idempotent || spec.IDGiven {
		if rec, err := m.claimID(ctx, spec); rec != nil || err != nil {
			return rec, err
		}
	}
	if forward {
		return m.fwd.forward(ctx, spec, t, onChunk)
	}
	if release := reserveSpare(spec, art, rt, t.Limits); release != nil {
		defer release()
	}
	return m.runHere(ctx, spec, t, art, rt, onChunk, keeper{keep: m.keepLocal})
}

// keeper stores the records of a sync or stream run: keep stores the final
// one and then drops the run from the live table. A handed-on run's are
// written fenced (handon.go).
type keeper struct {
	handedOn bool
	keep     func(ctx context.Context, l *live)
}

// keepLocal hands a final record to the persister.
func (m *SyncRuns) keepLocal(ctx context.Context, l *live) { m.persist.add(ctx, l.final()) }

// runHere runs spec on this node, on the caller's goroutine.
func (m *SyncRuns) runHere(ctx context.Context, spec *execution.Spec, t *task.Task, art spearrt.Artifact, rt spearrt.Runtime, onChunk func(Chunk), k keeper) (*execution.Record, error) {
	l := &live{rec: execution.NewRecord(spec), done: make(chan struct{}), handedOn: k.handedOn}
	if err := m.lives.addSyncLive(l); err != nil {
		if spec.Idempotent && errdefs.ExecutionExists.Is(err) {
			return m.views.Wait(ctx, spec.ExecutionID)
		}
		return nil, err
	}
	defer m.syncRuns.Done()
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if !l.setCancel(cancel) {
		m.engine.finish(l, 0)
		m.outbox.notify(l.final())
		k.keep(ctx, l)
		return l.final(), nil
	}
	// Node shutdown stops sync work too, once the grace period is over.
	stopOnShutdown := context.AfterFunc(m.baseCtx, func() { cancel(context.Cause(m.baseCtx)) })
	defer stopOnShutdown()

	release, err := m.acquire(runCtx, l, spec, t)
	if err != nil {
		if errors.Is(err, errQueueFull) {
			// Refused, not run: no execution remains (an idempotency key
			// can be used again).
			l.mu.Lock()
			l.rec.Status, l.rec.ErrorCode = execution.StatusFailed, errdefs.QueueFull.String()
			l.mu.Unlock()
			close(l.done)
			m.lives.forget(spec.ExecutionID)
			if spec.Idempotent || spec.IDGiven {
				if derr := m.store.Records.Delete(context.WithoutCancel(ctx), spec.TaskID, spec.ExecutionID); derr != nil {
					m.log.Warn("deleting a refused execution's record", "execution", spec.ExecutionID, "err", derr)
				}
			}
			return nil, queueFull(t.ID, int64(t.Limits.MaxQueued))
		}
		m.engine.classify(l, runCtx, err)
		m.engine.finish(l, 0)
		m.outbox.notify(l.final())
		k.keep(ctx, l)
		return l.final(), nil
	}
	wait := m.opts.Now().Sub(spec.CreatedAt)
	shown := m.showRunning(l)
	m.engine.execute(runCtx, l, rt, art, spec, t.Limits, onChunk)
	release()
	shown()
	m.engine.finish(l, wait)
	rec := l.final()
	m.outbox.notify(rec)
	k.keep(ctx, l)
	return rec, nil
}

// showRunningAfter is how long a sync or stream execution runs before its
// RUNNING record is stored (see showRunning).
const showRunningAfter = 250 * time.Millisecond

// showRunning stores, when other nodes share the store, the RUNNING record
// of a sync or stream execution that is still running after
// showRunningAfter: with its node, so any node finds it by id (status,
// watch, attach, cancel). A shorter run writes only its final record. The
// returned func stops it, and waits for a write in flight, which must not
// land after the final record.
func (m *SyncRuns) showRunning(l *live) (stop func()) {
	if !m.shared {
		return func() {}
	}
	after := showRunningAfter
	if l.handedOn && l.rec.Mode == execution.ModeStream {
		after = 0 // attachable by id at once, from any node
	}
	done := make(chan struct{})
	timer := time.AfterFunc(after, func() {
		defer close(done)
		rec := l.snapshot()
		if rec.Status != execution.StatusRunning {
			return
		}
		rec.Output, rec.Logs = nil, nil
		ctx, cancel := context.WithTimeout(m.baseCtx, 2*time.Second)
		defer cancel()
		if err := m.storeRunning(ctx, l, rec); err != nil {
			m.log.Warn("storing a running sync execution's record; other nodes see it once it ends", "execution", rec.ID, "err", err)
		}
	})
	return func() {
		if !timer.Stop() {
			<-done
		}
	}
}

// storeRunning stores the RUNNING record of a sync run: a handed-on run's
// created only if none exists, its revision kept for the final write.
func (m *SyncRuns) storeRunning(ctx context.Context, l *live, rec *execution.Record) error {
	if !l.handedOn {
		_, err := m.store.Records.Put(ctx, rec)
		return err
	}
	rev, err := m.store.Records.Create(ctx, rec)
	if err == nil {
		l.mu.Lock()
		l.claimed = rev
		l.mu.Unlock()
	}
	return err
}

// resolve finds what runs a task here, or says the call is to be handed
// on to another node (forward; rt is then nil).
func (m *SyncRuns) resolve(ctx context.Context, taskID string) (*task.Task, spearrt.Artifact, spearrt.Runtime, bool, error) {
	t, art, err := m.registry.Artifact(ctx, taskID)
	if err != nil {
		t, err = m.elsewhere(ctx, taskID, err)
		return t, art, nil, err == nil, err
	}
	rt, err := m.engine.runtime(art.Type)
	if err != nil {
		return nil, art, nil, false, err
	}
	return t, art, rt, m.forwardTo(art.Type, true), nil
}

// claimID makes a sync or stream execution with a caller-given or keyed id
// exist exactly once: it returns nil once this caller owns the (new)
// execution; for an existing one, with an idempotency key its final
// record, else EXECUTION_EXISTS (ids are never reused).
func (m *SyncRuns) claimID(ctx context.Context, spec *execution.Spec) (*execution.Record, error) {
	if _, err := m.store.Records.Create(ctx, execution.NewRecord(spec)); err == nil {
		return nil, nil
	} else if !errors.Is(err, errdefs.ErrAlreadyExists) {
		return nil, err
	}
	if !spec.Idempotent {
		return nil, executionExists(spec.ExecutionID)
	}
	return m.views.Wait(ctx, spec.ExecutionID)
}

// acquire waits for a run slot, bounded by the queue TTL (and the caller's
// context): a wait that runs out is QUEUE_TIMEOUT, not EXECUTION_TIMEOUT.
// A task with max_concurrency takes a cluster-wide lease too when other
// nodes share the store (limits.go). release gives back what was taken.
// Async work is not refused by max_queued here: it was admitted when it
// was queued.
func (m *SyncRuns) acquire(ctx context.Context, l *live, spec *execution.Spec, t *task.Task) (release func(), err error) {
	c := claim{prio: spec.Priority, age: spec.CreatedAt.UnixNano(), task: t.ID, limit: int(t.Limits.MaxConcurrency)}
	if spec.Mode != execution.ModeAsync {
		c.maxQueued = int(t.Limits.MaxQueued)
	}
	leased := m.leased(t)
	release = func() { m.slots.release(t.ID) }
	if !leased && m.slots.tryAcquire(c) {
		return release, nil
	}
	ttl := m.opts.QueueTTL - m.opts.Now().Sub(spec.CreatedAt)
	qctx, cancel := context.WithTimeoutCause(ctx, max(ttl, 0), fmt.Errorf("%w: waited longer than the queue TTL of %v", errQueueTimeout, m.opts.QueueTTL))
	defer cancel()
	if leased {
		release, err = m.acquireLeased(qctx, l, spec, t, c)
	} else {
		err = m.slots.acquire(qctx, c)
	}
	if err == nil {
		return release, nil
	}
	if errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, errQueueTimeout) {
		return nil, fmt.Errorf("%w: the caller's deadline passed before a worker was free", errQueueTimeout)
	}
	return nil, err
}

func queueFull(taskID string, n int64) error {
	return errdefs.QueueFull.New("task %q already has %d executions waiting (its max_queued); try again later", taskID, n)
}

func (m *engine) runtime(t spearrt.Type) (spearrt.Runtime, error) {
	rt, ok := m.runtimes[t]
	if !ok {
		return nil, errdefs.RuntimeUnavailable.New("this node has no %s runtime", t)
	}
	return rt, nil
}

// setCancel installs the run's cancel function; it reports false when a
// cancel arrived before (the execution must not start).
func (l *live) setCancel(cancel context.CancelCauseFunc) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cancel = cancel
	if l.cancelCause != nil {
		cancel(l.cancelCause)
		l.rec.Status = execution.StatusCancelled
		l.rec.ErrorCode = errdefs.Cancelled.String()
		l.rec.ErrorMessage = l.cancelCause.Error()
		return false
	}
	return true
}

func (l *live) final() *execution.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec
}

// timeout is the run's deadline: the execution's own, or the task's
// default, or the node's; capped by the task's and the node's maximum.
func (m *engine) timeout(spec *execution.Spec, l task.Limits) time.Duration {
	d := m.opts.DefaultTimeout
	switch {
	case spec.TimeoutMs > 0:
		d = millis(spec.TimeoutMs)
	case l.DefaultTimeoutMs > 0:
		d = millis(l.DefaultTimeoutMs)
	}
	if l.MaxTimeoutMs > 0 {
		d = min(d, millis(l.MaxTimeoutMs))
	}
	if !spec.Deadline.IsZero() { // a graph's step
		d = min(d, spec.Deadline.Sub(m.opts.Now()))
	}
	return min(d, m.opts.MaxTimeout)
}

// millis converts milliseconds to a Duration, saturating instead of
// overflowing for absurd values.
func millis(ms int64) time.Duration {
	if ms > int64(math.MaxInt64/time.Millisecond) {
		return math.MaxInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// execute runs the function once and fills l's record with the outcome.
func (m *engine) execute(ctx context.Context, l *live, rt spearrt.Runtime, art spearrt.Artifact, spec *execution.Spec, limits task.Limits, onChunk func(Chunk)) {
	timeout := m.timeout(spec, limits)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, timeoutError(timeout))
	defer cancel()

	out := m.newOutputSink(ctx, l, spec, onChunk)
	logs := &logSink{now: m.opts.Now, limit: m.opts.MaxLogBytes}
	start, attempt := m.begin(l, out, logs, art.Type)
	in, closeInput, err := m.openInput(ctx, l, spec)
	if err != nil {
		out.finish(ctx)
		m.classify(l, ctx, err)
		m.recordAttempt(l)
		return
	}
	defer closeInput()
	inv := invocation(spec, art, limits, attempt)
	inv.Input, inv.Stdout, inv.Stderr = in, out, logs
	res, err := rt.Run(ctx, inv)
	end := m.opts.Now()
	sum := out.finish(context.WithoutCancel(ctx))
	m.recordRun(l, start, end, sum, logs, res, err)
	m.settle(ctx, l, out, sum, res, err, limits)
	m.recordAttempt(l)
}

// invocation returns the invocation of spec's attempt, without its input
// and streams.
func invocation(spec *execution.Spec, art spearrt.Artifact, limits task.Limits, attempt int32) *spearrt.Invocation {
	return &spearrt.Invocation{
		ExecutionID:      spec.ExecutionID,
		Artifact:         art,
		Function:         spec.Function,
		Env:              spec.Env,
		Attempt:          attempt,
		MemoryLimitBytes: limits.MemoryLimitBytes,
		PidsLimit:        limits.PidsLimit,
		HostNetwork:      limits.Network == task.NetworkHost,
	}
}

// reserveSpare gives spec, whose id nobody has seen yet, the id of a
// function its runtime started ahead for its first attempt (see
// spearrt.Prestarter). It returns what discards that function unless the
// run took it, or nil when there is none.
func reserveSpare(spec *execution.Spec, art spearrt.Artifact, rt spearrt.Runtime, limits task.Limits) func() {
	p, ok := rt.(spearrt.Prestarter)
	if !ok || !spec.IDUnseen {
		return nil
	}
	id, release, ok := p.Reserve(invocation(spec, art, limits, 1))
	if !ok {
		return nil
	}
	spec.ExecutionID = id
	return release
}

// begin marks the live execution running an attempt with these sinks and
// returns the attempt's start and number.
func (m *engine) begin(l *live, out *outputSink, logs *logSink, rt spearrt.Type) (time.Time, int32) {
	start := m.opts.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.output, l.logs, l.runtime = out, logs, rt
	l.rec.Status = execution.StatusRunning
	l.rec.StartedAt = start
	l.rec.Attempts++
	l.rec.Node = m.opts.NodeID
	l.rec.CompletedAt = time.Time{}
	l.rec.ErrorCode, l.rec.ErrorMessage = "", ""
	return start, l.rec.Attempts
}

// recordRun puts what a run measured and wrote on the record.
func (m *engine) recordRun(l *live, start, end time.Time, sum outputSummary, logs *logSink, res spearrt.Result, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rec
	r.CompletedAt = end
	r.DurationMs = end.Sub(start).Milliseconds()
	r.Output, r.OutputSize, r.OutputSHA256, r.OutputStored = sum.head, sum.size, sum.sha256, sum.stored
	if sum.stored {
		// The chunks hold it all: the record keeps a preview, so output is
		// stored once.
		r.Output = sum.head[:min(len(sum.head), storedPreview)]
	}
	r.Logs = logs.result()
	r.MemoryUsedBytes = res.MemoryUsedBytes
	r.StartupUs = res.Startup.Microseconds()
	r.Sandbox = res.Sandbox
	r.ExitCode = -1
	if err == nil {
		r.ExitCode = int32(res.ExitCode)
	}
}

// settle sets a run's outcome: its status and, unless it completed, why.
func (m *engine) settle(ctx context.Context, l *live, out *outputSink, sum outputSummary, res spearrt.Result, err error, limits task.Limits) {
	l.mu.Lock()
	partial, kept, logs := l.rec.OutputPartial(), len(l.rec.Output), l.rec.Logs
	l.mu.Unlock()
	switch {
	case res.PidsLimitHit && (err == nil && res.ExitCode != 0 || errors.Is(err, context.DeadlineExceeded)):
		// The function failed, or never ended, once refused a process:
		// that is why, more than its exit status or the clock.
		m.fail(l, errdefs.PidsLimit, "the function hit its process limit (pids): a fork or thread was refused", true)
	case out.overflowed():
		m.classify(l, ctx, fmt.Errorf("%w: more than %d bytes", errOutputTooLarge, m.opts.MaxOutputBytes))
	case l.inputFailure() != nil:
		// Its input stopped short (a graph step's parent failed or runs
		// again): whatever it did with part of it is not its result, even
		// when a cancel (its graph ended) stopped it first.
		m.classify(l, ctx, l.inputFailure())
	case err != nil:
		m.classify(l, ctx, err)
	case res.ExitCode == 0 && sum.storeErr != nil && partial:
		m.fail(l, errdefs.OutputNotStored, fmt.Sprintf("the function completed, but only the first %d of its %d output bytes could be kept: %v",
			kept, sum.size, sum.storeErr), false)
	case res.ExitCode == 0:
		l.mu.Lock()
		l.rec.Status = execution.StatusCompleted
		l.mu.Unlock()
	case limits.MemoryLimitBytes > 0 && (res.MemoryLimitHit || mentionsMemory(logs)):
		m.fail(l, errdefs.MemoryLimitExceeded, fmt.Sprintf("the function ran out of memory (limit %d bytes): exit status %d",
			limits.MemoryLimitBytes, res.ExitCode), true)
	default:
		m.fail(l, errdefs.FunctionFailed, fmt.Sprintf("exit status %d", res.ExitCode), true)
	}
}

// fail marks the run FAILED with code and msg, followed by the end of its
// logs when withLogs.
func (m *engine) fail(l *live, code errdefs.Code, msg string, withLogs bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rec
	if t := tail(r.Logs, 1024); withLogs && t != "" {
		msg += ": " + t
	}
	r.Status, r.ErrorCode, r.ErrorMessage = execution.StatusFailed, code.String(), msg
}

// storedPreview is how much of an output whose chunks are stored the
// record keeps too.
const storedPreview = 16 << 10

// recordAttempt adds the run that just ended to the record's history.
func (m *engine) recordAttempt(l *live) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rec
	r.History = append(r.History, execution.Attempt{
		N: r.Attempts, Status: r.Status, ErrorCode: r.ErrorCode, ErrorMessage: r.ErrorMessage,
		StartedAt: r.StartedAt, CompletedAt: r.CompletedAt, Node: r.Node,
	})
}

// newOutputSink makes the sink of one run's output. Async and stream
// output is stored from the first chunk, for clients that attach later or
// on another node; sync output only once it outgrows what a record keeps.
func (m *engine) newOutputSink(ctx context.Context, l *live, spec *execution.Spec, onChunk func(Chunk)) *outputSink {
	// A stream's chunks are stored from the first (it is attached to
	// while it runs); an async execution's once it ran for storeAfter or
	// outgrew its record: a short one with a small output keeps it in its
	// record only, two store writes fewer.
	storeAll := spec.Mode == execution.ModeStream || spec.LiveOutput
	storeAfter := time.Duration(0)
	if spec.Mode == execution.ModeAsync {
		storeAfter = showRunningAfter
	}
	if l.final().Attempts > 0 {
		// A retry or a rerun after a crash: the earlier run's chunks go.
		if err := m.store.Outputs.Delete(ctx, spec.ExecutionID); err != nil {
			m.log.Warn("dropping an earlier attempt's output", "execution", spec.ExecutionID, "err", err)
		}
	}
	sizes := m.store.Sizes()
	return newOutputSink(sinkConfig{
		ctx: context.WithoutCancel(ctx), headLimit: sizes.Inline, block: sizes.Block,
		limit: m.opts.MaxOutputBytes, storeAll: storeAll, storeAfter: storeAfter, onChunk: onChunk,
		newWriter: func() chunkWriter { return m.store.Outputs.NewWriter(spec.ExecutionID) },
		overflow: func() {
			l.stop(fmt.Errorf("%w: more than %d bytes", errOutputTooLarge, m.opts.MaxOutputBytes), true)
		},
	})
}

// openInput returns the run's standard input: the spec's bytes, or the
// stored input it refers to. In-memory input stays a *bytes.Reader, which
// runtimes write without a copier.
func (m *engine) openInput(ctx context.Context, l *live, spec *execution.Spec) (io.Reader, func(), error) {
	if len(spec.Upstream) > 0 {
		return m.inputs.stepInput(ctx, l, spec)
	}
	if spec.InputRef == "" {
		return bytes.NewReader(spec.Input), func() {}, nil
	}
	rc, err := m.store.Inputs.Open(ctx, spec.InputRef)
	if err != nil {
		return nil, nil, err
	}
	return rc, func() { _ = rc.Close() }, nil
}

// timeoutError is why a run's deadline stopped it ("execution timeout of
// 300ms"); made for every run, so it is formatted only when read.
type timeoutError time.Duration

func (e timeoutError) Error() string { return errTimeout.Error() + " of " + time.Duration(e).String() }
func (e timeoutError) Unwrap() error { return errTimeout }

// mentionsMemory reports whether the end of a failed function's standard
// error says it could not get memory (how programs report a refused
// allocation under a memory limit).
func mentionsMemory(logs []execution.LogLine) bool {
	t := strings.ToLower(tail(logs, 2048))
	for _, s := range []string{"out of memory", "cannot allocate memory", "memoryerror", "bad_alloc", "memory limit"} {
		if strings.Contains(t, s) {
			return true
		}
	}
	return false
}

// classify records why a run or a wait for a slot ended with err.
func (m *engine) classify(l *live, ctx context.Context, err error) {
	cause := err
	if ctx.Err() != nil {
		cause = context.Cause(ctx)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rec
	if r.CompletedAt.IsZero() {
		r.CompletedAt = m.opts.Now()
	}
	set := func(s execution.Status, code, msg string) { r.Status, r.ErrorCode, r.ErrorMessage = s, code, msg }
	switch {
	case errors.Is(cause, errOutputTooLarge):
		set(execution.StatusFailed, errdefs.OutputTooLarge.String(), "output exceeded the limit: "+cause.Error())
	case errors.Is(cause, errQueueTimeout):
		set(execution.StatusTimeout, errdefs.QueueTimeout.String(), cause.Error())
	case errors.Is(cause, errTimeout):
		set(execution.StatusTimeout, errdefs.ExecutionTimeout.String(), "the execution exceeded its "+cause.Error())
	case errors.Is(cause, errCancelled):
		set(execution.StatusCancelled, errdefs.Cancelled.String(), cause.Error())
	case errors.Is(cause, errShutdown):
		set(execution.StatusFailed, errdefs.NodeShutdown.String(), "the node shut down before the execution finished")
	case errors.Is(cause, context.DeadlineExceeded):
		set(execution.StatusTimeout, errdefs.ExecutionTimeout.String(), "the caller's deadline passed")
	case errors.Is(cause, context.Canceled):
		set(execution.StatusCancelled, errdefs.CallerCancelled.String(), "the caller went away")
	default:
		code := errdefs.CodeOf(cause)
		if code == errdefs.Internal.String() {
			code = errdefs.RuntimeError.String()
		}
		set(execution.StatusFailed, code, cause.Error())
	}
}

// finish records a terminal execution's stats and wakes those waiting for
// it.
func (m *engine) finish(l *live, queueWait time.Duration) {
	r := l.final()
	m.stats.record(r)
	if m.opts.Hooks != nil {
		l.mu.Lock()
		rt := l.runtime
		l.mu.Unlock()
		if rt == "" { // it never started: the task is looked up once more
			rt = m.runtimeOf(r.TaskID)
		}
		m.opts.Hooks.Finished(r, rt, queueWait)
	}
	m.log.Debug("execution finished", "execution", r.ID, "task", r.TaskID, "mode", r.Mode.String(),
		"status", r.Status.String(), "error_code", r.ErrorCode, "duration_ms", r.DurationMs)
	close(l.done)
}

func (m *engine) runtimeOf(taskID string) spearrt.Type {
	_, art, err := m.registry.Artifact(context.Background(), taskID)
	if err != nil {
		return ""
	}
	return art.Type
}

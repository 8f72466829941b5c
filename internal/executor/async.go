package executor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/retry"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
)

// Submit durably accepts an async execution: once it returns nil the
// execution is in the JetStream queue and will reach a terminal state, on
// this node or another, even if this node dies. It returns the PENDING
// record and an estimate of when the execution will be done. With an
// idempotency key, an execution that already exists is returned as it is
// (existing true) and nothing new is queued.
func (m *Async) Submit(ctx context.Context, spec *execution.Spec) (rec *execution.Record, estimate time.Duration, existing bool, err error) {
	t, err := m.registry.Get(ctx, spec.TaskID)
	if err != nil {
		if t, err = m.elsewhere(ctx, spec.TaskID, err); err != nil {
			return nil, 0, false, err
		}
	}
	spec.Runtime = string(t.Artifact.Type)
	m.mu.Lock()
	draining := m.draining
	m.mu.Unlock()
	if draining {
		return nil, 0, false, errdefs.NodeShuttingDown.New("the node is shutting down")
	}
	if spec.Idempotent {
		// A repeated key is answered even when the queue or the store is
		// full.
		if old, _, err := m.store.Records.Get(ctx, spec.ExecutionID); err == nil {
			return old, m.estimate(ctx, t, store.Band(spec.Priority), false), true, nil
		}
	}
	if t.Limits.MaxQueued > 0 {
		// The task's quota is checked and taken by compare-and-set on the
		// queue (enqueueWithin), exact across nodes; submissions to this
		// node take turns, so they do not make each other try again.
		unlock := m.admission.lock(t.ID)
		defer unlock()
	}
	if err := m.store.AdmitWork(); err != nil {
		return nil, 0, false, err
	}
	if err := m.admit(ctx); err != nil {
		return nil, 0, false, err
	}
	// The estimate takes the execution's place in the line, so that
	// executions submitted at once each count those before them.
	band := store.Band(spec.Priority)
	estimate = m.estimate(ctx, t, band, true)
	defer func() {
		if err != nil || existing {
			m.line.leave(band)
		}
	}()
	spec.EstimatedMs = max(1, estimate.Milliseconds())
	rec = execution.NewRecord(spec)
	if spec.IDGiven || spec.Idempotent {
		rec, existing, err = m.submitKeyed(ctx, spec, rec, t.Limits.MaxQueued)
		return rec, estimate, existing, err
	}
	if t.Limits.MaxQueued > 0 {
		rec, err = m.submitWithin(ctx, spec, rec, t.Limits.MaxQueued)
		return rec, estimate, false, err
	}
	if err = m.store.Queue.Accept(ctx, spec); err != nil {
		// The message may have been stored all the same: a FAILED record
		// makes the worker that takes it drop it. Without a quorum that
		// write waits as long as the one that failed: not with the
		// caller.
		if errdefs.ClusterUnavailable.Is(err) {
			go m.failUnqueued(rec, err)
		} else {
			m.failUnqueued(rec, err)
		}
		return nil, 0, false, err
	}
	return rec, estimate, false, nil
}

// submitKeyed accepts an execution whose id the caller chose, or derived
// from an idempotency key, so it may exist already: an existing one is the
// answer with a key, EXECUTION_EXISTS without. The queue message goes
// first, de-duplicated by id: once JetStream stored it the execution is
// accepted, and a crash before its record is written loses nothing (the
// worker creates the record from the message).
func (m *Async) submitKeyed(ctx context.Context, spec *execution.Spec, rec *execution.Record, maxQueued int32) (*execution.Record, bool, error) {
	if old, _, err := m.store.Records.Get(ctx, spec.ExecutionID); err == nil {
		return m.existingExecution(ctx, spec, old)
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, false, err
	}
	duplicate, err := m.enqueueWithin(ctx, spec, maxQueued)
	if err != nil {
		return nil, false, err
	}
	if duplicate { // queued a moment ago by a submission with the same id
		return m.existingExecution(ctx, spec, nil)
	}
	if m.afterEnqueue != nil {
		if err := m.afterEnqueue(); err != nil {
			return nil, false, err
		}
	}
	if _, err := m.store.Records.Create(ctx, rec); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
		// Queued, so accepted: the worker creates the record (it may
		// already have: ErrAlreadyExists).
		m.log.Warn("pending record not written; the worker will create it", "execution", rec.ID, "err", err)
	}
	return rec, false, nil
}

// existingExecution answers a keyed submission whose id exists: with an
// idempotency key, the existing execution (read when old is nil); else
// EXECUTION_EXISTS.
func (m *Async) existingExecution(ctx context.Context, spec *execution.Spec, old *execution.Record) (*execution.Record, bool, error) {
	if !spec.Idempotent {
		return nil, false, executionExists(spec.ExecutionID)
	}
	if old != nil {
		return old, true, nil
	}
	// Its record is written right after its queue message, by the
	// submission or by the worker that takes it.
	for wait := 5 * time.Millisecond; ; wait *= 2 {
		old, _, err := m.store.Records.Get(ctx, spec.ExecutionID)
		if err == nil {
			return old, true, nil
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			return nil, false, err
		}
		if wait > time.Second {
			return execution.NewRecord(spec), true, nil // queued; PENDING
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(wait):
		}
	}
}

func executionExists(id string) error {
	return errdefs.ExecutionExists.New("execution %q already exists: execution ids are never reused (attach to it with StreamFunction, or leave context.execution_id empty)", id)
}

// admit refuses an async execution when the node's queue (MaxQueued) is
// full, so nothing is accepted and then dropped; the task's (max_queued)
// is checked as it is queued (enqueueWithin). The node's bound is read
// from a cache refreshed every 100 ms, so concurrent submissions may
// overshoot it by their number.
func (m *Async) admit(ctx context.Context) error {
	if m.opts.MaxQueued > 0 {
		m.refreshLine(ctx)
		if n := m.line.waiting(); n >= m.opts.MaxQueued {
			return errdefs.QueueFull.New("the node's queue holds %d executions (its limit); try again later", n)
		}
	}
	return nil
}

// failUnqueued marks the record of an execution that could not be queued
// as FAILED, so no PENDING record is left that nothing will run.
func (m *Async) failUnqueued(rec *execution.Record, err error) {
	r := *rec
	r.Status, r.ErrorCode, r.ErrorMessage = execution.StatusFailed, errdefs.CodeOf(err), "not queued: "+err.Error()
	r.CompletedAt = m.opts.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.baseCtx), 5*time.Second)
	defer cancel()
	_, _ = m.store.Records.Put(ctx, &r)
}

// runDelivery runs one execution taken from the queue, and acks it once its
// terminal state is durable.
func (m *dispatcher) runDelivery(d *store.Delivery, unreserve func()) {
	defer unreserve()
	defer func() {
		m.mu.Lock()
		m.asyncInFlight--
		m.mu.Unlock()
		m.slots.kick()
		m.wg.Done()
	}()
	rec, rev, ok := m.readQueued(d)
	if !ok {
		return
	}
	if !m.inputs.upstreamRuns(m.baseCtx, d.Spec) {
		// A streamed step whose parent does not run now would wait in
		// a run slot its parent may need: it waits in the queue.
		_ = d.Nak(250 * time.Millisecond)
		return
	}
	if m.afterRead != nil {
		m.afterRead()
	}
	spec := d.Spec
	t, art, err := m.registry.Artifact(m.baseCtx, spec.TaskID)
	if err == nil {
		_, err = m.engine.runtime(art.Type)
	}
	l := &live{rec: rec, done: make(chan struct{})}
	if err := m.lives.addLive(l); err != nil {
		if errors.Is(err, errdefs.ErrUnavailable) { // shutting down
			_ = d.Nak(0)
		}
		return // already running here (a redelivery): that run acks it
	}
	runCtx, cancel := context.WithCancelCause(m.baseCtx)
	defer cancel(nil)
	go m.claims.keepClaim(runCtx, l, d, cancel)
	switch {
	case err != nil:
		m.engine.classify(l, runCtx, err)
		m.complete(l, d, 0)
	case !l.setCancel(cancel): // cancelled before it started
		if l.wasPreCancelled() {
			m.completeCancelled(l, d, rev)
		} else {
			m.complete(l, d, 0)
		}
	case defers(d, rev):
		m.run(runCtx, l, d, t, art, func() bool { unreserve(); m.claims.deferClaim(l, d, cancel); return true })
	default:
		m.run(runCtx, l, d, t, art, func() bool { unreserve(); return m.claims.claim(l, d, rev) })
	}
}

// completeCancelled settles an execution a cancel reached just before it
// became live here. That cancel may also be writing the record CANCELLED
// in the store (it found nothing live): both write by compare-and-set on
// the revision read, so one of them records it, and counts it, once.
func (m *dispatcher) completeCancelled(l *live, d *store.Delivery, rev uint64) {
	ctx := context.WithoutCancel(m.baseCtx)
	l.mu.Lock()
	l.rec.CompletedAt = m.opts.Now()
	rec := *l.rec
	l.mu.Unlock()
	ended := &rec
	if _, err := m.store.Records.Update(ctx, &rec, rev); err == nil {
		m.outbox.notify(&rec)
		m.engine.finish(l, 0)
	} else if cur, _, gerr := m.store.Records.GetLatest(ctx, rec.ID); gerr != nil || !cur.Status.Terminal() {
		_ = d.Nak(time.Second) // not settled: look again later
		close(l.done)
		m.lives.forget(rec.ID)
		return
	} else {
		ended = cur
		close(l.done)
	}
	if m.graphs.stepEnded(ended) && m.indexed(ctx, ended) == nil {
		_ = d.Ack(ctx)
	} else {
		_ = d.Nak(time.Second) // its redelivery advances its graph, or indexes it
	}
	m.lives.forget(rec.ID)
}

// readQueued reads (or, if its node died before writing it, creates) the
// record of a delivered execution. ok is false when there is nothing to
// run: the message was settled or handed back.
func (m *dispatcher) readQueued(d *store.Delivery) (*execution.Record, uint64, bool) {
	ctx, spec := m.baseCtx, d.Spec
	if spec.Unrecorded && d.Attempt == 1 {
		// Its record is created by its claim (unless a cancel did first).
		return execution.NewRecord(spec), 0, true
	}
	// From the leader: with 3 copies, Get may answer from a replica
	// behind it, which has not seen the record written a moment ago, or
	// shows a requeued execution still finished (it would be dropped).
	rec, rev, err := m.store.Records.GetLatest(ctx, spec.ExecutionID)
	if errors.Is(err, errdefs.ErrNotFound) {
		// Not written yet (it is written with the message, and created
		// only if absent), or never: the worker creates it.
		rec = execution.NewRecord(spec)
		rev, err = m.store.Records.Create(ctx, rec)
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			rec, rev, err = m.store.Records.GetLatest(ctx, spec.ExecutionID)
		}
	}
	if err != nil {
		// The message stays queued, so the execution is not lost: it is
		// read again later, ever less often while the store fails.
		if d.Attempt == 1 {
			m.log.Warn("reading queued execution; it will be read again", "execution", spec.ExecutionID, "err", err)
		}
		_ = d.Nak(retryBackoff.Delay(d.Attempt))
		return nil, 0, false
	}
	if rec.Status.Terminal() { // cancelled while queued, or a duplicate, or acked by none
		// Its index entry may have died with the node that wrote the
		// record: it is written again (rarely: a redelivery).
		if !m.graphs.stepEnded(rec) || m.store.Records.Index(ctx, rec.TaskID, rec.ID) != nil {
			_ = d.Nak(retryBackoff.Delay(d.Attempt))
			return nil, 0, false
		}
		_ = d.Ack(ctx)
		return nil, 0, false
	}
	return rec, rev, true
}

// claim marks the execution RUNNING here by compare-and-set, once it has
// a slot, so that an attempt is counted only when it starts: a cancel that
// reached the store first, or another node's claim, wins. false: not ours
// to run (l is done and gone).
func (m *claims) claim(l *live, d *store.Delivery, rev uint64) bool {
	ctx, id := m.baseCtx, d.Spec.ExecutionID
	l.mu.Lock()
	if lost, ok := lostAttempt(l.rec, m.opts.Now()); ok {
		l.rec.History = append(l.rec.History, lost)
	}
	claim := *l.rec
	l.mu.Unlock()
	claim.Status, claim.Node, claim.StartedAt = execution.StatusRunning, m.opts.NodeID, m.opts.Now()
	claim.Attempts++
	n, err := m.store.Records.Claim(ctx, &claim, rev)
	if rev == 0 && errors.Is(err, errdefs.ErrFailedPrecondition) {
		n, err = m.claimCreated(ctx, l, &claim)
	}
	if err == nil {
		l.mu.Lock()
		l.claimed = n
		l.mu.Unlock()
		if d.Spec.StreamsTo { // its streamed steps start now
			m.wg.Go(func() { m.graphs.stepStarted(&claim) })
		}
		return true
	}
	cur, _, gerr := m.store.Records.GetLatest(ctx, id)
	switch {
	case gerr == nil && cur.Status.Terminal():
		l.mu.Lock()
		l.rec = cur
		l.mu.Unlock()
		if m.graphs.stepEnded(cur) {
			_ = d.Ack(ctx)
		} else {
			_ = d.Nak(time.Second) // its redelivery advances its graph
		}
	case gerr != nil || cur.Status != execution.StatusRunning:
		// The store failed, or the record changed but is not claimed:
		// hand the message back. Another worker's claim is left alone (a
		// requeue would overwrite it with our stale PENDING record); that
		// worker keeps the message alive and acks it.
		_ = d.Nak(time.Second)
	}
	close(l.done)
	m.lives.forget(id)
	return false
}

// claimCreated claims an execution read from its queue message (revision
// 0) whose record was created since: by its submission (a keyed one writes
// it right after the message), then it is claimed as it is now; by a
// cancel or another worker, then the claim fails.
func (m *claims) claimCreated(ctx context.Context, l *live, claim *execution.Record) (uint64, error) {
	cur, rev, err := m.store.Records.GetLatest(ctx, claim.ID)
	if err != nil || cur.Status != execution.StatusPending || rev == 0 {
		return 0, fmt.Errorf("execution %q was recorded meanwhile: %w", claim.ID, errdefs.ErrFailedPrecondition)
	}
	l.mu.Lock()
	l.rec = cur
	l.mu.Unlock()
	*claim = *cur
	claim.Status, claim.Node, claim.StartedAt = execution.StatusRunning, m.opts.NodeID, m.opts.Now()
	claim.Attempts++
	return m.store.Records.Claim(ctx, claim, rev)
}

// lostAttempt is the history entry of the attempt a stored record says is
// running when its message comes back: its node stopped reporting
// progress (it died, or lost contact) and the attempt is run again.
func lostAttempt(r *execution.Record, now time.Time) (execution.Attempt, bool) {
	if r.Status != execution.StatusRunning || r.Attempts == 0 ||
		len(r.History) > 0 && r.History[len(r.History)-1].N >= r.Attempts {
		return execution.Attempt{}, false
	}
	return execution.Attempt{
		N: r.Attempts, Status: execution.StatusFailed, Node: r.Node, StartedAt: r.StartedAt, CompletedAt: now,
		ErrorCode:    errdefs.AttemptLost.String(),
		ErrorMessage: fmt.Sprintf("node %s stopped reporting progress on this attempt; it runs again", r.Node),
	}, true
}

// putRecord stores the record of an execution taken from the queue:
// fenced (putClaimed) once this node claimed it, or ran it with its claim
// deferred (then from revision 0: created only if nobody else did).
func (m *claims) putRecord(ctx context.Context, l *live, rec *execution.Record) error {
	late := m.settleLate(l)
	l.mu.Lock()
	claimed := l.claimed != 0
	l.mu.Unlock()
	if claimed || late {
		return m.putClaimed(ctx, l, rec)
	}
	_, err := m.store.Records.Put(ctx, rec)
	return err
}

// errFenced: a newer attempt took the execution over (see putClaimed).
var errFenced = errors.New("fenced: a newer attempt took the execution over")

// putClaimed stores rec, the record of an execution this node claimed (or
// ran with its claim deferred: from revision 0, see lateclaim.go), unless
// the stored record moved on without it: another node claimed the
// execution (this node lost contact for longer than the ack wait, and its
// message went to that node) or it was settled meanwhile. Then nothing is
// written and errFenced is returned: the stale attempt must not overwrite
// a newer one's result.
func (m *claims) putClaimed(ctx context.Context, l *live, rec *execution.Record) error {
	l.mu.Lock()
	rev := l.claimed
	l.mu.Unlock()
	for {
		n, err := m.store.Records.Update(ctx, rec, rev)
		if err == nil {
			l.mu.Lock()
			l.claimed = n
			l.mu.Unlock()
			return nil
		}
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			return err
		}
		cur, curRev, err := m.store.Records.GetLatest(ctx, rec.ID)
		if err != nil {
			return err
		}
		if cur.Status.Terminal() || cur.Node != m.opts.NodeID || cur.Attempts != rec.Attempts {
			m.log.Warn("fenced: this node's attempt was taken over; its result is dropped",
				"execution", rec.ID, "attempt", rec.Attempts, "now", cur.Status, "node", cur.Node, "attempts", cur.Attempts)
			return errFenced
		}
		rev = curRev
	}
}

// run waits for a slot, claims the execution (see claim), runs it and
// settles it: done, retried with backoff, dead-lettered, or back to the
// queue on shutdown.
func (m *dispatcher) run(ctx context.Context, l *live, d *store.Delivery, t *task.Task, art spearrt.Artifact, claim func() bool) {
	spec := d.Spec
	release, err := m.runs.acquire(ctx, l, spec, t)
	if err != nil {
		if m.claims.dropFenced(ctx, l) {
			return
		}
		m.engine.classify(l, ctx, err)
		if errors.Is(context.Cause(ctx), errShutdown) {
			m.requeue(l, d, 0)
			return
		}
		m.complete(l, d, 0)
		return
	}
	if !claim() {
		release()
		return
	}
	wait := m.opts.Now().Sub(spec.CreatedAt)
	m.engine.execute(ctx, l, m.runtimes[art.Type], art, spec, t.Limits, nil)
	release()
	if m.claims.dropFenced(ctx, l) {
		return
	}
	if errors.Is(context.Cause(ctx), errShutdown) {
		m.requeue(l, d, 0)
		return
	}
	r := l.final()
	if r.ErrorCode == errdefs.UpstreamRestarted.String() && !l.cancelRequested() {
		// A streamed step whose parent runs again runs again with it.
		m.requeue(l, d, 0)
		return
	}
	// A run that failed on its own just as a cancel stopped it is not
	// retried: the caller asked for it to end.
	if retryable(r) && !l.cancelRequested() && spec.MaxRetries > 0 && !pastDeadline(spec, m.opts.Now()) {
		if r.Attempts-spec.AttemptBase-restarts(r) <= spec.MaxRetries {
			if m.opts.Hooks != nil {
				m.opts.Hooks.Retried(r)
			}
			m.requeue(l, d, retryBackoff.Delay(int(r.Attempts-spec.AttemptBase)))
			return
		}
		m.deadLetter(l, spec)
	}
	m.complete(l, d, wait)
}

// deadLetter marks an execution whose retries ran out: FAILED with
// RETRIES_EXHAUSTED, listed as dead-lettered, its spec kept for requeueing.
func (m *dispatcher) deadLetter(l *live, spec *execution.Spec) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rec
	r.ErrorMessage = fmt.Sprintf("%d attempts failed; the last: %s: %s", r.Attempts-spec.AttemptBase, r.ErrorCode, r.ErrorMessage)
	r.Status, r.ErrorCode = execution.StatusFailed, errdefs.RetriesExhausted.String()
	r.DeadLettered = true
	r.Spec = spec
}

// Requeue queues a dead-lettered execution again, with a fresh retry
// budget; its attempts so far stay in its history.
func (m *Async) Requeue(ctx context.Context, id string) (*execution.Record, error) {
	if err := execution.ValidateID(id); err != nil {
		return nil, err
	}
	rec, rev, err := m.store.Records.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.Graph != nil {
		return m.graphs.RequeueGraph(ctx, rec, rev)
	}
	if !rec.DeadLettered || rec.Spec == nil {
		return nil, errdefs.NotDeadLettered.New("execution %q is %s, not dead-lettered: only executions whose retries ran out can be requeued", id, rec.Status)
	}
	spec := *rec.Spec
	if spec.Runtime == "" { // dead-lettered by store format 1
		spec.Runtime = string(m.engine.runtimeOf(spec.TaskID))
	}
	spec.Requeues++
	spec.AttemptBase = rec.Attempts
	rec.Status, rec.ErrorCode, rec.ErrorMessage = execution.StatusPending, "", ""
	rec.DeadLettered, rec.Spec, rec.CompletedAt = false, nil, time.Time{}
	if _, err := m.store.Records.Update(ctx, rec, rev); err != nil {
		return nil, err
	}
	if _, err := m.store.Queue.Enqueue(ctx, &spec); err != nil {
		m.failUnqueued(rec, err)
		return nil, err
	}
	return rec, nil
}

// restarts counts the attempts of a streamed step that ended because its
// parent ran again: they do not use its retries.
func restarts(r *execution.Record) int32 {
	n := int32(0)
	for _, a := range r.History {
		if a.ErrorCode == errdefs.UpstreamRestarted.String() {
			n++
		}
	}
	return n
}

func retryable(r *execution.Record) bool {
	switch r.Status {
	case execution.StatusFailed:
		return r.ErrorCode != errdefs.OutputTooLarge.String()
	case execution.StatusTimeout:
		return true
	}
	return false
}

// retryBackoff spaces an execution's retries, and a store's repeated
// failures: 100 ms doubling to 30 s, full jitter.
var retryBackoff = retry.Backoff{Base: 100 * time.Millisecond, Max: 30 * time.Second}

// complete stores the terminal record, then acks the queue message.
func (m *dispatcher) complete(l *live, d *store.Delivery, wait time.Duration) {
	ctx := context.WithoutCancel(m.baseCtx)
	rec := l.final()
	// Retried until stored (a full store gets the record without its
	// output's first part and logs) or the node stops: the message is kept
	// in progress meanwhile, so the function does not run again.
	err := storeBackoff.Do(m.baseCtx, 0, func(attempt int) error {
		err := m.claims.putRecord(ctx, l, rec)
		if errors.Is(err, errFenced) {
			return retry.Permanent(err)
		}
		if err != nil && attempt == 1 {
			m.log.Warn("storing final record; retrying", "execution", rec.ID, "err", err)
		}
		if errdefs.StorageFull.Is(err) {
			rec = slimmed([]*execution.Record{rec})[0]
		}
		return err
	})
	if err != nil {
		// Not acked: the execution will be delivered again and its
		// outcome recorded then (fenced: a newer attempt records it).
		if !errors.Is(err, errFenced) {
			m.log.Error("storing final record", "execution", rec.ID, "err", err)
		}
		close(l.done)
		m.lives.forget(rec.ID)
		return
	}
	// The callback is in the outbox before the execution leaves the queue:
	// a crash in between runs nothing twice and loses no callback.
	m.outbox.notify(rec)
	if !m.graphs.stepEnded(rec) {
		// Not acked: its redelivery finds it ended and advances its graph.
		_ = d.Nak(time.Second)
	} else if err := m.indexed(ctx, rec); err != nil {
		// Not acked: its redelivery finds it ended and indexes it.
		m.log.Warn("indexing finished execution; it is indexed when its message comes back", "execution", rec.ID, "err", err)
		_ = d.Nak(time.Second)
	} else if err := d.Ack(ctx); err != nil {
		m.log.Warn("acking finished execution", "execution", rec.ID, "err", err)
	}
	m.engine.finish(l, wait)
	m.lives.forget(rec.ID)
}

// indexed makes sure rec's index entry is stored before its message is
// acked: one its first write could not store is still being written in
// the background, and a node that died then would lose it for good.
func (m *dispatcher) indexed(ctx context.Context, rec *execution.Record) error {
	if !m.store.Records.IndexPending(rec.ID) {
		return nil
	}
	return m.store.Records.Index(ctx, rec.TaskID, rec.ID)
}

// requeue puts the execution back to PENDING and returns it to the queue,
// to be delivered again after delay.
func (m *dispatcher) requeue(l *live, d *store.Delivery, delay time.Duration) {
	ctx := context.WithoutCancel(m.baseCtx)
	l.mu.Lock()
	// The attempt's outcome stays in the history; its output goes (the
	// next attempt's replaces it).
	l.rec.Status, l.rec.CompletedAt = execution.StatusPending, time.Time{}
	l.rec.ErrorCode, l.rec.ErrorMessage = "", ""
	l.rec.Output, l.rec.OutputSize, l.rec.OutputSHA256, l.rec.OutputStored = nil, 0, "", false
	rec := *l.rec
	l.mu.Unlock()
	if err := m.claims.putRecord(ctx, l, &rec); errors.Is(err, errFenced) {
		close(l.done)
		m.lives.forget(rec.ID)
		return
	} else if err != nil {
		m.log.Warn("storing requeued record", "execution", rec.ID, "err", err)
	}
	if delay > 0 {
		_ = d.Nak(delay)
	} else if err := m.store.Workers.HandBack(ctx, d); err != nil {
		m.log.Warn("handing an execution back to the queue", "execution", rec.ID, "err", err)
	}
	close(l.done)
	m.lives.forget(rec.ID)
}

// keepClaim keeps a claimed execution's message in progress, and checks
// that the claim still holds, every third of the ack wait until ctx ends.
// It stops the run (cause errFenced) once the claim is lost: the message
// could not be kept in progress for a whole ack wait (it goes to another
// node), or the stored record moved on (another node claimed the
// execution, or it was settled elsewhere) — this node was cut off.
func (m *claims) keepClaim(ctx context.Context, l *live, d interface{ InProgress() error }, stop context.CancelCauseFunc) {
	ackWait := m.store.Workers.AckWait()
	t := time.NewTicker(ackWait / 3)
	defer t.Stop()
	kept := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if d.InProgress() == nil {
			kept = time.Now()
		} else if time.Since(kept) > ackWait {
			stop(fmt.Errorf("%w: the queue did not take progress signals for %v", errFenced, ackWait))
			return
		}
		if m.claimMovedOn(ctx, l) {
			stop(fmt.Errorf("%w: the record moved on", errFenced))
			return
		}
	}
}

// claimMovedOn reports whether the stored record of a claimed execution
// no longer says this node runs it.
func (m *claims) claimMovedOn(ctx context.Context, l *live) bool {
	l.mu.Lock()
	claimed, id := l.claimed, l.rec.ID
	l.mu.Unlock()
	if claimed == 0 {
		return false
	}
	cur, rev, err := m.store.Records.Get(ctx, id)
	return err == nil && rev != claimed && (cur.Status != execution.StatusRunning || cur.Node != m.opts.NodeID)
}

// dropFenced ends a run whose claim was lost (see keepClaim) without a
// word to the store or the queue: the attempt that took over records the
// outcome. It reports whether it did.
func (m *claims) dropFenced(ctx context.Context, l *live) bool {
	cause := context.Cause(ctx)
	if !errors.Is(cause, errFenced) {
		return false
	}
	m.log.Warn("fenced: this node lost its claim on a running execution; it stopped it and drops its result",
		"execution", l.final().ID, "why", cause)
	close(l.done)
	m.lives.forget(l.final().ID)
	return true
}

// heartbeat tells JetStream a message (an execution, a callback) is in
// progress until ctx ends, so long work is not handed to another node.
func (m *dispatcher) heartbeat(ctx context.Context, d interface{ InProgress() error }) {
	t := time.NewTicker(m.store.Workers.AckWait() / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = d.InProgress()
		}
	}
}

// taskLocks serializes a step per task id.
type taskLocks struct {
	mu    sync.Mutex
	locks map[string]*taskLock
}

type taskLock struct {
	sync.Mutex
	users int
}

// lock locks id's mutex and returns its unlock; an unused mutex is dropped.
func (l *taskLocks) lock(id string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*taskLock{}
	}
	tl := l.locks[id]
	if tl == nil {
		tl = &taskLock{}
		l.locks[id] = tl
	}
	tl.users++
	l.mu.Unlock()
	tl.Lock()
	return func() {
		tl.Unlock()
		l.mu.Lock()
		if tl.users--; tl.users == 0 {
			delete(l.locks, id)
		}
		l.mu.Unlock()
	}
}

package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
)

// A JetStream cluster that has lost its quorum (a majority of its servers
// down or cut off from this node's) answers no write: a request sent to a
// stream that has no leader gets no responder, and one sent to a leader
// that has not yet noticed it is alone is never answered. So every request
// the store makes on a call's path is bounded by Options.OpTimeout, and
// one that fails that way is CLUSTER_UNAVAILABLE — the call fails fast
// instead of hanging until the caller's deadline.
//
// Reads are answered by any copy (JetStream's direct gets), also by the
// lone server of a minority, which can be behind the others. So once
// writes have failed for lostAfter, none succeeding, reads are refused too
// (with more than one copy); a probe write every probeEvery finds out when
// the quorum is back. Long operations (uploads, watches, the queue's
// consumers, reading output) are not bounded as a whole: each of their
// requests is.

// DefaultOpTimeout is Options.OpTimeout's default.
const DefaultOpTimeout = 1500 * time.Millisecond

const (
	// lostAfter is how long writes fail, none succeeding, before the
	// quorum counts as lost: longer than a failed write, shorter than the
	// seconds a cluster that lost one server takes to elect new leaders
	// (meanwhile other writes succeed).
	lostAfter = 2 * time.Second
	// probeEvery spaces the probe writes while writes fail.
	probeEvery = time.Second
	// quorumKey is the probe's key (see probe): no task's.
	quorumKey = "_quorum"
)

// errNoAnswer is the cause of a request's own bound running out (not the
// caller's deadline).
var errNoAnswer = errors.New("JetStream did not answer")

// bounded bounds ctx by the request timeout; a shorter deadline of the
// caller's stays.
func (c *core) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, c.opts.OpTimeout, errNoAnswer)
}

// answered returns err of a request made with a bounded ctx, saying so
// when it failed because the bound ran out.
func (c *core) answered(ctx context.Context, err error) error {
	if err == nil || !errors.Is(context.Cause(ctx), errNoAnswer) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w within %v", errNoAnswer, c.opts.OpTimeout)
	}
	return fmt.Errorf("%w within %v (%v)", errNoAnswer, c.opts.OpTimeout, err)
}

// request runs op with a bounded ctx. A read is refused at once while the
// quorum is lost; a write that succeeds says the quorum is there.
func request[T any](c *core, ctx context.Context, write bool, op func(context.Context) (T, error)) (T, error) {
	var zero T
	if !write {
		if err := c.quorum.check(); err != nil {
			return zero, err
		}
	}
	bctx, cancel := c.bounded(ctx)
	defer cancel()
	v, err := op(bctx)
	err = c.answered(bctx, err)
	switch {
	case err == nil && write:
		c.quorum.ok()
	case noQuorum(err):
		c.quorum.failed(err)
	}
	return v, err
}

// noQuorum says whether err is what a JetStream cluster without a quorum
// (or a node cut off from it) answers: no answer in time, no responder,
// or the cluster saying it has no leader.
func noQuorum(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10008, // JetStream system temporarily unavailable
			10009,        // JetStream cluster can not handle request
			10118, 10119: // stream, consumer offline
			return true
		}
	}
	return errors.Is(err, errNoAnswer) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrConnectionReconnecting)
}

// quorum keeps what the store's writes say of the cluster's quorum.
type quorum struct {
	log *slog.Logger
	now func() time.Time

	mu sync.Mutex
	// gate: reads are refused while the quorum is lost (set once the
	// replicas are known: only copies can be behind).
	gate bool
	// failingSince is when writes started failing, none succeeding since;
	// zero while they succeed. cause is the latest failure.
	failingSince time.Time
	cause        error
	// said: the loss was logged; probing: a probe loop runs.
	said, probing bool
	// base ends the probe loop; probe makes one write (set at Open).
	base  context.Context
	probe func(context.Context) error
}

// start turns the gate on (gate) with its probe, once the store is open.
func (q *quorum) start(base context.Context, gate bool, probe func(context.Context) error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.base, q.gate, q.probe = base, gate, probe
}

// ok notes a write that succeeded.
func (q *quorum) ok() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failingSince.IsZero() {
		return
	}
	if q.said {
		q.log.Info("JetStream quorum is back: calls are served again", "lost_for", q.now().Sub(q.failingSince).Round(time.Millisecond))
	}
	q.failingSince, q.cause, q.said = time.Time{}, nil, false
}

// failed notes a request that failed for want of a quorum, and starts
// probing for its return.
func (q *quorum) failed(cause error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failingSince.IsZero() {
		q.failingSince = q.now()
	}
	q.cause = cause
	if q.gate && !q.probing && q.base != nil {
		q.probing = true
		go q.probeLoop()
	}
}

// lost returns, while the quorum counts as lost, since when writes fail
// and the latest failure.
func (q *quorum) lost() (d time.Duration, lost bool, cause error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.gate || q.failingSince.IsZero() {
		return 0, false, nil
	}
	d = q.now().Sub(q.failingSince)
	return d, d >= lostAfter, q.cause
}

// failing refuses what is not worth waiting for while writes fail, even
// before the quorum counts as lost (an estimate's queue depth).
func (q *quorum) failing() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failingSince.IsZero() {
		return nil
	}
	return errdefs.ClusterUnavailable.New("no JetStream quorum: writes are failing (%v)", q.cause)
}

// check refuses a read while the quorum is lost.
func (q *quorum) check() error {
	if d, lost, cause := q.lost(); lost {
		return errdefs.ClusterUnavailable.New("no JetStream quorum: writes have failed for %v (%v)", d.Round(100*time.Millisecond), cause)
	}
	return nil
}

// probeLoop writes every probeEvery until a write succeeds (this one or
// another) or the store closes, and logs the loss once.
func (q *quorum) probeLoop() {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-q.base.Done():
		case <-t.C:
		}
		q.mu.Lock()
		if q.base.Err() != nil || q.failingSince.IsZero() {
			q.probing = false
			q.mu.Unlock()
			return
		}
		if d := q.now().Sub(q.failingSince); d >= lostAfter && !q.said {
			q.said = true
			q.log.Warn("no JetStream quorum: a majority of the servers does not answer; calls fail with CLUSTER_UNAVAILABLE until it does",
				"failing_for", d.Round(time.Millisecond), "err", q.cause)
		}
		probe := q.probe
		q.mu.Unlock()
		_ = probe(q.base) // it notes its outcome
	}
}

// probe is the write that tells whether the cluster has its quorum back:
// an empty value under a key that is no task's (no dot, so no execution
// index entry; no JSON, so no task's stats), in the execution index, else
// in the task stats. Two streams: while a cluster that lost one server
// elects a new leader for one, the other most likely answers. Both are
// kept on disk, unlike the node registry.
func (c *core) probe(ctx context.Context) error {
	if _, err := c.index.Put(ctx, quorumKey, nil); err == nil {
		return nil
	}
	_, err := c.stats.Put(ctx, quorumKey, nil)
	return err
}

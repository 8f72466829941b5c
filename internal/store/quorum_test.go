package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/testwait"
)

// failBound guards against a hang of a request made without a quorum; it
// is no timing assertion (each request is bounded by DefaultOpTimeout,
// which the test logs against).
const failBound = 10 * time.Second

// TestNoQuorumErrors: what JetStream answers without a quorum is
// CLUSTER_UNAVAILABLE (class unavailable), naming the cause; other
// failures keep their codes, and the caller's own deadline stays
// DEADLINE_EXCEEDED.
func TestNoQuorumErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want errdefs.Code
	}{
		{"a request's own bound ran out", fmt.Errorf("%w within 1.5s", errNoAnswer), errdefs.ClusterUnavailable},
		{"no responders", nats.ErrNoResponders, errdefs.ClusterUnavailable},
		{"no stream response", jetstream.ErrNoStreamResponse, errdefs.ClusterUnavailable},
		{"publish ack timeout", jetstream.ErrAsyncPublishTimeout, errdefs.ClusterUnavailable},
		{"JetStream temporarily unavailable", &jetstream.APIError{Code: 503, ErrorCode: 10008}, errdefs.ClusterUnavailable},
		{"stream offline", &jetstream.APIError{Code: 500, ErrorCode: 10118}, errdefs.ClusterUnavailable},
		{"a read refused", errdefs.ClusterUnavailable.New("no JetStream quorum: writes have failed for 3s"), errdefs.ClusterUnavailable},
		{"the caller's deadline", context.DeadlineExceeded, errdefs.DeadlineExceeded},
		{"out of space", &jetstream.APIError{Code: 503, ErrorCode: 10047, Description: "insufficient storage resources available"}, errdefs.StorageFull},
		{"anything else", errors.New("nats: connection closed"), errdefs.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := unavailable("store execution record", tt.err)
			if got := errdefs.CodeOf(err); got != tt.want.String() {
				t.Fatalf("unavailable(%v) = %v (%s); want %s", tt.err, err, got, tt.want)
			}
			if tt.want == errdefs.ClusterUnavailable && (!errors.Is(err, errdefs.ErrUnavailable) ||
				!strings.Contains(err.Error(), "store execution record: no JetStream quorum")) {
				t.Fatalf("unavailable(%v) = %q; want the Unavailable class, saying what failed and why", tt.err, err)
			}
		})
	}
}

// TestQuorumGate: reads are refused once writes have failed for lostAfter
// with none succeeding, and served again after a write succeeds; a store
// whose copies cannot be behind (one copy) never refuses them.
func TestQuorumGate(t *testing.T) {
	cause := errors.New("nats: no response from stream")
	tests := []struct {
		name      string
		gate      bool
		failedAgo time.Duration // 0: no failure
		okAfter   bool          // a write succeeded after the failure
		refused   bool
	}{
		{"writes succeed", true, 0, false, false},
		{"failing, not yet lost", true, lostAfter / 2, false, false},
		{"failing for lostAfter", true, lostAfter, false, true},
		{"failing long", true, time.Minute, false, true},
		{"a write succeeded since", true, time.Minute, true, false},
		{"one copy: never refused", false, time.Minute, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Unix(1700000000, 0)
			q := &quorum{log: slog.New(slog.DiscardHandler), now: func() time.Time { return now }}
			q.start(context.Background(), tt.gate, func(context.Context) error { return cause })
			q.probing = true // no probe loop: the test sets the clock
			if tt.failedAgo > 0 {
				q.failed(cause)
				now = now.Add(tt.failedAgo)
			}
			if tt.okAfter {
				q.ok()
			}
			err := q.check()
			if refused := err != nil; refused != tt.refused {
				t.Fatalf("check() = %v; want refused %v", err, tt.refused)
			}
			if err != nil && (!errdefs.ClusterUnavailable.Is(err) || !strings.Contains(err.Error(), cause.Error())) {
				t.Fatalf("check() = %v; want CLUSTER_UNAVAILABLE naming the last failure", err)
			}
		})
	}
}

// TestClusterWithoutQuorum: three members of an embedded cluster keep 3
// copies; with two of them gone, the third's writes fail promptly with
// CLUSTER_UNAVAILABLE, its reads are refused once that is clear (and its
// work refused), a caller's shorter deadline still wins; once the others
// are back, the store serves again by itself and nothing written before
// is lost.
func TestClusterWithoutQuorum(t *testing.T) {
	c := newTestCluster(t, 3)
	stores := c.open(t, 3, nil)
	s, ctx := stores[0], testCtx(t)
	if _, err := s.Records.Create(ctx, newRecord("e1", "t1", execution.StatusPending)); err != nil {
		t.Fatal(err)
	}
	stores[1].Close()
	stores[2].Close()

	writes := map[string]func(context.Context) error{
		"Records.Put": func(ctx context.Context) error {
			_, err := s.Records.Put(ctx, newRecord("e2", "t1", execution.StatusPending))
			return err
		},
		"Queue.Enqueue": func(ctx context.Context) error {
			_, err := s.Queue.Enqueue(ctx, &execution.Spec{ExecutionID: "e3", TaskID: "t1", Runtime: "process"})
			return err
		},
		"Queue.Submit": func(ctx context.Context) error {
			return s.Queue.Submit(ctx, &execution.Spec{ExecutionID: "e4", TaskID: "t1", Runtime: "process"}, newRecord("e4", "t1", execution.StatusPending))
		},
	}
	for name, write := range writes {
		start := time.Now()
		err := write(ctx)
		took := time.Since(start)
		t.Logf("%s without a quorum: %v after %v (requests bounded by %v)", name, err, took.Round(time.Millisecond), DefaultOpTimeout)
		if !errdefs.ClusterUnavailable.Is(err) || took > failBound {
			t.Errorf("%s without a quorum: %v after %v; want CLUSTER_UNAVAILABLE, promptly", name, err, took)
		}
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := s.Records.Put(short, newRecord("e5", "t1", execution.StatusPending)); err != nil &&
		errdefs.ClusterUnavailable.Is(err) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a write with a 100 ms deadline: %v; want the caller's deadline to win", err)
	}

	testwait.Until(t, "reads refused for want of a quorum", func() bool {
		_, _, err := s.Records.Get(ctx, "e1")
		return errdefs.ClusterUnavailable.Is(err)
	})
	if err := s.AdmitWork(); !errdefs.ClusterUnavailable.Is(err) {
		t.Errorf("AdmitWork without a quorum: %v; want CLUSTER_UNAVAILABLE", err)
	}

	c.open(t, 3, []int{1, 2})
	testwait.Until(t, "writes served again", func() bool {
		_, err := s.Records.Put(ctx, newRecord("e6", "t1", execution.StatusPending))
		return err == nil
	})
	if r, _, err := s.Records.Get(ctx, "e1"); err != nil || r.ID != "e1" {
		t.Fatalf("the record written before the loss: %+v, %v", r, err)
	}
	if err := s.AdmitWork(); err != nil {
		t.Errorf("AdmitWork with the quorum back: %v", err)
	}
}

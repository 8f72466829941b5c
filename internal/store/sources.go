package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/execution"
)

// readySubjectBase prefixes the core NATS subjects on which a queued
// execution is announced, by runtime and band: a hint that wakes idle
// workers at once (they also look every so often, for redeliveries).
const readySubjectBase = "spear.ready."

// Workers is the queue as this node's workers see it: the sources they
// take executions from (by runtime and band), the announcements that wake
// them, and the hand-back of a delivery.
type Workers struct{ *core }

// Source is one of the queue's consumers: the executions of one runtime in
// one priority band. A node takes work only from the sources of the
// runtimes it has, and only as much as it has free slots for, so the rest
// waits in JetStream for whichever node frees a slot first.
type Source struct {
	Runtime string
	Band    int
	c       jetstream.Consumer
	// maybe says the source may hold work: set by an announcement or a
	// periodic look, cleared when a take found it empty.
	maybe atomic.Bool
}

// Maybe reports whether the source may hold waiting work.
func (src *Source) Maybe() bool { return src.maybe.Load() }

// Mark says the source may hold work (look again).
func (src *Source) Mark() { src.maybe.Store(true) }

// sourceSubject is the filter of a runtime's band: queueSubject's prefix.
func sourceSubject(runtime string, band int) string {
	return fmt.Sprintf("%s%s.p%d.>", queueSubjectBase, runtime, band)
}

// Open opens the sources of runtimes, highest band first, creating
// their consumers if this is the first node with a runtime (the work
// queued for it meanwhile waits in the stream). Executions queued by a
// version that kept no runtime in the subject are moved to their
// runtime's source first: runtimeOf names a task's runtime ("" when the
// task is gone; such an execution fails wherever it is taken).
func (s *Workers) Open(ctx context.Context, runtimes []string, runtimeOf func(taskID string) string) ([]*Source, error) {
	var out []*Source
	for b := Bands - 1; b >= 0; b-- {
		for _, rt := range runtimes {
			c, err := ensureConsumer(ctx, s.queue, jetstream.ConsumerConfig{
				Durable:       fmt.Sprintf("%s_%s_p%d", ConsumerWorkers, rt, b),
				AckPolicy:     jetstream.AckExplicitPolicy,
				AckWait:       s.opts.AckWait,
				MaxDeliver:    -1,
				MaxAckPending: -1,
				FilterSubject: sourceSubject(rt, b),
			})
			if err != nil {
				return nil, fmt.Errorf("queue consumer: %w", err)
			}
			src := &Source{Runtime: rt, Band: b, c: c}
			src.Mark()
			out = append(out, src)
		}
	}
	if err := s.migrateBands(ctx, runtimes, runtimeOf); err != nil {
		return nil, err
	}
	s.sources.Store(&out)
	return out, nil
}

// Take hands up to n executions waiting in src to handle, without
// waiting, and clears src's mark when it had fewer.
func (s *Workers) Take(src *Source, n int, handle func(*Delivery)) (int, error) {
	batch, err := src.c.FetchNoWait(n)
	if err != nil {
		return 0, s.unavailable("fetch from queue", err)
	}
	got := 0
	for msg := range batch.Messages() {
		if d := s.delivery(msg); d != nil {
			handle(d)
		}
		got++
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
		return got, s.unavailable("fetch from queue", err)
	}
	if got < n {
		src.maybe.Store(false)
	}
	return got, nil
}

// announce tells idle workers that spec's source has work. A lost
// announcement costs only latency: workers look every so often anyway.
func (s *Queue) announce(spec *execution.Spec) {
	_ = s.nc.Publish(fmt.Sprintf("%s%s.p%d", readySubjectBase, spec.Runtime, bandOf(spec)), nil)
}

// Announcements calls ready with the source of every execution queued
// from now on, by any node, until stop is called.
func (s *Workers) Announcements(ready func(runtime string, band int)) (stop func(), err error) {
	sub, err := s.nc.Subscribe(readySubjectBase+"*.*", func(m *nats.Msg) {
		rt, band, ok := strings.Cut(strings.TrimPrefix(m.Subject, readySubjectBase), ".p")
		if !ok || len(band) != 1 {
			return
		}
		ready(rt, int(band[0]-'0'))
	})
	if err != nil {
		return nil, unavailable("subscribe to queue announcements", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// legacyBandConsumer names a band's consumer of store format 1, whose
// subjects had no runtime.
func legacyBandConsumer(b int) string { return fmt.Sprintf("%s_p%d", ConsumerWorkers, b) }

// migrateBands moves the executions queued under format 1's subjects
// (no runtime) to their runtime's subjects, then drops format 1's
// consumers. A crash midway queues some twice; the worker that takes the
// second copy finds the execution running or done and drops it.
func (s *Workers) migrateBands(ctx context.Context, runtimes []string, runtimeOf func(string) string) error {
	for b := range Bands {
		c, err := s.queue.Consumer(ctx, legacyBandConsumer(b))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return s.unavailable("queue consumer", err)
		}
		if err := s.drainLegacy(ctx, c, runtimes, runtimeOf); err != nil {
			return err
		}
		if err := s.queue.DeleteConsumer(ctx, legacyBandConsumer(b)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return s.unavailable("queue consumer", err)
		}
	}
	return nil
}

// drainLegacy republishes every message of a format 1 consumer under its
// runtime's subject and acks it.
func (s *Workers) drainLegacy(ctx context.Context, c jetstream.Consumer, runtimes []string, runtimeOf func(string) string) error {
	for {
		batch, err := c.FetchNoWait(100)
		if err != nil {
			return s.unavailable("migrate queue", err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			var spec execution.Spec
			if err := json.Unmarshal(msg.Data(), &spec); err != nil {
				_ = msg.Term()
				continue
			}
			if spec.Runtime = runtimeOf(spec.TaskID); spec.Runtime == "" {
				spec.Runtime = runtimes[0]
			}
			if !slices.Contains(runtimes, spec.Runtime) {
				s.log.Info("queued execution moved to a runtime this node lacks; another node runs it", "execution", spec.ExecutionID, "runtime", spec.Runtime)
			}
			b, _ := json.Marshal(&spec)
			if _, err := s.js.Publish(ctx, queueSubject(&spec), b, jetstream.WithMsgID(msgID(&spec)+"~moved")); err != nil {
				return s.unavailable("migrate queue", err)
			}
			if err := msg.DoubleAck(ctx); err != nil {
				return s.unavailable("migrate queue", err)
			}
		}
		if n == 0 {
			return nil
		}
	}
}

// HandBack gives a delivered execution back to the queue for redelivery
// at once and waits until JetStream confirms it: a node that stops right
// after (and its embedded server with it) does not lose the hand-back, so
// the next worker gets the execution at once, not after the ack wait.
//
// A NAK with a delay is what JetStream stores (as the delivery's time, set
// back by the ack wait); a plain NAK only queues the message in memory, so
// after a restart it would wait for the ack wait from its first delivery.
func (s *Workers) HandBack(ctx context.Context, d *Delivery) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.nc.RequestWithContext(ctx, d.msg.Reply(), []byte(`-NAK {"delay":1000000}`)); err != nil {
		return unavailable("nak queued execution", err)
	}
	return nil
}

// Fetch takes up to n executions from the opened sources, highest band
// first, without waiting (a one-off take; the dispatcher uses Take).
func (s *Workers) Fetch(n int, handle func(*Delivery)) error {
	for _, src := range s.opened() {
		got, err := s.Take(src, n, handle)
		if err != nil {
			return err
		}
		if n -= got; n <= 0 {
			return nil
		}
	}
	return nil
}

// opened returns the sources Workers.Open opened (none before).
func (s *core) opened() []*Source {
	if p := s.sources.Load(); p != nil {
		return *p
	}
	return nil
}

// delivery decodes a queue message; one that cannot be decoded is
// terminated (it would fail again on every delivery) and nil returned.
func (s *Workers) delivery(msg jetstream.Msg) *Delivery {
	var spec execution.Spec
	if err := json.Unmarshal(msg.Data(), &spec); err != nil || spec.ExecutionID == "" {
		s.log.Error("dropping undecodable queue message", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return nil
	}
	attempt := 1
	if md, err := msg.Metadata(); err == nil {
		attempt = int(md.NumDelivered)
	}
	return &Delivery{Spec: &spec, Attempt: attempt, msg: msg}
}

// AckWait is the queue's redelivery timeout.
func (s *Workers) AckWait() time.Duration { return s.opts.AckWait }

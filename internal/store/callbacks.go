package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The callback outbox: a completion callback that is due is a message in a
// work-queue stream until a node has delivered it (or given up) and recorded
// the outcome on the execution's record; only then is it acked. A callback
// in flight when its node dies is delivered by the node that takes the
// message next. Delivery is at least once: a receiver may see a callback
// again after a crash (the execution id identifies it).
const (
	StreamCallbacks   = "SPEAR_CALLBACKS"
	ConsumerCallbacks = "spear_callbacks"
	callbackSubject   = "spear.callbacks."
)

// DueCallback is a completion callback to deliver.
type DueCallback struct {
	ExecutionID string `json:"execution_id"`
	// Attempts is the execution's attempt count when it finished: a rerun
	// (RequeueExecution) owes a callback of its own.
	Attempts int32  `json:"attempts"`
	URL      string `json:"url"`
	Body     []byte `json:"body"`
}

// CallbackDelivery is a due callback taken from the outbox. End it with Ack
// once its outcome is recorded; until then it comes back after the ack wait.
type CallbackDelivery struct {
	DueCallback
	msg jetstream.Msg
}

// Ack removes the callback from the outbox.
func (d *CallbackDelivery) Ack() error {
	if err := d.msg.Ack(); err != nil {
		return unavailable("ack callback", err)
	}
	return nil
}

// InProgress keeps the callback with this node while it is being delivered.
func (d *CallbackDelivery) InProgress() error { return d.msg.InProgress() }

func (s *provisioner) provisionCallbacks(ctx context.Context) error {
	st, err := s.ensureStream(ctx, jetstream.StreamConfig{
		Name:       StreamCallbacks,
		Subjects:   []string{callbackSubject + ">"},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   s.opts.Replicas,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("callback stream: %w", err)
	}
	s.callbacks, err = ensureConsumer(ctx, st, jetstream.ConsumerConfig{
		Durable:   ConsumerCallbacks,
		AckPolicy: jetstream.AckExplicitPolicy,
		AckWait:   s.opts.AckWait,
	})
	if err != nil {
		return fmt.Errorf("callback consumer: %w", err)
	}
	return nil
}

// QueueCallback puts a due callback in the outbox; the same execution
// attempt queued twice is stored once.
func (s *Callbacks) Queue(ctx context.Context, due DueCallback) error {
	b, err := json.Marshal(due)
	if err != nil {
		return fmt.Errorf("encode callback: %w", err)
	}
	msg := &nats.Msg{Subject: callbackSubject + due.ExecutionID, Data: b, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("cb-%s-%d", due.ExecutionID, due.Attempts))
	if _, err := request(s.core, ctx, true, func(ctx context.Context) (*jetstream.PubAck, error) { return s.js.PublishMsg(ctx, msg) }); err != nil {
		return s.unavailable("queue callback", err)
	}
	return nil
}

// CallbackStream hands out due callbacks, keeping at most buffer of them
// fetched ahead.
type CallbackStream struct {
	it  jetstream.MessagesContext
	log func(msg string, args ...any)
}

// DueCallbacks starts a flow of due callbacks; Stop it when done.
func (s *Callbacks) Due(buffer int) (*CallbackStream, error) {
	it, err := s.callbacks.Messages(jetstream.PullMaxMessages(buffer))
	if err != nil {
		return nil, s.unavailable("consume callbacks", err)
	}
	return &CallbackStream{it: it, log: s.log.Error}, nil
}

// Next returns the next due callback, waiting until ctx ends. A message that
// cannot be decoded is terminated and skipped.
func (cs *CallbackStream) Next(ctx context.Context) (*CallbackDelivery, error) {
	for {
		msg, err := cs.it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, unavailable("consume callbacks", err)
		}
		d := &CallbackDelivery{msg: msg}
		if err := json.Unmarshal(msg.Data(), &d.DueCallback); err != nil || d.ExecutionID == "" || d.URL == "" {
			cs.log("dropping undecodable callback message", "subject", msg.Subject(), "err", err)
			_ = msg.Term()
			continue
		}
		return d, nil
	}
}

// Stop ends the flow; callbacks fetched ahead come back after the ack wait.
func (cs *CallbackStream) Stop() { cs.it.Stop() }

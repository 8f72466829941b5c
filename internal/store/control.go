package store

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Control carries requests between nodes over core NATS (not JetStream:
// nothing is kept): today, a cancel for an execution that runs on another
// node, answered by the node that runs it.
type Control struct{ *core }

// CancelHandler answers a cancel request for execution id: it calls
// respond with the answer, or never (the execution is not live there).
type CancelHandler func(id string, body []byte, respond func([]byte))

// ServeCancels answers cancel requests until stop is called.
func (s *Control) ServeCancels(handle CancelHandler) (stop func(), err error) {
	sub, err := s.nc.Subscribe(CancelSubjectBase+"*", func(msg *nats.Msg) {
		handle(msg.Subject[len(CancelSubjectBase):], msg.Data, func(b []byte) { _ = msg.Respond(b) })
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to cancel requests: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// RequestCancel asks the node that runs execution id to cancel it, and
// returns its answer; an error when no node answers within ctx.
func (s *Control) RequestCancel(ctx context.Context, id string, body []byte) ([]byte, error) {
	msg, err := s.nc.RequestWithContext(ctx, CancelSubjectBase+id, body)
	if err != nil {
		return nil, err
	}
	return msg.Data, nil
}

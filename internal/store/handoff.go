package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// RunSubjectBase prefixes the core NATS subject on which a node takes the
// sync and stream runs other nodes hand to it directly:
// spear.run.<node id>.
const RunSubjectBase = "spear.run."

// Hand-off message kinds: the Spear-Kind header of each message the
// running node sends to the offering node's inbox.
const (
	HandoffAccepted = "accepted" // it runs it (first message)
	HandoffRefused  = "refused"  // it does not (first message; Data: why)
	HandoffChunk    = "chunk"    // a piece of output (Seq from 0)
	HandoffAlive    = "alive"    // still running; answer with Ack
	HandoffFinal    = "final"    // the final record (empty: read it from the store)
	HandoffFailed   = "failed"   // it could not start it after all (Data: why)
)

const (
	kindHeader = "Spear-Kind"
	seqHeader  = "Spear-Seq"
	// handoffPending is how many messages an offering node buffers; the
	// running node waits for an answer to an alive message every few
	// chunks (flow control), so it stays far below. Beyond it messages
	// are dropped: a gap the offering node sees by Seq and fills from the
	// chunk stream.
	handoffPending = 1024
)

// ErrNoRunner says no node listens where a run was offered or where an
// alive message went: the node, or the waiting caller, is gone.
var ErrNoRunner = errors.New("no node listens")

// HandoffMsg is one message from the node running a handed-on execution.
type HandoffMsg struct {
	Kind string
	Seq  int64
	Data []byte
	msg  *nats.Msg
}

// Ack answers an alive message: the offering node still waits.
func (m HandoffMsg) Ack() {
	if m.msg != nil && m.msg.Reply != "" {
		_ = m.msg.Respond(nil)
	}
}

// Handoff is a run offered to another node, seen from the offering node.
type Handoff struct {
	msgs chan *nats.Msg
	sub  *nats.Subscription
}

// Next returns the next message from the running node, ErrNoRunner when
// no node listened to the offer, or ctx's error.
// A message already there comes before ctx's end.
func (h *Handoff) Next(ctx context.Context) (HandoffMsg, error) {
	var m *nats.Msg
	select {
	case m = <-h.msgs:
	default:
		select {
		case <-ctx.Done():
			return HandoffMsg{}, ctx.Err()
		case m = <-h.msgs:
		}
	}
	if m.Header.Get("Status") == "503" { // no responders
		return HandoffMsg{}, ErrNoRunner
	}
	seq, _ := strconv.ParseInt(m.Header.Get(seqHeader), 10, 64)
	return HandoffMsg{Kind: m.Header.Get(kindHeader), Seq: seq, Data: m.Data, msg: m}, nil
}

// Close stops listening; the running node's next alive message finds
// nobody (ErrNoRunner) and it stops the run.
func (h *Handoff) Close() { _ = h.sub.Unsubscribe() }

// OfferRun offers a run (body: the spec, encoded by the caller) to node
// nodeID. The answers come through the returned Handoff.
func (s *Control) OfferRun(nodeID string, body []byte) (*Handoff, error) {
	inbox := s.nc.NewInbox()
	h := &Handoff{msgs: make(chan *nats.Msg, handoffPending)}
	sub, err := s.nc.ChanSubscribe(inbox, h.msgs)
	if err != nil {
		return nil, unavailable("listen for a hand-off's answers", err)
	}
	h.sub = sub
	m := &nats.Msg{Subject: RunSubjectBase + nodeID, Reply: inbox, Data: body, Header: nats.Header{}}
	if err := s.nc.PublishMsg(m); err != nil {
		h.Close()
		return nil, unavailable("hand a run on", err)
	}
	return h, nil
}

// RunOffer is a run another node offers this one.
type RunOffer struct {
	Body  []byte
	nc    *nats.Conn
	reply string
}

// Send sends a message to the offering node.
func (o *RunOffer) Send(kind string, seq int64, data []byte) error {
	m := &nats.Msg{Subject: o.reply, Data: data, Header: nats.Header{kindHeader: {kind}}}
	if kind == HandoffChunk {
		m.Header.Set(seqHeader, strconv.FormatInt(seq, 10))
	}
	if err := o.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("answer a hand-off: %w", err)
	}
	return nil
}

// Alive tells the offering node the run goes on; ErrNoRunner says it
// stopped listening (it left, or gave the run up as lost).
func (o *RunOffer) Alive(ctx context.Context) error {
	m := &nats.Msg{Subject: o.reply, Header: nats.Header{kindHeader: {HandoffAlive}}}
	_, err := o.nc.RequestMsgWithContext(ctx, m)
	if errors.Is(err, nats.ErrNoResponders) {
		return ErrNoRunner
	}
	return err
}

// ServeRuns hands the runs other nodes offer node nodeID to handle, until
// stop is called.
func (s *Control) ServeRuns(nodeID string, handle func(*RunOffer)) (stop func(), err error) {
	sub, err := s.nc.Subscribe(RunSubjectBase+nodeID, func(m *nats.Msg) {
		if m.Reply != "" {
			handle(&RunOffer{Body: m.Data, nc: s.nc, reply: m.Reply})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to handed-on runs: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

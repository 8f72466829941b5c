package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Output chunks of async and stream executions are kept in the stream
// SPEAR_CHUNKS, one subject per execution, for the record retention, at most
// MaxChunks per execution (the oldest go first), so that a client can
// attach to an execution — running or finished, on any node — and get its
// output from the first chunk.
const (
	StreamChunks     = "SPEAR_CHUNKS"
	chunkSubjectBase = "spear.chunks."
	headerSeq        = "Spear-Seq"
	headerEnd        = "Spear-End" // the last message: the number of chunks
)

func (s *Store) provisionChunks(ctx context.Context) error {
	var err error
	s.chunks, err = s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              StreamChunks,
		Subjects:          []string{chunkSubjectBase + ">"},
		Storage:           jetstream.FileStorage,
		Replicas:          s.opts.Replicas,
		MaxAge:            s.opts.Retention,
		MaxMsgsPerSubject: int64(s.opts.MaxChunks),
		Discard:           jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("chunk stream: %w", err)
	}
	return nil
}

// PublishChunk stores one output chunk without waiting for it to be
// acknowledged (a lost chunk only shortens a replay; the record keeps the
// whole output).
func (s *Store) PublishChunk(id string, seq int64, data []byte) {
	msg := &nats.Msg{Subject: chunkSubjectBase + id, Data: data, Header: nats.Header{headerSeq: []string{strconv.FormatInt(seq, 10)}}}
	if _, err := s.js.PublishMsgAsync(msg); err != nil {
		s.log.Debug("storing an output chunk", "execution", id, "err", err)
	}
}

// PublishChunksEnd marks the end of an execution's output, after count
// chunks.
func (s *Store) PublishChunksEnd(id string, count int64) {
	msg := &nats.Msg{Subject: chunkSubjectBase + id, Header: nats.Header{headerEnd: []string{strconv.FormatInt(count, 10)}}}
	if _, err := s.js.PublishMsgAsync(msg); err != nil {
		s.log.Debug("storing the end of output", "execution", id, "err", err)
	}
}

// ErrNoChunks says an execution has no stored output chunks.
var ErrNoChunks = errors.New("no stored output chunks")

// ReadChunks delivers an execution's stored chunks from the first, then
// follows new ones as they are stored, until the end mark (it returns nil)
// or ctx ends. While nothing arrives, idle is called every poll interval;
// when it returns true, reading stops (the execution ended without an end
// mark, e.g. its node died).
func (s *Store) ReadChunks(ctx context.Context, id string, poll time.Duration, idle func() bool, fn func(seq int64, data []byte) error) error {
	cons, err := s.js.OrderedConsumer(ctx, StreamChunks, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{chunkSubjectBase + id},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return unavailable("read output chunks", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return unavailable("read output chunks", err)
	}
	defer it.Stop()
	for {
		nctx, cancel := context.WithTimeout(ctx, poll)
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
				if idle() {
					return nil
				}
				continue
			}
			return unavailable("read output chunks", err)
		}
		_ = msg.Ack()
		if msg.Headers().Get(headerEnd) != "" {
			return nil
		}
		seq, _ := strconv.ParseInt(msg.Headers().Get(headerSeq), 10, 64)
		if err := fn(seq, msg.Data()); err != nil {
			return err
		}
	}
}

// DeleteChunks drops an execution's stored chunks.
func (s *Store) DeleteChunks(ctx context.Context, id string) error {
	if err := s.chunks.Purge(ctx, jetstream.WithPurgeSubject(chunkSubjectBase+id)); err != nil {
		return unavailable("delete output chunks", err)
	}
	return nil
}

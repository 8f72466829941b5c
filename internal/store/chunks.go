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

// Output is kept in the stream SPEAR_CHUNKS, one subject per execution, for
// the record retention: every chunk of async and stream executions, and of
// sync executions whose output is larger than a record keeps
// (Sizes.Inline). A client can attach to an execution — running or
// finished, on any node — and get its whole output from the first chunk;
// for a large output it is the only place the whole of it is kept. No chunk
// is dropped: an execution's output is bounded by the output limit, each
// chunk by Sizes.Block.
const (
	StreamChunks     = "SPEAR_CHUNKS"
	chunkSubjectBase = "spear.chunks."
	headerSeq        = "Spear-Seq"
	headerEnd        = "Spear-End" // the last message: the number of chunks
)

func (s *provisioner) provisionChunks(ctx context.Context) error {
	var err error
	s.chunks, err = s.ensureStream(ctx, jetstream.StreamConfig{
		Name:              StreamChunks,
		Subjects:          []string{chunkSubjectBase + ">"},
		Storage:           jetstream.FileStorage,
		Replicas:          s.opts.Replicas,
		MaxAge:            s.opts.Retention,
		MaxMsgsPerSubject: -1,
		Discard:           jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("chunk stream: %w", err)
	}
	return nil
}

// OutputWriter stores one execution's output chunks, publishing ahead of
// the acknowledgements but never more than a window of bytes, so a fast
// function is slowed to the store's pace instead of filling memory.
type OutputWriter struct {
	s       *Outputs
	subject string
	futs    []pendingChunk
	pending int
	err     error
}

type pendingChunk struct {
	fut  jetstream.PubAckFuture
	size int
}

// outputWindow is how many bytes of output may await acknowledgement.
const outputWindow = 4 << 20

// NewOutputWriter returns a writer of execution id's output.
func (s *Outputs) NewWriter(id string) *OutputWriter {
	return &OutputWriter{s: s, subject: chunkSubjectBase + id}
}

// Write stores chunk seq (at most Sizes.Block bytes). After a failure it
// does nothing; Close reports the failure.
func (w *OutputWriter) Write(ctx context.Context, seq int64, data []byte) {
	if w.err != nil {
		return
	}
	if w.err = w.s.usage.allowOutput(len(data)); w.err != nil {
		return
	}
	msg := &nats.Msg{Subject: w.subject, Data: data, Header: nats.Header{headerSeq: []string{strconv.FormatInt(seq, 10)}}}
	f, err := w.s.js.PublishMsgAsync(msg)
	if err != nil {
		w.s.usage.outputLanded(len(data))
		w.err = unavailable("store output", err)
		return
	}
	w.futs = append(w.futs, pendingChunk{f, len(data)})
	w.pending += len(data)
	for w.pending > outputWindow && w.err == nil {
		w.awaitOldest(ctx)
	}
}

func (w *OutputWriter) awaitOldest(ctx context.Context) {
	p := w.futs[0]
	w.futs = w.futs[1:]
	w.pending -= p.size
	err := w.s.awaitAll(ctx, []jetstream.PubAckFuture{p.fut}, "store output")
	w.s.usage.outputLanded(p.size)
	if err != nil {
		w.err = err
	}
}

// Close marks the end of the output, after count chunks, and waits until
// every chunk is stored: nil means the whole output is durable.
func (w *OutputWriter) Close(ctx context.Context, count int64) error {
	if w.err == nil {
		msg := &nats.Msg{Subject: w.subject, Header: nats.Header{headerEnd: []string{strconv.FormatInt(count, 10)}}}
		f, err := w.s.js.PublishMsgAsync(msg)
		if err != nil {
			w.err = unavailable("store output", err)
		} else {
			w.futs = append(w.futs, pendingChunk{fut: f})
		}
	}
	for len(w.futs) > 0 && w.err == nil {
		w.awaitOldest(ctx)
	}
	for _, p := range w.futs { // abandoned after a failure
		w.s.usage.outputLanded(p.size)
	}
	w.futs = nil
	return w.err
}

// ErrNoChunks says an execution has no stored output chunks.
var ErrNoChunks = errors.New("no stored output chunks")

// ErrNoEndMark says a read of stored chunks stopped, as its idle function
// asked, before the end mark: what it delivered may be only a part.
var ErrNoEndMark = errors.New("output chunks read without their end mark")

// Read delivers an execution's stored chunks from the first, then follows
// new ones as they are stored, until the end mark (it returns nil) or ctx
// ends. While nothing arrives, idle is called every poll interval; when it
// returns true, reading stops with ErrNoEndMark (the execution ended
// without an end mark, e.g. its node died). A slow store is not an end:
// only idle decides.
func (s *Outputs) Read(ctx context.Context, id string, poll time.Duration, idle func() bool, fn func(seq int64, data []byte) error) error {
	if err := s.quorum.check(); err != nil {
		return s.unavailable("read output chunks", err)
	}
	cons, err := s.js.OrderedConsumer(ctx, StreamChunks, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{chunkSubjectBase + id},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		// Reaped soon after its reader is gone (the default keeps an
		// ephemeral consumer, and its server goroutines, for 5 minutes).
		InactiveThreshold: 5 * time.Second,
	})
	if err != nil {
		return s.unavailable("read output chunks", err)
	}
	defer s.dropConsumer(StreamChunks, cons)
	it, err := cons.Messages()
	if err != nil {
		return s.unavailable("read output chunks", err)
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
					return ErrNoEndMark
				}
				continue
			}
			return s.unavailable("read output chunks", err)
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

// dropConsumer deletes a reader's ordered consumer once it is done with it.
func (s *Outputs) dropConsumer(stream string, cons jetstream.Consumer) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if info := cons.CachedInfo(); info != nil {
		_ = s.js.DeleteConsumer(ctx, stream, info.Name)
	}
}

// DeleteChunks drops an execution's stored chunks.
func (s *Outputs) Delete(ctx context.Context, id string) error {
	// Bounded whatever the caller's deadline (a run's can be an hour): a
	// request sent while the stream elects a leader is never answered.
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if err := s.chunks.Purge(ctx, jetstream.WithPurgeSubject(chunkSubjectBase+id)); err != nil {
		return s.unavailable("delete output chunks", err)
	}
	return nil
}

// errEnough stops ReadHead's read once it has what it wants.
var errEnough = errors.New("enough output read")

// headStall bounds how long ReadHead waits for a chunk: the output is
// stored (the caller knows it), so only a store that cannot deliver it
// stalls that long.
const headStall = 30 * time.Second

// ReadHead returns the first n bytes of a finished execution's stored
// output (fewer if it is shorter).
func (s *Outputs) ReadHead(ctx context.Context, id string, n int) ([]byte, error) {
	var out []byte
	const poll = 200 * time.Millisecond
	stalls := 0
	err := s.Read(ctx, id, poll, func() bool {
		stalls++
		return stalls*int(poll) >= int(headStall)
	}, func(_ int64, data []byte) error {
		stalls = 0
		out = append(out, data[:min(len(data), n-len(out))]...)
		if len(out) >= n {
			return errEnough
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrNoEndMark):
		return nil, s.unavailable("read output chunks", fmt.Errorf("no chunk of %s arrived for %v", id, headStall))
	case err != nil && !errors.Is(err, errEnough):
		return nil, err
	}
	return out, nil
}

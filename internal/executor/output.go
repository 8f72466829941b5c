package executor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"sync"
	"time"
)

// chunkWriter stores an execution's output chunks (store.OutputWriter).
type chunkWriter interface {
	Write(ctx context.Context, seq int64, data []byte)
	Close(ctx context.Context, count int64) error
}

// outputSink takes a function's standard output. It cuts it into chunks of
// at most block bytes, numbered from 0; keeps the first headLimit bytes in
// memory; stores the chunks through a chunkWriter — from the first chunk
// when storeAll, else once the output outgrows the head or has been
// written for storeAfter (so the small outputs of short runs cost no
// store write); passes each chunk on as it arrives; and
// lets watchers attach while every chunk so far is in memory. Memory is
// bounded by the head, the writer's window and the watchers' buffers,
// whatever the output's size.
type outputSink struct {
	wmu sync.Mutex // one writer at a time: chunks keep their order

	mu         sync.Mutex
	head       []byte
	ends       []int // end offset in head of each chunk, while replayable
	replayable bool  // every chunk so far is in head
	total      int64
	count      int64
	sum        hash.Hash
	w          chunkWriter
	over       bool
	closed     bool
	watchers   map[chan Chunk]struct{}
	// storeNow says the chunks are stored from now on (cfg.storeAfter
	// passed); storeTimer is its timer.
	storeNow   bool
	storeTimer *time.Timer

	cfg sinkConfig
}

// sinkConfig is what an outputSink is made with.
type sinkConfig struct {
	ctx       context.Context // bounds store writes
	headLimit int
	block     int
	limit     int64 // output beyond it is refused: overflow is called
	storeAll  bool
	// storeAfter, when set, stores the chunks once the output has been
	// written to for that long, even if it fits the head: an execution
	// that runs longer can be attached to from any node.
	storeAfter time.Duration
	newWriter  func() chunkWriter // nil: nothing is stored
	onChunk    func(Chunk)        // may be nil
	overflow   func()             // called once when the limit is passed
}

// outputSummary is the output of a finished run.
type outputSummary struct {
	head     []byte
	size     int64
	sha256   string
	stored   bool  // the chunk stream holds every chunk
	storeErr error // why storing failed, if it did
}

// watcherBuffer is how far a watcher may fall behind before it is dropped.
const watcherBuffer = 1024

func newOutputSink(cfg sinkConfig) *outputSink {
	o := &outputSink{cfg: cfg, replayable: true, sum: sha256.New()}
	if cfg.storeAfter > 0 && !cfg.storeAll && cfg.newWriter != nil {
		o.storeTimer = time.AfterFunc(cfg.storeAfter, o.startStoring)
	}
	return o
}

// startStoring stores the chunks so far, and every later one.
func (o *outputSink) startStoring() {
	o.wmu.Lock() // between two writes: the chunks stay in order
	defer o.wmu.Unlock()
	o.mu.Lock()
	if o.closed || o.w != nil {
		o.mu.Unlock()
		return
	}
	o.storeNow = true
	var past []Chunk
	if o.count > 0 {
		o.w, past = o.cfg.newWriter(), o.chunksLocked()
	}
	w := o.w
	o.mu.Unlock()
	for _, c := range past {
		w.Write(o.cfg.ctx, c.Seq, c.Data)
	}
}

func (o *outputSink) Write(p []byte) (int, error) {
	o.wmu.Lock()
	defer o.wmu.Unlock()
	for rest := p; len(rest) > 0; {
		c := rest[:min(len(rest), o.cfg.block)]
		rest = rest[len(c):]
		if !o.add(c) {
			break
		}
	}
	return len(p), nil
}

// add takes one chunk; false once the output is over its limit.
func (o *outputSink) add(c []byte) bool {
	o.mu.Lock()
	if o.over {
		o.mu.Unlock()
		return false
	}
	if o.total+int64(len(c)) > o.cfg.limit {
		o.over = true
		o.mu.Unlock()
		o.cfg.overflow()
		return false
	}
	seq := o.count
	o.count++
	o.total += int64(len(c))
	o.sum.Write(c)
	var past []Chunk
	if o.w == nil && o.cfg.newWriter != nil && (o.cfg.storeAll || o.storeNow || o.total > int64(o.cfg.headLimit)) {
		o.w, past = o.cfg.newWriter(), o.chunksLocked()
	}
	o.keep(c)
	o.fanOut(Chunk{Seq: seq, Data: c})
	w := o.w
	o.mu.Unlock()
	for _, pc := range past {
		w.Write(o.cfg.ctx, pc.Seq, pc.Data)
	}
	if w != nil {
		w.Write(o.cfg.ctx, seq, bytes.Clone(c))
	}
	if o.cfg.onChunk != nil {
		o.cfg.onChunk(Chunk{Seq: seq, Data: bytes.Clone(c)})
	}
	return true
}

// keep adds c to the head, as much of it as fits.
func (o *outputSink) keep(c []byte) {
	if o.replayable && len(o.head)+len(c) <= o.cfg.headLimit {
		o.head = append(o.head, c...)
		o.ends = append(o.ends, len(o.head))
		return
	}
	o.replayable, o.ends = false, nil
	room := o.cfg.headLimit - len(o.head)
	o.head = append(o.head, c[:min(room, len(c))]...)
}

// fanOut passes a chunk to the watchers; one too far behind is dropped
// rather than stall the function.
func (o *outputSink) fanOut(c Chunk) {
	if len(o.watchers) == 0 {
		return
	}
	c.Data = bytes.Clone(c.Data)
	for w := range o.watchers {
		select {
		case w <- c:
		default:
			delete(o.watchers, w)
			close(w)
		}
	}
}

// chunksLocked copies the chunks in the head; o.mu is held.
func (o *outputSink) chunksLocked() []Chunk {
	out := make([]Chunk, len(o.ends))
	start := 0
	for i, end := range o.ends {
		out[i] = Chunk{Seq: int64(i), Data: bytes.Clone(o.head[start:end])}
		start = end
	}
	return out
}

// watch returns the chunks so far and, unless the output is complete, a
// channel of the following ones, closed at the end (or when the watcher
// falls too far behind: then fewer chunks than the total arrive). ok is
// false when the early chunks are no longer in memory: the watcher reads
// them from the store.
func (o *outputSink) watch() (past []Chunk, more chan Chunk, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.replayable {
		return nil, nil, false
	}
	past = o.chunksLocked()
	if o.closed {
		return past, nil, true
	}
	more = make(chan Chunk, watcherBuffer)
	if o.watchers == nil {
		o.watchers = map[chan Chunk]struct{}{}
	}
	o.watchers[more] = struct{}{}
	return past, more, true
}

func (o *outputSink) unwatch(w chan Chunk) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.watchers[w]; ok {
		delete(o.watchers, w)
		close(w)
	}
}

// finish ends the output: watchers' channels are closed and the stored
// chunks, if any, made durable (bounded by ctx).
func (o *outputSink) finish(ctx context.Context) outputSummary {
	if o.storeTimer != nil {
		o.storeTimer.Stop()
	}
	o.wmu.Lock() // no write in progress
	defer o.wmu.Unlock()
	o.mu.Lock()
	o.closed = true
	for w := range o.watchers {
		close(w)
	}
	o.watchers = nil
	s := outputSummary{head: o.head, size: o.total, sha256: hex.EncodeToString(o.sum.Sum(nil))}
	w, count := o.w, o.count
	o.mu.Unlock()
	if w != nil {
		s.storeErr = w.Close(ctx, count)
		s.stored = s.storeErr == nil
	}
	return s
}

// bytes returns the head: the output so far, up to headLimit bytes.
func (o *outputSink) bytes() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return bytes.Clone(o.head)
}

// overflowed reports whether the output passed its limit.
func (o *outputSink) overflowed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.over
}

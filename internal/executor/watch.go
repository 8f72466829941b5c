package executor

import (
	"context"
	"errors"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/store"
)

// Attach follows an existing execution's output: every chunk from the
// first, exactly once and in order (the early ones replayed), then the new
// ones as they are written, until the execution ends. It returns the final
// record (or the latest one, if ctx ends first). Chunks come from memory
// while the execution runs here and its output so far is all in memory,
// else from the chunk stream, else (a small sync output) from the record.
func (m *Views) Attach(ctx context.Context, id string, send func(Chunk) error) (*execution.Record, error) {
	if err := execution.ValidateID(id); err != nil {
		return nil, err
	}
	if l := m.liveOf(id); l == nil {
		if rec, err := m.Get(ctx, id); err == nil && rec.Graph != nil {
			return m.graphs.attachGraph(ctx, rec, send)
		}
	}
	a := &attachment{m: m, id: id, send: send}
	for {
		stored := false
		if l := m.liveOf(id); l != nil {
			rec, step, err := a.fromMemory(ctx, l)
			switch {
			case err != nil || step == attachDone:
				return rec, err
			case step == attachAgain:
				continue
			}
			stored = true // the output outgrew memory: it is in the store
		}
		rec, step, err := a.fromStore(ctx, stored)
		if err != nil || step == attachDone {
			return rec, err
		}
	}
}

// attachment is one client following one execution's output.
type attachment struct {
	m    *Views
	id   string
	send func(Chunk) error
	next int64 // the next chunk to send
	// stalls counts reads of stored chunks that found nothing new in a row.
	stalls int
}

// attachStep says how an attachment goes on.
type attachStep int

const (
	attachDone  attachStep = iota // the execution ended (or the client left)
	attachAgain                   // look again where the execution is
	attachStore                   // read the chunk stream
)

func (a *attachment) emit(c Chunk) error {
	if c.Seq < a.next {
		return nil // already sent
	}
	a.next = c.Seq + 1
	return a.send(c)
}

// fromMemory follows an execution live on this node.
func (a *attachment) fromMemory(ctx context.Context, l *live) (*execution.Record, attachStep, error) {
	out := l.outputOf()
	if out == nil { // waiting for a slot here
		if err := a.m.pause(ctx, l.done, 20*time.Millisecond); err != nil {
			return l.snapshot(), attachDone, nil
		}
		return nil, attachAgain, nil
	}
	past, more, ok := out.watch()
	if !ok {
		return nil, attachStore, nil
	}
	for _, c := range past {
		if err := a.emit(c); err != nil {
			return nil, attachDone, err
		}
	}
	if more != nil {
		if err := a.m.follow(ctx, out, more, a.emit); err != nil {
			return l.snapshot(), attachDone, err
		}
	}
	// A run that goes back to the queue continues later; the same watcher
	// picks the next attempt up.
	select {
	case <-l.done:
	case <-ctx.Done():
		return l.snapshot(), attachDone, nil
	}
	if r := l.final(); r.Status.Terminal() {
		return r, attachDone, nil
	}
	a.next = 0
	return nil, attachAgain, nil
}

// fromStore follows an execution through the store: its stored chunks,
// followed live until the end mark, or the output its record keeps.
// stored says the chunks are known to be stored (else a sync execution's
// are only once its record says so).
func (a *attachment) fromStore(ctx context.Context, stored bool) (*execution.Record, attachStep, error) {
	m := a.m
	rec, err := m.Get(ctx, a.id)
	if err != nil {
		return nil, attachDone, err
	}
	if rec.Mode == execution.ModeSync && !stored && !rec.OutputStored {
		if !rec.Status.Terminal() {
			if err := m.pause(ctx, nil, 50*time.Millisecond); err != nil {
				return rec, attachDone, nil
			}
			return nil, attachAgain, nil
		}
		return a.finalFromRecord(rec)
	}
	err = m.store.Outputs.Read(ctx, a.id, attachPoll, a.idle(ctx), func(seq int64, data []byte) error {
		a.stalls = 0
		return a.emit(Chunk{Seq: seq, Data: data})
	})
	if errors.Is(err, store.ErrNoEndMark) {
		err = a.incomplete(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return rec, attachDone, nil
		}
		return nil, attachDone, err
	}
	if l := m.liveOf(a.id); l != nil { // finishing here
		if err := m.pause(ctx, l.done, time.Minute); err != nil {
			return l.snapshot(), attachDone, nil
		}
	}
	final, err := m.Get(ctx, a.id)
	if err != nil {
		return nil, attachDone, err
	}
	if !final.Status.Terminal() {
		return nil, attachAgain, nil // queued again (a retry): follow the next attempt
	}
	return a.finalFromRecord(final)
}

// attachPoll is how often a reader of stored chunks that waits for more
// looks at the record; defaultAttachStall bounds how long it waits for the
// rest of an output the record says is stored whole (a slow store is not
// an end of output).
const (
	attachPoll         = 500 * time.Millisecond
	defaultAttachStall = time.Minute
)

// idle tells Outputs.Read when to stop waiting for chunks: when the
// execution is gone or ended without its whole output stored; for one
// whose output is stored whole (its end mark is there), only after
// core.attachStall without a chunk.
func (a *attachment) idle(ctx context.Context) func() bool {
	return func() bool {
		r, err := a.m.Get(ctx, a.id)
		switch {
		case err != nil:
			return true
		case !r.Status.Terminal():
			return false
		case r.OutputStored && !r.OutputDropped:
			a.stalls++
			return time.Duration(a.stalls)*attachPoll >= a.m.attachStall
		}
		return true
	}
}

// incomplete is the error of a read of stored chunks that stopped without
// the end mark: none when the record does not claim the whole output is
// stored (the record's first part is the answer), else UNAVAILABLE rather
// than a silently cut output.
func (a *attachment) incomplete(ctx context.Context) error {
	r, err := a.m.Get(ctx, a.id)
	if err != nil || !r.OutputStored || r.OutputDropped {
		return nil
	}
	return errdefs.Unavailable.New("the stored output of %s could not be read whole (no chunk for %v); try again", a.id, a.m.attachStall)
}

// finalFromRecord ends an attachment with a terminal record, sending the
// output it keeps if nothing was sent (nothing stored: a small sync output,
// or an expired chunk stream).
func (a *attachment) finalFromRecord(rec *execution.Record) (*execution.Record, attachStep, error) {
	if a.next == 0 && len(rec.Output) > 0 {
		if err := a.emit(Chunk{Seq: 0, Data: rec.Output}); err != nil {
			return nil, attachDone, err
		}
	}
	return rec, attachDone, nil
}

// follow sends a live execution's chunks until its output ends.
func (m *Views) follow(ctx context.Context, out *outputSink, more chan Chunk, emit func(Chunk) error) error {
	defer out.unwatch(more)
	for {
		select {
		case c, ok := <-more:
			if !ok {
				return nil
			}
			if err := emit(c); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Watch sends an execution's status as it changes: first its current
// record, then one per transition, the last one terminal.
func (m *Views) Watch(ctx context.Context, id string, send func(*execution.Record) error) error {
	if err := execution.ValidateID(id); err != nil {
		return err
	}
	changes, stop, err := m.store.Records.Changes(id)
	if err == nil {
		defer stop()
	}
	var last execution.Status
	lastAttempts := int32(-1)
	for {
		rec, err := m.Get(ctx, id)
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return nil
			}
			return err
		}
		if rec.Status != last || rec.Attempts != lastAttempts {
			last, lastAttempts = rec.Status, rec.Attempts
			if err := send(rec); err != nil {
				return err
			}
		}
		if rec.Status.Terminal() {
			return nil
		}
		if err := m.awaitChange(ctx, id, changes); err != nil {
			return nil
		}
	}
}

// awaitChange waits until execution id's record may have changed: it was
// written (changes), its run here ended, or, should a write go unseen,
// waitRecheck passed; a run live here is also looked at every 20 ms (its
// RUNNING record is not rewritten as it runs). It returns ctx's error if
// ctx ended.
func (m *Views) awaitChange(ctx context.Context, id string, changes <-chan *execution.Record) error {
	var done <-chan struct{}
	wait := waitRecheck
	if l := m.liveOf(id); l != nil {
		done, wait = l.done, 20*time.Millisecond
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-changes:
	case <-done:
	case <-t.C:
	}
	return nil
}

// pause waits for d, done or ctx, whichever comes first; it returns ctx's
// error if ctx ended.
func (m *Views) pause(ctx context.Context, done <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
	case <-t.C:
	}
	return nil
}

func (m *Views) liveOf(id string) *live {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live[id]
}

func (l *live) outputOf() *outputSink {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.output
}

// Exists reports whether execution id exists (live here or stored).
func (m *Views) Exists(ctx context.Context, id string) (bool, error) {
	_, err := m.Get(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

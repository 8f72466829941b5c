package executor

import (
	"context"
	"errors"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
)

// Attach follows an existing execution's output: every chunk from the
// first, exactly once and in order (the early ones replayed), then the new
// ones as they are written, until the execution ends. It returns the final
// record (or the latest one, if ctx ends first).
func (m *Manager) Attach(ctx context.Context, id string, send func(Chunk) error) (*execution.Record, error) {
	if err := execution.ValidateID(id); err != nil {
		return nil, err
	}
	var next int64 // the next chunk to send
	emit := func(c Chunk) error {
		if c.Seq < next {
			return nil // already sent
		}
		next = c.Seq + 1
		return send(c)
	}
	for {
		if l := m.liveOf(id); l != nil {
			out := l.outputOf()
			if out == nil { // waiting for a slot here
				if err := m.pause(ctx, l.done, 20*time.Millisecond); err != nil {
					return l.snapshot(), nil
				}
				continue
			}
			past, more := out.watch()
			for _, c := range past {
				if err := emit(c); err != nil {
					return nil, err
				}
			}
			if more != nil {
				if err := m.follow(ctx, out, more, emit); err != nil {
					return l.snapshot(), err
				}
			}
			// A run that goes back to the queue continues later; the
			// same watcher picks the next attempt up.
			select {
			case <-l.done:
			case <-ctx.Done():
				return l.snapshot(), nil
			}
			r := l.final()
			if r.Status.Terminal() {
				return r, nil
			}
			next = 0
			continue
		}
		rec, err := m.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if rec.Mode == execution.ModeSync {
			// Sync output is kept only in the record.
			if !rec.Status.Terminal() {
				if err := m.pause(ctx, nil, 50*time.Millisecond); err != nil {
					return rec, nil
				}
				continue
			}
			if len(rec.Output) > 0 {
				if err := emit(Chunk{Seq: 0, Data: rec.Output}); err != nil {
					return nil, err
				}
			}
			return rec, nil
		}
		// Async or stream, running elsewhere, queued, or finished: the
		// stored chunks, followed live until the end mark.
		err = m.store.ReadChunks(ctx, id, 500*time.Millisecond, func() bool {
			r, err := m.Get(ctx, id)
			return err != nil || r.Status.Terminal() || m.liveOf(id) != nil
		}, func(seq int64, data []byte) error {
			return emit(Chunk{Seq: seq, Data: data})
		})
		if err != nil {
			if ctx.Err() != nil {
				return rec, nil
			}
			return nil, err
		}
		if m.liveOf(id) != nil {
			continue // it started here meanwhile
		}
		final, err := m.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if !final.Status.Terminal() {
			continue // queued again (a retry): follow the next attempt
		}
		if next == 0 && len(final.Output) > 0 {
			// Nothing stored (expired, or from before chunks were kept).
			if err := emit(Chunk{Seq: 0, Data: final.Output}); err != nil {
				return nil, err
			}
		}
		return final, nil
	}
}

// follow sends a live execution's chunks until its output ends.
func (m *Manager) follow(ctx context.Context, out *outputSink, more chan Chunk, emit func(Chunk) error) error {
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
func (m *Manager) Watch(ctx context.Context, id string, send func(*execution.Record) error) error {
	if err := execution.ValidateID(id); err != nil {
		return err
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
		var done <-chan struct{}
		if l := m.liveOf(id); l != nil {
			done = l.done
		}
		if err := m.pause(ctx, done, 20*time.Millisecond); err != nil {
			return nil
		}
	}
}

// pause waits for d, done or ctx, whichever comes first; it returns ctx's
// error if ctx ended.
func (m *Manager) pause(ctx context.Context, done <-chan struct{}, d time.Duration) error {
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

func (m *Manager) liveOf(id string) *live {
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
func (m *Manager) Exists(ctx context.Context, id string) (bool, error) {
	_, err := m.Get(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

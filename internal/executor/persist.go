package executor

import (
	"context"
	"log/slog"
	"time"

	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/store"
)

// persister writes the final records of sync and stream executions in the
// background, so the caller gets its answer without waiting for the store.
// Until a record is written the execution stays in the live table, so it is
// always visible.
type persister struct {
	store *store.Store
	log   *slog.Logger
	done  func(id string)
	queue chan *execution.Record
}

func newPersister(st *store.Store, log *slog.Logger, done func(id string)) *persister {
	return &persister{store: st, log: log, done: done, queue: make(chan *execution.Record, 4096)}
}

// add queues r for writing; when the queue is full the caller writes it
// (back-pressure rather than unbounded memory).
func (p *persister) add(ctx context.Context, r *execution.Record) {
	select {
	case p.queue <- r:
	default:
		p.write(ctx, r)
	}
}

func (p *persister) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-p.queue:
			p.write(ctx, r)
		}
	}
}

// flush writes whatever is still queued.
func (p *persister) flush(ctx context.Context) {
	for {
		select {
		case r := <-p.queue:
			p.write(ctx, r)
		default:
			return
		}
	}
}

func (p *persister) write(ctx context.Context, r *execution.Record) {
	for attempt := 0; ; attempt++ {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, err := p.store.PutRecord(wctx, r)
		cancel()
		if err == nil || attempt == 4 {
			if err != nil {
				p.log.Error("storing execution record", "execution", r.ID, "task", r.TaskID, "err", err)
			}
			p.done(r.ID)
			return
		}
		time.Sleep(time.Duration(50<<attempt) * time.Millisecond)
	}
}

package executor

import (
	"context"
	"log/slog"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/retry"
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
		p.write(ctx, []*execution.Record{r})
	}
}

// maxBatch bounds the records written in one pipelined round trip;
// gatherFor is how long a batch may wait for more records. Fewer, larger
// batches cost far less than one write per execution, and until its record
// is written an execution stays in the live table, so nothing is hidden.
const (
	maxBatch  = 256
	gatherFor = 5 * time.Millisecond
)

func (p *persister) run(ctx context.Context) {
	batch := make([]*execution.Record, 0, maxBatch)
	timer := time.NewTimer(gatherFor)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-p.queue:
			batch = append(batch[:0], r)
		}
		// Let the batch gather without waking this goroutine for every
		// record (a wake-up per execution cost more than the write).
		timer.Reset(gatherFor)
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-p.queue:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		p.write(ctx, batch)
	}
}

// flush writes whatever is still queued.
func (p *persister) flush(ctx context.Context) {
	for {
		select {
		case r := <-p.queue:
			p.write(ctx, []*execution.Record{r})
		default:
			return
		}
	}
}

// write stores a batch of final records, retrying with backoff; a store
// too full for them gets them without their output's first part and logs
// (size, sha256 and outcome stay), so no execution is lost. Until written,
// they stay in the live table.
func (p *persister) write(ctx context.Context, batch []*execution.Record) {
	err := storeBackoff.Do(context.WithoutCancel(ctx), 20, func(attempt int) error {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err := p.store.Records.PutAll(wctx, batch)
		if err != nil {
			if attempt == 1 {
				p.log.Warn("storing execution records; retrying", "count", len(batch), "first", batch[0].ID, "err", err)
			}
			if errdefs.StorageFull.Is(err) {
				batch = slimmed(batch)
			}
		}
		return err
	})
	if err != nil {
		p.log.Error("storing execution records", "count", len(batch), "first", batch[0].ID, "err", err)
	}
	for _, r := range batch {
		p.done(r.ID)
	}
}

// slimmed returns records without their output's first part and logs:
// what a record keeps when the store has no room for more.
func slimmed(recs []*execution.Record) []*execution.Record {
	out := make([]*execution.Record, len(recs))
	for i, r := range recs {
		c := *r
		c.Output, c.Logs = nil, nil
		out[i] = &c
	}
	return out
}

// storeBackoff spaces the retries of a failed store write: 50 ms
// doubling to 5 s, full jitter.
var storeBackoff = retry.Backoff{Base: 50 * time.Millisecond, Max: 5 * time.Second}

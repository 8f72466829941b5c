package executor

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/store"
)

// TestStatsSharedByNodes: two nodes' stats over one store, each recording
// executions of one task and flushing at the same time: the store's count
// is the sum of both, and each node sees it after a refresh.
func TestStatsSharedByNodes(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	ctx := testCtx(t)
	log := slog.New(slog.DiscardHandler)
	nodes := []*stats{newStats(time.Now), newStats(time.Now)}
	const rounds, perRound = 10, 7
	var wg sync.WaitGroup
	for _, s := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				for range perRound {
					s.record(&execution.Record{TaskID: testTask, Status: execution.StatusCompleted, DurationMs: 3})
				}
				s.flush(ctx, h.st, log)
			}
		}()
	}
	wg.Wait()
	want := int64(len(nodes) * rounds * perRound)
	for i, s := range nodes {
		s.refresh(ctx, h.st)
		if got, status := s.task(testTask); got != want || status != execution.StatusCompleted {
			t.Errorf("node %d sees %d executions (%v), want %d", i, got, status, want)
		}
	}
}

// TestStatsFlushFailing: a store that fails is said once, however many
// flushes fail, and the stats wait for it: none is dropped.
func TestStatsFlushFailing(t *testing.T) {
	st, err := store.Open(testCtx(t), store.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	st.Close() // every write fails from now on
	var warnings atomic.Int32
	log := slog.New(countHandler{slog.LevelWarn, &warnings})
	s := newStats(time.Now)
	for _, id := range []string{"t1", "t2", "t3"} {
		s.record(&execution.Record{TaskID: id, Status: execution.StatusCompleted, DurationMs: 3})
	}
	for range 3 {
		s.flush(testCtx(t), st, log)
	}
	if n := warnings.Load(); n != 1 {
		t.Errorf("%d warnings over 3 failed flushes; want 1", n)
	}
	for _, id := range []string{"t1", "t2", "t3"} {
		if p := s.pending[id]; p == nil || p.Count != 1 {
			t.Errorf("task %s: pending %+v after failed flushes; want its execution kept", id, p)
		}
	}
}

// countHandler counts the records of a level and above.
type countHandler struct {
	level slog.Level
	n     *atomic.Int32
}

func (h countHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h countHandler) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h countHandler) WithGroup(string) slog.Handler                { return h }

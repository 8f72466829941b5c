package executor

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/execution"
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

package executor

import (
	"testing"

	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/testwait"
)

// TestRecentQueueDepth: the queue depth health reports, reused for a
// moment between store round trips, still follows the queue: it comes to
// what the store says as executions queue up and as they leave, and a
// store that stops answering is reported.
func TestRecentQueueDepth(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx := testCtx(t)
	var ids []string
	for range 12 {
		spec := newSpec("sleep", execution.ModeAsync, "")
		if _, _, _, err := h.m.Async.Submit(ctx, spec); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, spec.ExecutionID)
	}
	follows := func(want func(int64) bool) func() bool {
		return func() bool {
			recent, rerr := h.m.RecentQueueDepth(ctx)
			fresh, ferr := h.m.QueueDepth(ctx)
			return rerr == nil && ferr == nil && recent == fresh && want(fresh)
		}
	}
	testwait.Until(t, "the recent depth to show queued executions", follows(func(n int64) bool { return n > 0 }))
	for _, id := range ids {
		if _, err := h.m.Cancels.Cancel(ctx, id, "test", true); err != nil {
			t.Fatal(err)
		}
	}
	testwait.Until(t, "the recent depth to come back to 0", follows(func(n int64) bool { return n == 0 }))

	h.st.Close()
	testwait.Until(t, "the recent depth to report the closed store", func() bool {
		_, err := h.m.RecentQueueDepth(ctx)
		return err != nil
	})
}

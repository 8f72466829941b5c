package store

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
)

func TestNoSpace(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{ErrorCode: 10023, Description: "insufficient resources"}, true},
		{&jetstream.APIError{ErrorCode: 10047}, true},
		{fmt.Errorf("write: %w", errors.New("no space left on device")), true},
		{&jetstream.APIError{ErrorCode: 10059, Description: "stream not found"}, false},
		{errors.New("nats: timeout"), false},
	}
	for _, tc := range tests {
		if got := noSpace(tc.err); got != tc.want {
			t.Errorf("noSpace(%v) = %v, want %v", tc.err, got, tc.want)
		}
		if got := errdefs.CodeOf(unavailable("x", tc.err)) == "STORAGE_FULL"; got != tc.want {
			t.Errorf("unavailable(%v) STORAGE_FULL = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestUsageAdmit(t *testing.T) {
	tests := []struct {
		name          string
		limit, learnt int64
		used          int64
		wantFull      bool
	}{
		{"no budget known", 0, 0, 1 << 40, false},
		{"well under", 100 << 20, 0, 50 << 20, false},
		{"into the reserve", 100 << 20, 0, 91 << 20, true},
		{"learned budget", 0, 64 << 20, 60 << 20, true},
		{"small budget keeps 4 MiB", 16 << 20, 0, 12<<20 + 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := &usage{limit: tc.limit}
			u.learned.Store(tc.learnt)
			u.measured.Store(tc.used)
			err := u.admit()
			if (err != nil) != tc.wantFull || (err != nil && errdefs.CodeOf(err) != "STORAGE_FULL") {
				t.Fatalf("admit = %v, want full %v", err, tc.wantFull)
			}
		})
	}
}

// TestUsageCountsOutputInFlight: output published and not yet
// acknowledged counts against the budget though a measurement taken
// meanwhile does not see it, so many writers at once cannot overshoot.
func TestUsageCountsOutputInFlight(t *testing.T) {
	u := &usage{limit: 100 << 20} // output allowed up to 95 MiB
	for range 9 {
		if err := u.allowOutput(10 << 20); err != nil {
			t.Fatalf("allowOutput under the budget: %v", err)
		}
	}
	u.measured.Store(1 << 20) // a measurement that sees none of it
	if got, want := u.used(), int64(91<<20); got != want {
		t.Fatalf("used = %d, want %d (measured + in flight)", got, want)
	}
	if err := u.allowOutput(10 << 20); !errdefs.StorageFull.Is(err) {
		t.Fatalf("allowOutput past the budget with output in flight: %v, want STORAGE_FULL", err)
	}
	for range 9 {
		u.outputLanded(10 << 20)
	}
	if got := u.used(); got != 1<<20 {
		t.Fatalf("used = %d once all landed, want the measurement", got)
	}
}

// TestReclaim: over 80% of its budget the store drops the stored output
// of finished executions, oldest first, until under 70%; their records stay
// (marked), running executions keep theirs.
func TestReclaim(t *testing.T) {
	ctx := testCtx(t)
	s, err := Open(ctx, Options{DataDir: t.TempDir(), MaxStoreBytes: 40 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	block := bytes.Repeat([]byte("x"), 256<<10)
	write := func(id string, status execution.Status, blocks int) {
		w := s.Outputs.NewWriter(id)
		for i := range blocks {
			w.Write(ctx, int64(i), block)
		}
		if err := w.Close(ctx, int64(blocks)); err != nil {
			t.Fatal(err)
		}
		r := newRecord(id, "t", status)
		r.OutputStored = status.Terminal()
		if _, err := s.Records.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	write("a-running", execution.StatusRunning, 40) // 10 MiB
	for i := range 10 {
		write(fmt.Sprintf("b-done-%d", i), execution.StatusCompleted, 10) // 2.5 MiB each
	}
	used, err := s.StorageBytes(ctx)
	if err != nil || used < 34<<20 {
		t.Fatalf("StorageBytes = %d, %v; want over 80%% of 40 MiB", used, err)
	}
	s.usage.measured.Store(used)
	if n, err := s.Reclaim(ctx); err != nil || n == 0 {
		t.Fatalf("Reclaim = %d, %v", n, err)
	}
	if used, _ := s.StorageBytes(ctx); used > 28<<20 {
		t.Fatalf("after Reclaim the store holds %d bytes, want under 70%% of 40 MiB", used)
	}
	r, _, err := s.Records.Get(ctx, "b-done-0")
	if err != nil || !r.OutputDropped || r.OutputStored {
		t.Fatalf("oldest finished record = %+v, %v; want kept, output dropped", r, err)
	}
	if out, err := s.Outputs.ReadHead(ctx, "a-running", 1<<30); err != nil || len(out) != 40*len(block) {
		t.Fatalf("running execution's output: %d bytes, %v; want all kept", len(out), err)
	}
}

package procstat_test

import (
	"os"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/procstat"
)

func TestParentPID(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid  int
		want int
	}{
		{"this process", os.Getpid(), os.Getppid()},
		{"init", 1, 0},
	} {
		if got, err := procstat.ParentPID(tc.pid); err != nil || got != tc.want {
			t.Errorf("%s: ParentPID(%d) = %d, %v; want %d", tc.name, tc.pid, got, err, tc.want)
		}
	}
	if _, err := procstat.ParentPID(-1); err == nil {
		t.Error("ParentPID(-1) succeeded")
	}
}

func TestPeakRSS(t *testing.T) {
	// The peak read after the current size is at least that size.
	rss, err := procstat.RSS()
	if err != nil || rss <= 0 {
		t.Fatalf("RSS() = %d, %v; want > 0", rss, err)
	}
	peak, err := procstat.PeakRSS(os.Getpid())
	if err != nil || peak < rss {
		t.Fatalf("PeakRSS(self) = %d, %v; want at least the RSS %d", peak, err, rss)
	}
	if _, err := procstat.PeakRSS(-1); err == nil {
		t.Error("PeakRSS(-1) succeeded")
	}
}

// TestRecentRSS: the cached reading is a true one, and the zero value
// reads every time.
func TestRecentRSS(t *testing.T) {
	for _, r := range []*procstat.RecentRSS{{}, {MaxAge: time.Hour}} {
		if a, b := r.Get(), r.Get(); a <= 0 || b <= 0 || (r.MaxAge > 0 && a != b) {
			t.Errorf("RecentRSS{MaxAge: %v}: %d then %d", r.MaxAge, a, b)
		}
	}
}

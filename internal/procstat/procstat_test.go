package procstat_test

import (
	"os"
	"testing"

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

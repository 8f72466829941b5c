package task_test

import (
	"testing"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/task"
)

func TestLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    task.Limits
		ok   bool
	}{
		{"none", task.Limits{}, true},
		{"pids limit", task.Limits{PidsLimit: 64}, true},
		{"negative pids limit", task.Limits{PidsLimit: -1}, false},
		{"host network", task.Limits{Network: task.NetworkHost}, true},
		{"unknown network", task.Limits{Network: "bridge"}, false},
		{"memory below 1 MiB", task.Limits{MemoryLimitBytes: 1000}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.l.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errdefs.InvalidLimits.Is(err) {
				t.Errorf("error %v is not INVALID_LIMITS", err)
			}
		})
	}
}

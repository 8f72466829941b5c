package server

import (
	"maps"
	"testing"

	"github.com/spear-go/spear/internal/execution"
)

func TestMetricsOf(t *testing.T) {
	for _, tc := range []struct {
		name     string
		exit     int32
		attempts int32
		want     map[string]string
	}{
		{"completed first time", 0, 1, nil},
		{"never ran", -1, 0, nil},
		{"killed", -1, 1, nil},
		{"exited 3", 3, 1, map[string]string{"exit_code": "3"}},
		{"negative wasm status", -7, 1, map[string]string{"exit_code": "-7"}},
		{"retried then completed", 0, 3, map[string]string{"attempts": "3"}},
		{"retried and failed", 2, 4, map[string]string{"exit_code": "2", "attempts": "4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := metricsOf(&execution.Record{ExitCode: tc.exit, Attempts: tc.attempts})
			if !maps.Equal(got, tc.want) {
				t.Fatalf("metricsOf = %v, want %v", got, tc.want)
			}
		})
	}
}

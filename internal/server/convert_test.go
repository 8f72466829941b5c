package server

import (
	"encoding/json"
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

// TestStatusJSON: a callback's body names its execution and task in
// lowerCamelCase, next to the final result and the logs.
func TestStatusJSON(t *testing.T) {
	rec := &execution.Record{
		ID: "exec-1", TaskID: "task-1", Status: execution.StatusCompleted,
		Output: []byte("out"), Logs: []execution.LogLine{{Line: "a log line"}},
	}
	var body map[string]any
	if err := json.Unmarshal(StatusJSON(rec), &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"found": true, "executionId": "exec-1", "taskId": "task-1", "message": "completed"}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("%s = %v, want %v (body %v)", k, body[k], v, body)
		}
	}
	if res, _ := body["result"].(map[string]any); res["status"] != "EXECUTION_STATUS_COMPLETED" || res["result"] == nil {
		t.Errorf("result %v, want COMPLETED with the output", body["result"])
	}
	if logs, _ := body["logs"].([]any); len(logs) != 1 {
		t.Errorf("logs %v, want one line", body["logs"])
	}
}

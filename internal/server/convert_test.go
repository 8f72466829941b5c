package server

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
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

// TestAttemptsOf: the attempt in progress is the last of the history while
// it runs — its node and start, no end — and is not listed twice once it
// ended.
func TestAttemptsOf(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ended := execution.Attempt{N: 1, Status: execution.StatusFailed, StartedAt: t0, CompletedAt: t0.Add(time.Second), Node: "n1"}
	for _, tc := range []struct {
		name string
		rec  execution.Record
		want []string // "attempt status node" of each entry
	}{
		{"queued", execution.Record{Status: execution.StatusPending}, nil},
		{"first run", execution.Record{Status: execution.StatusRunning, Attempts: 1, StartedAt: t0, Node: "n2"}, []string{"1 RUNNING n2"}},
		{"a retry runs", execution.Record{Status: execution.StatusRunning, Attempts: 2, StartedAt: t0, Node: "n2", History: []execution.Attempt{ended}},
			[]string{"1 FAILED n1", "2 RUNNING n2"}},
		{"retry waiting", execution.Record{Status: execution.StatusPending, Attempts: 1, History: []execution.Attempt{ended}}, []string{"1 FAILED n1"}},
		{"finished", execution.Record{Status: execution.StatusFailed, Attempts: 1, History: []execution.Attempt{ended}}, []string{"1 FAILED n1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, a := range attemptsOf(&tc.rec) {
				got = append(got, fmt.Sprintf("%d %s %s", a.Attempt, strings.TrimPrefix(a.Status.String(), "EXECUTION_STATUS_"), a.Node))
				if a.Status == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING && (a.CompletedAt != nil || !a.StartedAt.AsTime().Equal(t0)) {
					t.Errorf("attempt in progress %v: want its start and no end", a)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("attemptsOf = %q, want %q", got, tc.want)
			}
		})
	}
}

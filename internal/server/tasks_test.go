package server

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/testwait"
)

// wantGRPCError checks a failed call's code and error_code.
func wantGRPCError(t *testing.T, what string, call func(opt grpc.CallOption) error, code codes.Code, ec string) {
	t.Helper()
	var tr metadata.MD
	err := call(grpc.Trailer(&tr))
	if err == nil {
		t.Errorf("%s: no error, want %v %s", what, code, ec)
		return
	}
	gotCode, gotEC := grpcErrorCode(t, err, tr)
	if gotCode != code || gotEC != ec {
		t.Errorf("%s: %v %s, want %v %s (%v)", what, gotCode, gotEC, code, ec, err)
	}
}

// runSync runs task n times synchronously and returns the execution ids.
func runSync(t *testing.T, e *env, taskID string, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		resp, err := e.grpc.InvokeFunction(testCtx(t), invokeReq(taskID, "x", pb.ExecutionMode_EXECUTION_MODE_SYNC))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.ExecutionId)
	}
	return ids
}

// waitListed waits until the store lists n executions of task (records are
// persisted in the background).
func waitListed(t *testing.T, e *env, taskID string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := e.grpc.ListExecutions(testCtx(t), &pb.ListExecutionsRequest{TaskId: taskID})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Executions) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s: %d executions listed, want %d", taskID, len(l.Executions), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestListTasks(t *testing.T) {
	e := newEnv(t, envOptions{})
	all := []string{"echo", "env", "fail", "ticker", "upper", "wasm-echo"}

	var got []string
	after := ""
	pages := 0
	for {
		resp, err := e.grpc.ListTasks(testCtx(t), &pb.ListTasksRequest{Limit: 4, StartAfter: after})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, ti := range resp.Tasks {
			got = append(got, ti.TaskId)
			if ti.ArtifactSpec != nil {
				t.Errorf("%s: details without include_details", ti.TaskId)
			}
		}
		if !resp.HasMore {
			if resp.NextStartAfter != "" {
				t.Errorf("last page has next_start_after %q", resp.NextStartAfter)
			}
			break
		}
		if resp.NextStartAfter != resp.Tasks[len(resp.Tasks)-1].TaskId {
			t.Errorf("next_start_after %q", resp.NextStartAfter)
		}
		after = resp.NextStartAfter
	}
	if !slices.Equal(got, all) || pages != 2 {
		t.Errorf("paged tasks %v in %d pages, want %v in 2", got, pages, all)
	}

	resp, err := e.connect.ListTasks(testCtx(t), &pb.ListTasksRequest{Prefix: "wasm-", IncludeDetails: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Tasks) != 1 || resp.Tasks[0].TaskId != "wasm-echo" || resp.Tasks[0].ArtifactSpec.GetArtifactType() != "wasm" ||
		len(resp.Tasks[0].ArtifactSpec.GetChecksum()) != len("sha256:")+64 || resp.HasMore {
		t.Errorf("prefix wasm-: %v", resp)
	}

	wantGRPCError(t, "negative limit", func(o grpc.CallOption) error {
		_, err := e.grpc.ListTasks(testCtx(t), &pb.ListTasksRequest{Limit: -1}, o)
		return err
	}, codes.InvalidArgument, "INVALID_LIMIT")
}

func TestGetTask(t *testing.T) {
	e := newEnv(t, envOptions{})
	ids := runSync(t, e, "echo", 3)
	waitListed(t, e, "echo", 3)

	resp, err := e.grpc.GetTask(testCtx(t), &pb.GetTaskRequest{TaskId: "echo", IncludeExecutions: true, ExecutionLimit: 2})
	if err != nil {
		t.Fatal(err)
	}
	ti := resp.Task
	if !resp.Found || ti.GetTaskId() != "echo" || ti.ArtifactSpec.GetArtifactType() != "process" || ti.ExecutionCount != 3 ||
		ti.LastStatus != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || ti.CreatedAt == 0 {
		t.Errorf("GetTask: %v", resp)
	}
	var got []string
	for _, x := range resp.Executions {
		got = append(got, x.ExecutionId)
	}
	if want := []string{ids[2], ids[1]}; !slices.Equal(got, want) {
		t.Errorf("latest executions %v, want %v", got, want)
	}

	nf, err := e.grpc.GetTask(testCtx(t), &pb.GetTaskRequest{TaskId: "nope"})
	if err != nil || nf.Found || nf.Message == "" {
		t.Errorf("unknown task: %v %v", nf, err)
	}
	wantGRPCError(t, "invalid id", func(o grpc.CallOption) error {
		_, err := e.grpc.GetTask(testCtx(t), &pb.GetTaskRequest{TaskId: "a.b"}, o)
		return err
	}, codes.InvalidArgument, "INVALID_TASK_ID")
	wantGRPCError(t, "negative execution limit", func(o grpc.CallOption) error {
		_, err := e.grpc.GetTask(testCtx(t), &pb.GetTaskRequest{TaskId: "echo", IncludeExecutions: true, ExecutionLimit: -3}, o)
		return err
	}, codes.InvalidArgument, "INVALID_LIMIT")
}

func TestDeleteTask(t *testing.T) {
	e := newEnv(t, envOptions{})
	echo := filepath.Join(samplesDir(t), "process", "echo.sh")
	reg, err := e.grpc.RegisterTask(testCtx(t), &pb.RegisterTaskRequest{
		TaskId: "temp", ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: echo},
	})
	if err != nil || !reg.Created {
		t.Fatalf("RegisterTask: %v %v", reg, err)
	}
	runSync(t, e, "temp", 3)
	waitListed(t, e, "temp", 3)

	del, err := e.grpc.DeleteTask(testCtx(t), &pb.DeleteTaskRequest{TaskId: "temp", CleanupExecutions: true})
	if err != nil || !del.Success || !del.Deleted || del.CleanedExecutions != 3 {
		t.Fatalf("DeleteTask: %v %v", del, err)
	}
	g, err := e.grpc.GetTask(testCtx(t), &pb.GetTaskRequest{TaskId: "temp"})
	if err != nil || g.Found {
		t.Errorf("after delete: %v %v", g, err)
	}
	l, err := e.grpc.ListExecutions(testCtx(t), &pb.ListExecutionsRequest{TaskId: "temp"})
	if err != nil || len(l.Executions) != 0 {
		t.Errorf("executions after cleanup: %v %v", l, err)
	}
	wantGRPCError(t, "delete again", func(o grpc.CallOption) error {
		_, err := e.grpc.DeleteTask(testCtx(t), &pb.DeleteTaskRequest{TaskId: "temp"}, o)
		return err
	}, codes.NotFound, "TASK_NOT_FOUND")
	// The id is free again, for another artifact.
	reg, err = e.grpc.RegisterTask(testCtx(t), &pb.RegisterTaskRequest{
		TaskId: "temp", ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: filepath.Join(samplesDir(t), "process", "upper.sh")},
	})
	if err != nil || !reg.Created {
		t.Fatalf("RegisterTask again: %v %v", reg, err)
	}
	checkSyncOK(t, mustInvoke(t, e, invokeReq("temp", "up", pb.ExecutionMode_EXECUTION_MODE_SYNC)), "temp", "UP")

	t.Run("busy", func(t *testing.T) {
		req := invokeReq("ticker", "", pb.ExecutionMode_EXECUTION_MODE_ASYNC)
		req.Parameters = nil
		req.Context = &pb.ExecutionContext{Environment: map[string]string{"TICKS": "500"}}
		a := mustInvoke(t, e, req)
		// Wait until it runs here.
		deadline := time.Now().Add(30 * time.Second)
		for e.mgr.LiveOfTask("ticker") == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the ticker never went live")
			}
			time.Sleep(10 * time.Millisecond)
		}
		wantGRPCError(t, "busy", func(o grpc.CallOption) error {
			_, err := e.grpc.DeleteTask(testCtx(t), &pb.DeleteTaskRequest{TaskId: "ticker"}, o)
			return err
		}, codes.FailedPrecondition, "TASK_BUSY")
		if _, err := e.grpc.CancelExecution(testCtx(t), &pb.CancelExecutionRequest{ExecutionId: a.ExecutionId, Force: true}); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, e, a.StatusEndpoint)
		del, err := e.grpc.DeleteTask(testCtx(t), &pb.DeleteTaskRequest{TaskId: "ticker", Force: true})
		if err != nil || !del.Deleted {
			t.Errorf("forced delete: %v %v", del, err)
		}
	})
}

func mustInvoke(t *testing.T, e *env, req *pb.InvokeFunctionRequest) *pb.InvokeFunctionResponse {
	t.Helper()
	resp, err := e.grpc.InvokeFunction(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestListExecutions(t *testing.T) {
	e := newEnv(t, envOptions{})
	ok := runSync(t, e, "echo", 3)
	bad := runSync(t, e, "fail", 1)
	waitListed(t, e, "echo", 3)
	waitListed(t, e, "fail", 1)

	var got []string
	after := ""
	for {
		resp, err := e.grpc.ListExecutions(testCtx(t), &pb.ListExecutionsRequest{TaskId: "echo", Limit: 2, StartAfter: after})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range resp.Executions {
			got = append(got, x.ExecutionId)
			if x.TaskId != "echo" || x.ExecutionMode != pb.ExecutionMode_EXECUTION_MODE_SYNC {
				t.Errorf("execution %v", x)
			}
		}
		if !resp.HasMore {
			break
		}
		after = resp.NextStartAfter
	}
	if !slices.Equal(got, ok) {
		t.Errorf("paged executions %v, want %v", got, ok)
	}

	failed, err := e.grpc.ListExecutions(testCtx(t), &pb.ListExecutionsRequest{StatusFilter: pb.ExecutionStatus_EXECUTION_STATUS_FAILED})
	if err != nil {
		t.Fatal(err)
	}
	if len(failed.Executions) != 1 || failed.Executions[0].ExecutionId != bad[0] || failed.Executions[0].ErrorCode == "" {
		t.Errorf("FAILED filter: %v", failed)
	}
	allResp, err := e.connect.ListExecutions(testCtx(t), &pb.ListExecutionsRequest{})
	if err != nil || len(allResp.Executions) != 4 {
		t.Errorf("all executions: %v %v", allResp, err)
	}

	for _, tc := range []struct {
		name string
		req  *pb.ListExecutionsRequest
		ec   string
	}{
		{"negative limit", &pb.ListExecutionsRequest{Limit: -1}, "INVALID_LIMIT"},
		{"status filter too big", &pb.ListExecutionsRequest{StatusFilter: 99}, "INVALID_STATUS_FILTER"},
		{"negative status filter", &pb.ListExecutionsRequest{StatusFilter: -1}, "INVALID_STATUS_FILTER"},
		{"invalid task id", &pb.ListExecutionsRequest{TaskId: "a b"}, "INVALID_TASK_ID"},
	} {
		wantGRPCError(t, tc.name, func(o grpc.CallOption) error {
			_, err := e.grpc.ListExecutions(testCtx(t), tc.req, o)
			return err
		}, codes.InvalidArgument, tc.ec)
	}
}

func TestHealthAndStats(t *testing.T) {
	e := newEnv(t, envOptions{})
	statsReq := &pb.GetStatsRequest{IncludeTaskStats: true, IncludeExecutionStats: true}
	before, err := e.grpc.GetStats(testCtx(t), statsReq)
	if err != nil {
		t.Fatal(err)
	}
	hBefore, err := e.grpc.GetHealth(testCtx(t), &pb.GetHealthRequest{IncludeDetails: true})
	if err != nil {
		t.Fatal(err)
	}
	if hBefore.Status != "healthy" || hBefore.Details.GetSystemInfo()["store"] != "embedded" || hBefore.Details.GetSystemInfo()["node_id"] != "test-node" {
		t.Errorf("health: %v", hBefore)
	}
	if bare, err := e.grpc.GetHealth(testCtx(t), &pb.GetHealthRequest{}); err != nil || bare.Details != nil {
		t.Errorf("health without details: %v %v", bare, err)
	}

	runSync(t, e, "echo", 3)
	runSync(t, e, "fail", 1)
	req := invokeReq("echo", "f", pb.ExecutionMode_EXECUTION_MODE_SYNC)
	req.FunctionName = "main"
	mustInvoke(t, e, req)

	after, err := e.connect.GetStats(testCtx(t), statsReq)
	if err != nil {
		t.Fatal(err)
	}
	ss, es, ts := after.ServiceStats, after.ExecutionStats, after.TaskStats
	if got := ss.TotalExecutions - before.ServiceStats.TotalExecutions; got != 5 {
		t.Errorf("total_executions grew by %d, want 5", got)
	}
	if ss.TotalTasks != 6 || ss.TotalMemoryUsed <= 0 {
		t.Errorf("service stats %v", ss)
	}
	if es.CompletedExecutions != 4 || es.FailedExecutions != 1 || math.Abs(es.SuccessRatePercent-80) > 1e-9 {
		t.Errorf("execution stats %v", es)
	}
	if es.ExecutionsByFunction["echo"] != 3 || es.ExecutionsByFunction["fail"] != 1 || es.ExecutionsByFunction["echo/main"] != 1 {
		t.Errorf("executions_by_function %v", es.ExecutionsByFunction)
	}
	if ts.TasksByType["process"] != 5 || ts.TasksByType["wasm"] != 1 || ts.ActiveTasks != 0 || ts.IdleTasks != 6 {
		t.Errorf("task stats %v", ts)
	}
	if len(ts.MostActiveTasks) != 2 || ts.MostActiveTasks[0].TaskId != "echo" || ts.MostActiveTasks[0].ExecutionCount != 4 {
		t.Errorf("most active %v", ts.MostActiveTasks)
	}
	if before.ExecutionStats.SuccessRatePercent != 0 || len(before.ExecutionStats.ExecutionsByFunction) != 0 {
		t.Errorf("stats before any execution %v", before.ExecutionStats)
	}

	hAfter, err := e.grpc.GetHealth(testCtx(t), &pb.GetHealthRequest{IncludeDetails: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := hAfter.Details.TotalExecutions - hBefore.Details.TotalExecutions; got != 5 {
		t.Errorf("health total_executions grew by %d", got)
	}

	if only, err := e.grpc.GetStats(testCtx(t), &pb.GetStatsRequest{TimeRangeHours: 1}); err != nil || only.TaskStats != nil || only.ExecutionStats != nil {
		t.Errorf("stats without sections: %v %v", only, err)
	}
	wantGRPCError(t, "negative time range", func(o grpc.CallOption) error {
		_, err := e.grpc.GetStats(testCtx(t), &pb.GetStatsRequest{TimeRangeHours: -1}, o)
		return err
	}, codes.InvalidArgument, "INVALID_TIME_RANGE")
}

// TestHealthAndStatsAgree: while executions run, GetHealth and GetStats
// count the same tasks as active (with an execution running on this node)
// and the same executions as running; once they end, none.
func TestHealthAndStatsAgree(t *testing.T) {
	e := newEnv(t, envOptions{})
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	script := filepath.Join(dir, "wait.sh")
	body := "#!/bin/sh\nwhile [ ! -e " + gate + " ]; do sleep 0.05; done\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"wait-a", "wait-b"} {
		if _, err := e.grpc.RegisterTask(testCtx(t), &pb.RegisterTaskRequest{
			TaskId: id, ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: script},
		}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for _, task := range []string{"wait-a", "wait-a", "wait-b"} {
		req := invokeReq(task, "", pb.ExecutionMode_EXECUTION_MODE_ASYNC)
		req.Parameters = nil
		ids = append(ids, mustInvoke(t, e, req).ExecutionId)
	}
	agree := func(tasks, running int32) func() bool {
		return func() bool {
			h, herr := e.grpc.GetHealth(testCtx(t), &pb.GetHealthRequest{IncludeDetails: true})
			st, serr := e.grpc.GetStats(testCtx(t), &pb.GetStatsRequest{IncludeTaskStats: true, IncludeExecutionStats: true})
			if herr != nil || serr != nil {
				t.Fatalf("GetHealth: %v; GetStats: %v", herr, serr)
			}
			hd, ts, es := h.GetDetails(), st.GetTaskStats(), st.GetExecutionStats()
			return hd.ActiveTasks == tasks && ts.ActiveTasks == tasks && hd.RunningExecutions == running && es.RunningExecutions == running &&
				ts.ActiveTasks+ts.IdleTasks == st.GetServiceStats().GetTotalTasks()
		}
	}
	testwait.Until(t, "health and stats to count 2 active tasks, 3 running executions", agree(2, 3))
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		waitStatus(t, e, fmt.Sprintf(StatusPath, id))
	}
	testwait.Until(t, "health and stats to count none active", agree(0, 0))
}

// TestTaskWithVanishedArtifact: a task whose artifact file is gone is still
// shown by GetTask and can be deleted; invoking it fails cleanly.
func TestTaskWithVanishedArtifact(t *testing.T) {
	e := newEnv(t, envOptions{})
	script := filepath.Join(t.TempDir(), "gone.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncat\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := e.grpc.RegisterTask(testCtx(t), &pb.RegisterTaskRequest{
		TaskId: "gone", ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: script},
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(script); err != nil {
		t.Fatal(err)
	}
	// Registering the missing file again fails; the stored task stays.
	if _, err := e.grpc.RegisterTask(testCtx(t), &pb.RegisterTaskRequest{
		TaskId: "gone", ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: script},
	}); err == nil {
		t.Error("registering a missing file succeeded")
	}
	g, err := e.grpc.GetTask(testCtx(t), &pb.GetTaskRequest{TaskId: "gone"})
	if err != nil || !g.Found || g.Task.ArtifactSpec.GetLocation() != script {
		t.Errorf("GetTask: %v %v", g, err)
	}
	del, err := e.grpc.DeleteTask(testCtx(t), &pb.DeleteTaskRequest{TaskId: "gone"})
	if err != nil || !del.Deleted {
		t.Errorf("DeleteTask: %v %v", del, err)
	}
}

package e2e

import (
	"slices"
	"testing"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestTasks covers ListTasks (paginated), GetTask, DeleteTask and
// ListExecutions, and that tasks survive a clean restart of the node.
func TestTasks(t *testing.T) {
	dataDir := t.TempDir()
	n := startNode(t, dataDir, nodeOpts{})
	dir := t.TempDir()
	path, _ := writeScript(t, dir, "tagger.sh", "printf 'tag:'\ncat\n")
	for _, id := range []string{"e2e-keep-a", "e2e-keep-b", "e2e-doomed"} {
		n.registerProcess(t, id, path)
	}

	var keptExecs []string
	for _, in := range []string{"1", "2", "3"} {
		resp := n.invoke(t, invocation(t, "e2e-keep-a", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte(in)))
		if got := output(t, resp.GetResult().GetResult()); got != "tag:"+in {
			t.Fatalf("e2e-keep-a(%s) = %q (%s)", in, got, resp.GetMessage())
		}
		keptExecs = append(keptExecs, resp.GetExecutionId())
	}
	n.invoke(t, invocation(t, "echo", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("other task")))

	all := listAllTasks(t, n, 2)
	for _, want := range []string{"echo", "upper", "fail", "ticker", "e2e-keep-a", "e2e-keep-b", "e2e-doomed"} {
		if !slices.Contains(all, want) {
			t.Errorf("ListTasks pages %v lack %s", all, want)
		}
	}

	t.Run("get-task", func(t *testing.T) {
		resp, err := n.client.GetTask(ctx(t, callTimeout), &pb.GetTaskRequest{TaskId: "e2e-keep-a", IncludeExecutions: true, ExecutionLimit: 10})
		if err != nil {
			t.Fatal(err)
		}
		task := resp.GetTask()
		if !resp.GetFound() || task.GetTaskId() != "e2e-keep-a" || task.GetArtifactSpec().GetLocation() != path {
			t.Fatalf("GetTask: found=%v task=%v", resp.GetFound(), task)
		}
		if task.GetExecutionCount() != 3 || task.GetLastStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
			t.Errorf("execution_count %d last_status %v, want 3 COMPLETED", task.GetExecutionCount(), task.GetLastStatus())
		}
		var ids []string
		for _, e := range resp.GetExecutions() {
			ids = append(ids, e.GetExecutionId())
		}
		for _, id := range keptExecs {
			if !slices.Contains(ids, id) {
				t.Errorf("GetTask executions %v lack %s", ids, id)
			}
		}
		missing, err := n.client.GetTask(ctx(t, callTimeout), &pb.GetTaskRequest{TaskId: "no-such-task"})
		if err != nil || missing.GetFound() {
			t.Errorf("GetTask(no-such-task): found=%v err=%v, want found=false", missing.GetFound(), err)
		}
	})

	t.Run("list-executions", func(t *testing.T) {
		var got []string
		req := &pb.ListExecutionsRequest{TaskId: "e2e-keep-a", Limit: 2}
		for page := 0; ; page++ {
			if page > 10 {
				t.Fatalf("ListExecutions did not end after %d pages: %v", page, got)
			}
			resp, err := n.client.ListExecutions(ctx(t, callTimeout), req)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.GetExecutions()) > 2 {
				t.Errorf("page of %d executions, limit 2", len(resp.GetExecutions()))
			}
			for _, e := range resp.GetExecutions() {
				if e.GetTaskId() != "e2e-keep-a" {
					t.Errorf("ListExecutions(task e2e-keep-a) returned %s of task %s", e.GetExecutionId(), e.GetTaskId())
				}
				got = append(got, e.GetExecutionId())
			}
			if !resp.GetHasMore() {
				break
			}
			if resp.GetNextStartAfter() == "" {
				t.Fatal("has_more without next_start_after")
			}
			req.StartAfter = resp.GetNextStartAfter()
		}
		if !slices.Equal(got, keptExecs) {
			t.Errorf("executions of e2e-keep-a %v, want %v (creation order)", got, keptExecs)
		}
	})

	t.Run("delete-task", func(t *testing.T) {
		resp, err := n.client.DeleteTask(ctx(t, callTimeout), &pb.DeleteTaskRequest{TaskId: "e2e-doomed"})
		if err != nil || !resp.GetSuccess() || !resp.GetDeleted() {
			t.Fatalf("DeleteTask: %v, err %v", resp, err)
		}
		got, err := n.client.GetTask(ctx(t, callTimeout), &pb.GetTaskRequest{TaskId: "e2e-doomed"})
		if err != nil || got.GetFound() {
			t.Errorf("GetTask after delete: found=%v err=%v", got.GetFound(), err)
		}
		if slices.Contains(listAllTasks(t, n, 2), "e2e-doomed") {
			t.Error("ListTasks still lists the deleted task")
		}
	})

	t.Run("restart", func(t *testing.T) {
		if err := n.stop(); err != nil {
			t.Fatalf("clean stop (SIGTERM): %v", err)
		}
		// Without --samples: the sample tasks must come from the store.
		n2 := startNode(t, dataDir, nodeOpts{noSamples: true})
		after := listAllTasks(t, n2, 2)
		want := slices.DeleteFunc(slices.Clone(all), func(id string) bool { return id == "e2e-doomed" })
		if !slices.Equal(after, want) {
			t.Errorf("tasks after restart %v, want %v", after, want)
		}
		resp := n2.invoke(t, invocation(t, "e2e-keep-b", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("back")))
		if got := output(t, resp.GetResult().GetResult()); got != "tag:back" {
			t.Errorf("e2e-keep-b after restart: %q (%s)", got, resp.GetMessage())
		}
		up := n2.invoke(t, invocation(t, "upper", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("persisted")))
		if got := output(t, up.GetResult().GetResult()); got != "PERSISTED" {
			t.Errorf("sample upper after restart without --samples: %q (%s)", got, up.GetMessage())
		}
		for _, id := range keptExecs {
			if st := n2.status(t, id); !st.GetFound() || st.GetResult().GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
				t.Errorf("execution %s after restart: found=%v status=%v", id, st.GetFound(), st.GetResult().GetStatus())
			}
		}
	})
}

// listAllTasks follows ListTasks pages of size limit and returns the task ids
// in order, checking page sizes and ordering.
func listAllTasks(t *testing.T, n *node, limit int32) []string {
	t.Helper()
	var ids []string
	req := &pb.ListTasksRequest{Limit: limit}
	for page := 0; ; page++ {
		if page > 100 {
			t.Fatalf("ListTasks did not end after %d pages", page)
		}
		resp, err := n.client.ListTasks(ctx(t, callTimeout), req)
		if err != nil {
			t.Fatalf("ListTasks: %v", err)
		}
		if len(resp.GetTasks()) > int(limit) {
			t.Errorf("ListTasks page of %d, limit %d", len(resp.GetTasks()), limit)
		}
		for _, ti := range resp.GetTasks() {
			ids = append(ids, ti.GetTaskId())
		}
		if !resp.GetHasMore() {
			break
		}
		if resp.GetNextStartAfter() == "" {
			t.Fatal("ListTasks: has_more without next_start_after")
		}
		req.StartAfter = resp.GetNextStartAfter()
	}
	if !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != len(ids) {
		t.Errorf("ListTasks ids %v are not sorted and unique", ids)
	}
	return ids
}

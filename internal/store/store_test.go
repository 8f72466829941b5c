package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/task"
	"github.com/spear-go/spear/internal/testwait"
)

// openStore opens an embedded store in dir and closes it when the test ends.
func openStore(t *testing.T, dir string, ackWait time.Duration) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{DataDir: dir, AckWait: ackWait})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	if _, err := s.Workers.Open(ctx, []string{"process"}, func(string) string { return "process" }); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	return s
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newRecord(id, taskID string, status execution.Status) *execution.Record {
	r := execution.NewRecord(&execution.Spec{ExecutionID: id, TaskID: taskID, Mode: execution.ModeAsync,
		CreatedAt: time.Unix(1700000000, 0).UTC()})
	r.Status = status
	return r
}

func TestRecordCreateGetPut(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), 0)

	r := newRecord("e1", "t1", execution.StatusPending)
	rev, err := s.Records.Create(ctx, r)
	if err != nil {
		t.Fatalf("CreateRecord: %v", err)
	}
	if rev == 0 {
		t.Fatal("CreateRecord returned revision 0")
	}
	if _, err := s.Records.Create(ctx, r); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second CreateRecord: got %v, want AlreadyExists", err)
	}
	got, grev, err := s.Records.Get(ctx, "e1")
	if err != nil {
		t.Fatalf("GetRecord: %v", err)
	}
	if grev != rev || got.ID != "e1" || got.TaskID != "t1" || got.Status != execution.StatusPending || !got.CreatedAt.Equal(r.CreatedAt) {
		t.Fatalf("GetRecord = %+v rev %d, want %+v rev %d", got, grev, r, rev)
	}

	r.Status = execution.StatusCompleted
	r.Output = []byte("out")
	prev, err := s.Records.Put(ctx, r)
	if err != nil {
		t.Fatalf("PutRecord: %v", err)
	}
	if prev <= rev {
		t.Fatalf("PutRecord revision %d not after %d", prev, rev)
	}
	got, _, err = s.Records.Get(ctx, "e1")
	if err != nil {
		t.Fatalf("GetRecord: %v", err)
	}
	if got.Status != execution.StatusCompleted || string(got.Output) != "out" {
		t.Fatalf("after PutRecord got %+v", got)
	}

	if _, _, err := s.Records.Get(ctx, "missing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetRecord(missing): got %v, want NotFound", err)
	}
}

func TestUpdateRecordCAS(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), 0)
	r := newRecord("e1", "t1", execution.StatusPending)
	rev, err := s.Records.Create(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	r.Status = execution.StatusRunning
	rev2, err := s.Records.Update(ctx, r, rev)
	if err != nil {
		t.Fatalf("UpdateRecord with current revision: %v", err)
	}
	r.Status = execution.StatusCancelled
	if _, err := s.Records.Update(ctx, r, rev); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("UpdateRecord with stale revision: got %v, want FailedPrecondition", err)
	}
	got, grev, err := s.Records.Get(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != execution.StatusRunning || grev != rev2 {
		t.Fatalf("after failed CAS got status %v rev %d, want RUNNING rev %d", got.Status, grev, rev2)
	}
	// The leader's read agrees, revision included, and knows a deleted or
	// unknown record as not found.
	if got, grev, err := s.Records.GetLatest(ctx, "e1"); err != nil || got.Status != execution.StatusRunning || grev != rev2 {
		t.Fatalf("GetLatest = %v rev %d, %v; want RUNNING rev %d", got, grev, err, rev2)
	}
	if err := s.Records.Delete(ctx, "t1", "e1"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"e1", "never"} {
		if _, _, err := s.Records.GetLatest(ctx, id); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("GetLatest(%s) = %v, want not found", id, err)
		}
	}
}

func ids(recs []*execution.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

func TestListRecords(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), 0)

	// An empty store lists nothing.
	recs, more, err := s.Records.List(ctx, ListFilter{Limit: 10})
	if err != nil || len(recs) != 0 || more {
		t.Fatalf("empty ListRecords = %v, %v, %v", ids(recs), more, err)
	}

	// e0..e5; tasks alternate a/b; e1 and e4 failed.
	for i := range 6 {
		taskID := "a"
		if i%2 == 1 {
			taskID = "b"
		}
		st := execution.StatusCompleted
		if i == 1 || i == 4 {
			st = execution.StatusFailed
		}
		if _, err := s.Records.Create(ctx, newRecord(fmt.Sprintf("e%d", i), taskID, st)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		f    ListFilter
		want []string
		more bool
	}{
		{"all", ListFilter{Limit: 10}, []string{"e0", "e1", "e2", "e3", "e4", "e5"}, false},
		{"first page", ListFilter{Limit: 2}, []string{"e0", "e1"}, true},
		{"second page", ListFilter{Limit: 2, StartAfter: "e1"}, []string{"e2", "e3"}, true},
		{"last page", ListFilter{Limit: 2, StartAfter: "e3"}, []string{"e4", "e5"}, false},
		{"exact fit", ListFilter{Limit: 6}, []string{"e0", "e1", "e2", "e3", "e4", "e5"}, false},
		{"newest", ListFilter{Limit: 3, Newest: true}, []string{"e5", "e4", "e3"}, true},
		{"newest ignores start after", ListFilter{Limit: 1, Newest: true, StartAfter: "e5"}, []string{"e5"}, true},
		{"status", ListFilter{Limit: 10, Status: execution.StatusFailed}, []string{"e1", "e4"}, false},
		{"status paged", ListFilter{Limit: 1, Status: execution.StatusFailed}, []string{"e1"}, true},
		{"task a", ListFilter{Limit: 10, TaskID: "a"}, []string{"e0", "e2", "e4"}, false},
		{"task b paged", ListFilter{Limit: 2, TaskID: "b"}, []string{"e1", "e3"}, true},
		{"task b after", ListFilter{Limit: 2, TaskID: "b", StartAfter: "e3"}, []string{"e5"}, false},
		{"task b newest", ListFilter{Limit: 1, TaskID: "b", Newest: true}, []string{"e5"}, true},
		{"task and status", ListFilter{Limit: 10, TaskID: "a", Status: execution.StatusFailed}, []string{"e4"}, false},
		{"unknown task", ListFilter{Limit: 10, TaskID: "zz"}, []string{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, more, err := s.Records.List(ctx, tc.f)
			if err != nil {
				t.Fatalf("ListRecords: %v", err)
			}
			if got := ids(recs); strings.Join(got, ",") != strings.Join(tc.want, ",") || more != tc.more {
				t.Fatalf("ListRecords(%+v) = %v more=%v, want %v more=%v", tc.f, got, more, tc.want, tc.more)
			}
		})
	}
}

func TestDeleteRecordsOfTask(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), 0)
	for i, taskID := range []string{"a", "b", "a"} {
		if _, err := s.Records.Create(ctx, newRecord(fmt.Sprintf("e%d", i), taskID, execution.StatusCompleted)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.Records.DeleteOfTask(ctx, "a")
	if err != nil || n != 2 {
		t.Fatalf("DeleteRecordsOfTask = %d, %v; want 2", n, err)
	}
	for _, id := range []string{"e0", "e2"} {
		if _, _, err := s.Records.Get(ctx, id); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("GetRecord(%s) after delete: %v, want NotFound", id, err)
		}
	}
	recs, _, err := s.Records.List(ctx, ListFilter{Limit: 10})
	if err != nil || strings.Join(ids(recs), ",") != "e1" {
		t.Fatalf("remaining records = %v, %v; want [e1]", ids(recs), err)
	}
	recs, _, err = s.Records.List(ctx, ListFilter{Limit: 10, TaskID: "a"})
	if err != nil || len(recs) != 0 {
		t.Fatalf("records of deleted task = %v, %v", ids(recs), err)
	}
	if n, err := s.Records.DeleteOfTask(ctx, "a"); err != nil || n != 0 {
		t.Fatalf("second DeleteRecordsOfTask = %d, %v; want 0", n, err)
	}
}

func newTask(id string) *task.Task {
	now := time.Unix(1700000000, 0).UTC()
	return &task.Task{ID: id, Name: id, Artifact: task.Artifact{Type: runtime.TypeProcess, Location: "/bin/" + id},
		CreatedAt: now, UpdatedAt: now}
}

func TestTasks(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), 0)

	if list, err := s.Tasks.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("ListTasks on empty store = %v, %v", list, err)
	}
	for _, id := range []string{"b", "a", "c"} {
		if err := s.Tasks.Create(ctx, newTask(id)); err != nil {
			t.Fatalf("CreateTask(%s): %v", id, err)
		}
	}
	if err := s.Tasks.Create(ctx, newTask("a")); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate CreateTask: got %v, want AlreadyExists", err)
	}
	got, err := s.Tasks.Get(ctx, "a")
	if err != nil || got.ID != "a" || got.Artifact.Location != "/bin/a" {
		t.Fatalf("GetTask(a) = %+v, %v", got, err)
	}
	if _, err := s.Tasks.Get(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetTask(nope): got %v, want NotFound", err)
	}
	upd := newTask("a")
	upd.Description = "updated"
	if err := s.Tasks.Put(ctx, upd); err != nil {
		t.Fatal(err)
	}
	list, err := s.Tasks.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tk := range list {
		names = append(names, tk.ID)
	}
	if strings.Join(names, ",") != "a,b,c" || list[0].Description != "updated" {
		t.Fatalf("ListTasks = %v (a: %q), want a,b,c sorted with a updated", names, list[0].Description)
	}
	if err := s.Tasks.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tasks.Get(ctx, "b"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetTask after delete: got %v, want NotFound", err)
	}
	if list, err := s.Tasks.List(ctx); err != nil || len(list) != 2 {
		t.Fatalf("ListTasks after delete = %d tasks, %v; want 2", len(list), err)
	}
}

func TestWatchTasks(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), 0)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	seen := map[string]int{}
	changed := make(chan struct{}, 16)
	if err := s.Tasks.Watch(wctx, func(id string) {
		mu.Lock()
		seen[id]++
		mu.Unlock()
		changed <- struct{}{}
	}); err != nil {
		t.Fatal(err)
	}
	wantEvent := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(10 * time.Second):
			t.Fatalf("WatchTasks did not report the %s", what)
		}
	}
	// One change at a time: JetStream may fold a change not yet delivered
	// into the next one of the same key (history 1).
	if err := s.Tasks.Create(ctx, newTask("w")); err != nil {
		t.Fatal(err)
	}
	wantEvent("creation")
	if err := s.Tasks.Delete(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	wantEvent("deletion")
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen["w"] != 2 {
		t.Fatalf("watch saw %v, want w twice (create, delete)", seen)
	}
}

func TestTaskStats(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), 0)
	all, err := s.Tasks.AllStats(ctx)
	if err != nil || len(all) != 0 {
		t.Fatalf("AllTaskStats on empty store = %v, %v", all, err)
	}
	in := &TaskStats{Count: 2, LastStatus: execution.StatusFailed, RecentMs: []int64{7}}
	if _, err := s.Tasks.AddStats(ctx, "t1", &TaskStats{Count: 1, RecentMs: []int64{5}}, 8); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tasks.AddStats(ctx, "t1", in, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tasks.AddStats(ctx, "t2", &TaskStats{Count: 1, LastStatus: execution.StatusCompleted}, 8); err != nil {
		t.Fatal(err)
	}
	all, err = s.Tasks.AllStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := all["t1"]
	if len(all) != 2 || got == nil || got.Count != 3 || got.LastStatus != execution.StatusFailed ||
		len(got.RecentMs) != 2 || got.RecentMs[0] != 5 || got.RecentMs[1] != 7 {
		t.Fatalf("AllTaskStats = %v (t1 %+v)", all, got)
	}
	if err := s.Tasks.DeleteStats(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	all, err = s.Tasks.AllStats(ctx)
	if err != nil || len(all) != 1 || all["t2"] == nil {
		t.Fatalf("AllTaskStats after delete = %v, %v", all, err)
	}
}

func spec(id string) *execution.Spec {
	return &execution.Spec{ExecutionID: id, TaskID: "t", Runtime: "process", Mode: execution.ModeAsync,
		Input: []byte("in-" + id), CreatedAt: time.Now()}
}

// fetchOne fetches a single delivery, waiting up to maxWait.
func fetchOne(t *testing.T, s *Store, maxWait time.Duration) *Delivery {
	t.Helper()
	var got []*Delivery
	for deadline := time.Now().Add(maxWait); ; {
		for _, src := range s.Workers.opened() {
			src.Mark()
		}
		if err := s.Workers.Fetch(1, func(d *Delivery) { got = append(got, d) }); err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if len(got) > 0 {
			return got[0]
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func depth(t *testing.T, s *Store) (int64, int64) {
	t.Helper()
	w, f, err := s.Queue.Depth(testCtx(t))
	if err != nil {
		t.Fatalf("QueueDepth: %v", err)
	}
	return w, f
}

func TestQueueAckNak(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), 0)

	if d := fetchOne(t, s, 100*time.Millisecond); d != nil {
		t.Fatalf("Fetch on empty queue returned %+v", d.Spec)
	}
	if _, err := s.Queue.Enqueue(ctx, spec("q1")); err != nil {
		t.Fatal(err)
	}
	// Same id again: stored once, and said to be a duplicate.
	if dup, err := s.Queue.Enqueue(ctx, spec("q1")); err != nil || !dup {
		t.Fatalf("Enqueue of the same id again = %v, %v; want a duplicate", dup, err)
	}
	if _, err := s.Queue.Enqueue(ctx, spec("q2")); err != nil {
		t.Fatal(err)
	}
	if w, f := depth(t, s); w != 2 || f != 0 {
		t.Fatalf("QueueDepth = %d waiting, %d in flight; want 2, 0", w, f)
	}
	if n, err := s.Queue.OfTask(ctx, spec("q1").TaskID); err != nil || n != 2 {
		t.Fatalf("QueuedOfTask = %d, %v; want 2", n, err)
	}
	if n, err := s.Queue.OfTask(ctx, "other-task"); err != nil || n != 0 {
		t.Fatalf("QueuedOfTask(other) = %d, %v; want 0", n, err)
	}

	d := fetchOne(t, s, 5*time.Second)
	if d == nil || d.Spec.ExecutionID != "q1" || d.Attempt != 1 || string(d.Spec.Input) != "in-q1" {
		t.Fatalf("first delivery = %+v", d)
	}
	if w, f := depth(t, s); w != 1 || f != 1 {
		t.Fatalf("QueueDepth after fetch = %d, %d; want 1, 1", w, f)
	}
	if err := d.InProgress(); err != nil {
		t.Fatalf("InProgress: %v", err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	testwait.Until(t, "acked q1 to leave the queue", func() bool {
		n, err := s.Queue.OfTask(ctx, spec("q1").TaskID)
		return err == nil && n == 1
	})

	d = fetchOne(t, s, 5*time.Second)
	if d == nil || d.Spec.ExecutionID != "q2" || d.Attempt != 1 {
		t.Fatalf("second delivery = %+v", d)
	}
	if err := d.Nak(0); err != nil {
		t.Fatalf("Nak: %v", err)
	}
	if n, err := s.Queue.OfTask(ctx, spec("q2").TaskID); err != nil || n != 1 {
		t.Fatalf("QueuedOfTask after Nak = %d, %v; want 1", n, err)
	}
	d = fetchOne(t, s, 5*time.Second)
	if d == nil || d.Spec.ExecutionID != "q2" || d.Attempt != 2 {
		t.Fatalf("redelivery after Nak = %+v", d)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "an empty queue", func() bool {
		w, f := depth(t, s)
		return w == 0 && f == 0
	})
}

// TestAcceptUnrecorded: an execution accepted in one write (its queue
// message) reads and lists as PENDING at revision 0 until its claim
// creates its record, once.
func TestAcceptUnrecorded(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), 0)
	a := spec("a1")
	a.EstimatedMs = 42
	if err := s.Queue.Accept(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Records.Create(ctx, execution.NewRecord(spec("b1"))); err != nil {
		t.Fatal(err)
	}
	r, rev, err := s.Records.Get(ctx, "a1")
	if err != nil || rev != 0 || r.Status != execution.StatusPending || r.EstimatedMs != 42 {
		t.Fatalf("Get(a1) = %+v at %d, %v; want PENDING at revision 0, its estimate kept", r, rev, err)
	}
	listed := func(f ListFilter) []string {
		t.Helper()
		recs, _, err := s.Records.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range recs {
			ids = append(ids, r.ID+":"+r.Status.String())
		}
		return ids
	}
	for _, f := range []ListFilter{{Limit: 10}, {TaskID: "t", Limit: 10}, {TaskID: "t", Status: execution.StatusPending, Limit: 10}} {
		if got := listed(f); !slices.Equal(got, []string{"a1:PENDING", "b1:PENDING"}) {
			t.Fatalf("List(%+v) = %v; want a1 (queued) and b1 (stored)", f, got)
		}
	}
	claim := *r
	claim.Status = execution.StatusRunning
	if _, err := s.Records.Claim(ctx, &claim, 0); err != nil {
		t.Fatalf("claim of the unrecorded execution: %v", err)
	}
	if _, err := s.Records.Claim(ctx, &claim, 0); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("a second claim at revision 0 = %v; want FAILED_PRECONDITION", err)
	}
	if got := listed(ListFilter{TaskID: "t", Limit: 10}); !slices.Equal(got, []string{"a1:RUNNING", "b1:PENDING"}) {
		t.Fatalf("List after the claim = %v; want a1 once, RUNNING", got)
	}
	// A first write indexes it (a claim, or a cancel's Update at revision
	// 0): once its message is gone from the queue (acked), its task's
	// listing still has it.
	if err := s.Queue.Accept(ctx, spec("c1")); err != nil {
		t.Fatal(err)
	}
	c := execution.NewRecord(spec("c1"))
	c.Status = execution.StatusCancelled
	if _, err := s.Records.Update(ctx, c, 0); err != nil {
		t.Fatalf("cancel of the unrecorded execution: %v", err)
	}
	for d := fetchOne(t, s, 5*time.Second); d != nil; d = fetchOne(t, s, 100*time.Millisecond) {
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := listed(ListFilter{TaskID: "t", Limit: 10}); !slices.Equal(got, []string{"a1:RUNNING", "b1:PENDING", "c1:CANCELLED"}) {
		t.Fatalf("List after their messages were acked = %v; want a1 and c1 still listed", got)
	}
}

// TestIndexPending: a record's first write whose index entry could not be
// stored (here: the index's stream is gone for a moment) leaves the entry
// pending in the background, says so, and Index stores it (the executor
// does before it acks the execution's message: a node that died with the
// entry pending lost it for good, once in TestClusterChaos).
func TestIndexPending(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), 0)
	st, err := s.index.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config
	if err := s.js.DeleteStream(ctx, cfg.Name); err != nil {
		t.Fatal(err)
	}
	r := execution.NewRecord(spec("p1"))
	if _, err := s.Records.Update(ctx, r, 0); err != nil {
		t.Fatalf("first write without the index: %v", err)
	}
	if !s.Records.IndexPending(r.ID) {
		t.Fatal("IndexPending = false for an entry that could not be written")
	}
	if err := s.Records.Index(ctx, r.TaskID, r.ID); err == nil {
		t.Fatal("Index stored an entry without its stream")
	}
	if _, err := s.js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := s.Records.Index(ctx, r.TaskID, r.ID); err != nil {
		t.Fatalf("Index once the stream is back: %v", err)
	}
	if s.Records.IndexPending(r.ID) {
		t.Fatal("IndexPending = true once Index stored the entry")
	}
	if recs, _, err := s.Records.List(ctx, ListFilter{TaskID: "t", Limit: 10}); err != nil || len(recs) != 1 || recs[0].ID != "p1" {
		t.Fatalf("List = %v, %v; want p1", recs, err)
	}
}

func TestQueueAckWaitRedelivers(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), 300*time.Millisecond)
	if s.Workers.AckWait() != 300*time.Millisecond {
		t.Fatalf("AckWait = %v", s.Workers.AckWait())
	}
	if _, err := s.Queue.Enqueue(ctx, spec("q1")); err != nil {
		t.Fatal(err)
	}
	d := fetchOne(t, s, 5*time.Second)
	if d == nil || d.Attempt != 1 {
		t.Fatalf("first delivery = %+v", d)
	}
	// Not acked: JetStream hands it out again once the ack wait passes.
	d = fetchOne(t, s, 10*time.Second)
	if d == nil || d.Spec.ExecutionID != "q1" || d.Attempt != 2 {
		t.Fatalf("redelivery after ack wait = %+v", d)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestEnqueueLargeInput: on a server with a small max payload, an input
// larger than a queue message is stored apart and read back whole; what
// cannot be stored apart (a huge environment) is refused with a code.
func TestEnqueueLargeInput(t *testing.T) {
	ctx := testCtx(t)
	s, err := Open(ctx, Options{DataDir: t.TempDir(), MaxPayload: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Workers.Open(ctx, []string{"process"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := s.Sizes(); got.Payload != 64<<10 || got.Inline != 16<<10 || got.Block != 32<<10 {
		t.Fatalf("sizes for a 64 KiB payload: %+v", got)
	}
	sp := spec("big")
	sp.Input = bytes.Repeat([]byte("x"), 1<<20)
	if _, err := s.Queue.Enqueue(ctx, sp); err != nil {
		t.Fatalf("Enqueue of a 1 MiB input: %v", err)
	}
	d := fetchOne(t, s, 5*time.Second)
	if d == nil || d.Spec.InputRef != InputScheme+"big" || len(d.Spec.Input) != 0 {
		t.Fatalf("queued spec: %+v", d)
	}
	r, err := s.Inputs.Open(ctx, d.Spec.InputRef)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, sp.Input) {
		t.Fatalf("stored input: %d bytes, err %v; want the 1 MiB input", len(got), err)
	}
	// Queued without a record: the queue message is its record.
	if q, rev, err := s.Records.Get(ctx, "big"); err != nil || q.Status != execution.StatusPending || rev != 0 {
		t.Fatalf("Records.Get(big) = %+v, %d, %v; want PENDING at revision 0", q, rev, err)
	}
	if _, _, err := s.Records.Get(ctx, "nothing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Records.Get(nothing) = %v, want not found", err)
	}
	huge := spec("huge")
	huge.Env = map[string]string{"X": strings.Repeat("y", 64<<10)}
	if _, err := s.Queue.Enqueue(ctx, huge); errdefs.CodeOf(err) != "REQUEST_TOO_LARGE" {
		t.Fatalf("Enqueue of a huge environment: got %v, want REQUEST_TOO_LARGE", err)
	}
}

func TestArtifacts(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), 0)
	content := []byte("#!/bin/sh\necho hi\n")
	sum := sha256.Sum256(content)
	wantDigest := "sha256:" + hex.EncodeToString(sum[:])

	tests := []struct {
		name    string
		content []byte
		want    string
		code    string // expected error code, "" for success
	}{
		{"no checksum", content, "", ""},
		{"matching checksum, again", content, strings.ToUpper(wantDigest[:7]) + wantDigest[7:], ""},
		{"checksum mismatch", content, "sha256:" + strings.Repeat("0", 64), "CHECKSUM_MISMATCH"},
		{"empty", nil, "", "EMPTY_ARTIFACT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			digest, size, err := s.Artifacts.Put(ctx, "hello.sh", bytes.NewReader(tc.content), tc.want)
			if tc.code != "" {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || errdefs.CodeOf(err) != tc.code {
					t.Fatalf("PutArtifact: got %v, want %s", err, tc.code)
				}
				return
			}
			if err != nil || digest != wantDigest || size != int64(len(content)) {
				t.Fatalf("PutArtifact = %s, %d, %v; want %s, %d", digest, size, err, wantDigest, len(content))
			}
		})
	}

	for i := range 2 { // the second call finds the local copy
		path, err := s.Artifacts.Materialize(ctx, wantDigest)
		if err != nil {
			t.Fatalf("MaterializeArtifact #%d: %v", i, err)
		}
		b, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(b, content) {
			t.Fatalf("materialised content = %q, %v", b, err)
		}
		st, err := os.Stat(path)
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			t.Fatalf("materialised file mode = %v, %v; want an executable regular file", st.Mode(), err)
		}
	}

	unknown := "sha256:" + strings.Repeat("a", 64)
	if _, err := s.Artifacts.Materialize(ctx, unknown); !errdefs.ArtifactNotFound.Is(err) {
		t.Fatalf("MaterializeArtifact(unknown): got %v, want ARTIFACT_NOT_FOUND", err)
	}
	if _, err := s.Artifacts.Materialize(ctx, "md5:abc"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("MaterializeArtifact(bad digest): got %v, want InvalidArgument", err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	s, err := Open(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Records.Create(ctx, newRecord("keep", "t1", execution.StatusPending)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Queue.Enqueue(ctx, spec("keep")); err != nil {
		t.Fatal(err)
	}
	if err := s.Tasks.Create(ctx, newTask("t1")); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openStore(t, dir, 0)
	r, _, err := s.Records.Get(ctx, "keep")
	if err != nil || r.TaskID != "t1" {
		t.Fatalf("record after reopen = %+v, %v", r, err)
	}
	if recs, _, err := s.Records.List(ctx, ListFilter{TaskID: "t1", Limit: 10}); err != nil || len(recs) != 1 {
		t.Fatalf("records of t1 after reopen = %v, %v", ids(recs), err)
	}
	if _, err := s.Tasks.Get(ctx, "t1"); err != nil {
		t.Fatalf("task after reopen: %v", err)
	}
	d := fetchOne(t, s, 5*time.Second)
	if d == nil || d.Spec.ExecutionID != "keep" {
		t.Fatalf("queued message after reopen = %+v", d)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestParseSyncPolicy(t *testing.T) {
	tests := []struct {
		in   string
		want SyncPolicy
		ok   bool
	}{
		{"", SyncInterval, true},
		{"interval", SyncInterval, true},
		{"always", SyncAlways, true},
		{"sometimes", 0, false},
	}
	for _, tc := range tests {
		got, err := ParseSyncPolicy(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSyncPolicy(%q) = %v, %v", tc.in, got, err)
		}
		if !tc.ok && !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ParseSyncPolicy(%q) error %v is not InvalidArgument", tc.in, err)
		}
	}
}

func TestSplitHostPort(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port int
		ok   bool
	}{
		{"127.0.0.1:4222", "127.0.0.1", 4222, true},
		{":0", "", 0, true},
		{"nohost", "", 0, false},
		{"h:port", "", 0, false},
	}
	for _, tc := range tests {
		host, port, err := splitHostPort(tc.in)
		if (err == nil) != tc.ok || host != tc.host || port != tc.port {
			t.Errorf("splitHostPort(%q) = %q, %d, %v", tc.in, host, port, err)
		}
	}
}

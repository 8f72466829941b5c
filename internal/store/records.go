package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/retry"
	"github.com/spear-go/spear/internal/task"
)

// CreateRecord stores a new execution record; ErrAlreadyExists if the id is
// taken.
func (s *Records) Create(ctx context.Context, r *execution.Record) (uint64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("encode record: %w", err)
	}
	rev, err := s.execs.Create(ctx, r.ID, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, errdefs.ExecutionExists.New("execution %q already exists", r.ID)
	}
	if err != nil {
		return 0, s.unavailable("create execution record", err)
	}
	if err := s.indexRecord(ctx, r.TaskID, r.ID); err != nil {
		return 0, err
	}
	return rev, nil
}

// indexRecord writes execution id's entry in its task's index, trying a
// few times: a record written without it would be missing from its task's
// listing for good (nothing writes it later).
func (s *core) indexRecord(ctx context.Context, taskID, id string) error {
	return indexBackoff.Do(ctx, 4, func(int) error {
		if _, err := s.index.Put(ctx, taskID+"."+id, nil); err != nil {
			return s.unavailable("index execution record", err)
		}
		return nil
	})
}

// indexBackoff spaces the tries of an index entry (a cluster electing a
// stream leader refuses writes for a moment).
var indexBackoff = retry.Backoff{Base: 50 * time.Millisecond, Max: time.Second}

// Put stores r, replacing any earlier version, and returns its revision;
// r's index entry is written with it (it may be r's first write).
func (s *Records) Put(ctx context.Context, r *execution.Record) (uint64, error) {
	return s.indexed(ctx, r, func() (uint64, error) {
		b, err := json.Marshal(r)
		if err != nil {
			return 0, fmt.Errorf("encode record: %w", err)
		}
		rev, err := s.execs.Put(ctx, r.ID, b)
		if err != nil {
			return 0, s.unavailable("store execution record", err)
		}
		return rev, nil
	})
}

// indexed runs write, a write of r that may be its first, with r's index
// entry written in the same round trip: an execution accepted with no
// record (Queue.Accept) has none until its first write. An entry that
// could not be written is written in the background (indexSoon).
func (s *Records) indexed(ctx context.Context, r *execution.Record, write func() (uint64, error)) (uint64, error) {
	idx, err := s.js.PublishAsync(kvSubject(BucketExecIndex, r.TaskID+"."+r.ID), nil)
	n, werr := write()
	if werr != nil {
		return 0, werr
	}
	if err != nil || s.awaitAll(ctx, []jetstream.PubAckFuture{idx}, "index execution record") != nil {
		s.indexSoon(r.TaskID, r.ID)
	}
	return n, nil
}

// PutAll stores new records and their index entries, pipelining
// the writes: one round trip for the whole batch rather than two per
// record.
func (s *Records) PutAll(ctx context.Context, recs []*execution.Record) error {
	futs := make([]jetstream.PubAckFuture, 0, 2*len(recs))
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode record: %w", err)
		}
		for _, m := range []struct {
			subj string
			data []byte
		}{{kvSubject(BucketExecutions, r.ID), b}, {kvSubject(BucketExecIndex, r.TaskID+"."+r.ID), nil}} {
			f, err := s.js.PublishAsync(m.subj, m.data)
			if err != nil {
				return s.unavailable("store execution records", err)
			}
			futs = append(futs, f)
		}
	}
	return s.awaitAll(ctx, futs, "store execution records")
}

func kvSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// awaitAll waits for every asynchronous publish to be acknowledged (ctx
// may be bounded: see quorum.go).
func (s *core) awaitAll(ctx context.Context, futs []jetstream.PubAckFuture, what string) error {
	var first error
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			first = cmp.Or(first, err)
		case <-ctx.Done():
			return s.unavailable(what, s.answered(ctx, ctx.Err()))
		}
	}
	if first != nil {
		return s.unavailable(what, first)
	}
	s.quorum.ok()
	return nil
}

// Update stores r if the stored revision is still rev (0: if none is
// stored, and then with its index entry); otherwise it returns an error
// wrapping ErrFailedPrecondition.
func (s *Records) Update(ctx context.Context, r *execution.Record, rev uint64) (uint64, error) {
	if rev == 0 { // its first write (see Get): indexed
		return s.indexed(ctx, r, func() (uint64, error) { return s.update(ctx, r, 0) })
	}
	return s.update(ctx, r, rev)
}

func (s *Records) update(ctx context.Context, r *execution.Record, rev uint64) (uint64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("encode record: %w", err)
	}
	n, err := s.execs.Update(ctx, r.ID, b, rev)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("execution %q changed concurrently: %w", r.ID, errdefs.ErrFailedPrecondition)
		}
		return 0, s.unavailable("update execution record", err)
	}
	return n, nil
}

// Claim is Update for a worker's claim of a queued execution (rev 0: of
// one accepted without a record, which the claim creates), which also
// writes the execution's index entry in the same round trip: the node
// that accepted the execution may not have (Queue.Accept writes none), or
// may have died, or lost its stream's leader, before it did.
func (s *Records) Claim(ctx context.Context, r *execution.Record, rev uint64) (uint64, error) {
	return s.indexed(ctx, r, func() (uint64, error) { return s.update(ctx, r, rev) })
}

// indexSoon writes an execution's index entry in the background, trying
// for as long as a cluster that lost a server may take to elect the index
// stream's leader again: nothing else writes it once the execution runs
// (a claim's entry that failed during an election was missing from its
// task's listing for good, once in TestClusterChaos). The entry is
// pending (IndexPending) until written; one never written stays pending.
func (s *core) indexSoon(taskID, id string) {
	s.unindexed.Store(id, taskID)
	go s.writeIndexSoon(taskID, id)
}

func (s *core) writeIndexSoon(taskID, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := indexBackoff.Do(ctx, 0, func(int) error {
		if s.nc.IsClosed() {
			return retry.Permanent(nats.ErrConnectionClosed)
		}
		if _, err := s.index.Put(ctx, taskID+"."+id, nil); err != nil {
			return s.unavailable("index execution record", err)
		}
		return nil
	})
	if err != nil {
		s.log.Warn("execution not indexed: its task's listing misses it", "execution", id, "err", err)
		return
	}
	s.unindexed.Delete(id)
}

// Index writes execution id's entry in its task's index now (a few tries;
// it may be there already), and reports whether it is stored.
func (s *Records) Index(ctx context.Context, taskID, id string) error {
	if err := s.indexRecord(ctx, taskID, id); err != nil {
		return err
	}
	s.unindexed.Delete(id)
	return nil
}

// IndexPending reports whether execution id's index entry is still being
// written in the background (its first write's could not be: indexed).
// Until it is, a node that dies takes the entry with it: the message of
// an execution whose entry is pending is not acked (the executor writes
// it with Index first).
func (s *Records) IndexPending(id string) bool {
	_, ok := s.unindexed.Load(id)
	return ok
}

// Get returns the record of execution id and its revision (from any
// copy). An execution accepted and not yet taken by a worker has no
// stored record: its queue message is its record, returned PENDING at
// revision 0 (an Update at revision 0 writes it only if it is still
// absent).
func (s *Records) Get(ctx context.Context, id string) (*execution.Record, uint64, error) {
	r, rev, err := s.getStored(ctx, id)
	return s.orQueued(ctx, id, r, rev, err)
}

// orQueued returns a record read of id (r, rev, err) as it is, or the
// queued record of id when none is stored (see Get). A message gone from
// the queue too may have been taken, run and acked since the record was
// read: it is read again.
func (s *Records) orQueued(ctx context.Context, id string, r *execution.Record, rev uint64, err error) (*execution.Record, uint64, error) {
	if !errors.Is(err, errdefs.ErrNotFound) {
		return r, rev, err
	}
	spec, qerr := s.queuedSpec(ctx, id)
	if errors.Is(qerr, errdefs.ErrNotFound) {
		return s.getLatestStored(ctx, id)
	}
	if qerr != nil {
		return nil, 0, err
	}
	return execution.NewRecord(spec), 0, nil
}

func (s *Records) getStored(ctx context.Context, id string) (*execution.Record, uint64, error) {
	e, err := s.execs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, errdefs.ExecutionNotFound.New("execution %q not found", id)
	}
	if err != nil {
		return nil, 0, s.unavailable("get execution record", err)
	}
	var r execution.Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("decode execution %q: %w: %w", id, errdefs.ErrInternal, err)
	}
	return &r, e.Revision(), nil
}

// ListFilter selects execution records.
type ListFilter struct {
	TaskID     string
	StartAfter string
	Limit      int
	Status     execution.Status // StatusUnknown: any
	// Newest lists the latest records first (StartAfter is then ignored).
	Newest bool
	// DeadLettered keeps only dead-lettered records.
	DeadLettered bool
}

// ListRecords returns records in execution id order (creation order), after
// StartAfter, at most Limit of them, and whether more exist.
func (s *Records) List(ctx context.Context, f ListFilter) ([]*execution.Record, bool, error) {
	ids, err := s.ids(ctx, f.TaskID)
	if err != nil {
		return nil, false, err
	}
	if f.Newest {
		slices.Reverse(ids)
		f.StartAfter = ""
	}
	var out []*execution.Record
	for _, id := range ids {
		if f.StartAfter != "" && id <= f.StartAfter {
			continue
		}
		r, _, err := s.getStored(ctx, id)
		if errors.Is(err, errdefs.ErrNotFound) {
			// The copy that answered may lag behind (a server back from
			// a restart): the stream's leader says whether it is gone, or
			// only queued.
			r, _, err = s.GetLatest(ctx, id)
		}
		if errors.Is(err, errdefs.ErrNotFound) {
			continue // expired since listed
		}
		if err != nil {
			return nil, false, err
		}
		if (f.Status != execution.StatusUnknown && r.Status != f.Status) || (f.DeadLettered && !r.DeadLettered) {
			continue
		}
		if len(out) == f.Limit {
			return out, true, nil
		}
		out = append(out, r)
	}
	return out, false, nil
}

// ids lists execution ids, of one task when taskID is set, sorted: those
// with a stored record and those queued without one yet.
func (s *Records) ids(ctx context.Context, taskID string) ([]string, error) {
	bucket, filter := s.execs, ">"
	if taskID != "" {
		bucket, filter = s.index, taskID+".>"
	}
	lister, err := bucket.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, s.unavailable("list executions", err)
	}
	var ids []string
	for k := range lister.Keys() {
		if taskID != "" {
			k = strings.TrimPrefix(k, taskID+".")
		}
		ids = append(ids, k)
	}
	queued, err := s.queuedIDs(ctx, taskID)
	if err != nil {
		return nil, err
	}
	ids = append(ids, queued...)
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// DeleteRecordsOfTask deletes every execution record of a task and returns
// how many it deleted.
func (s *Records) DeleteOfTask(ctx context.Context, taskID string) (int, error) {
	ids, err := s.ids(ctx, taskID)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		if err := s.Delete(ctx, taskID, id); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

// DeleteRecord deletes an execution's record and its index entry; deleting
// what does not exist is not an error.
func (s *Records) Delete(ctx context.Context, taskID, id string) error {
	if err := s.execs.Purge(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return s.unavailable("delete execution record", err)
	}
	if err := s.index.Purge(ctx, taskID+"."+id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return s.unavailable("delete execution index", err)
	}
	return nil
}

// CreateTask stores a new task; ErrAlreadyExists if its id is taken.
func (s *Tasks) Create(ctx context.Context, t *task.Task) error {
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encode task: %w", err)
	}
	if _, err := s.tasks.Create(ctx, t.ID, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return errdefs.TaskExists.New("task %q already exists", t.ID)
		}
		return s.unavailable("create task", err)
	}
	return nil
}

// PutTask stores t, replacing an earlier version.
func (s *Tasks) Put(ctx context.Context, t *task.Task) error {
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encode task: %w", err)
	}
	if _, err := s.tasks.Put(ctx, t.ID, b); err != nil {
		return s.unavailable("store task", err)
	}
	return nil
}

// GetTask returns task id.
func (s *Tasks) Get(ctx context.Context, id string) (*task.Task, error) {
	e, err := s.tasks.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, errdefs.TaskNotFound.New("task %q not found", id)
	}
	if err != nil {
		return nil, s.unavailable("get task", err)
	}
	var t task.Task
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return nil, fmt.Errorf("decode task %q: %w: %w", id, errdefs.ErrInternal, err)
	}
	return &t, nil
}

// DeleteTask deletes task id.
func (s *Tasks) Delete(ctx context.Context, id string) error {
	if err := s.tasks.Purge(ctx, id); err != nil {
		return s.unavailable("delete task", err)
	}
	return nil
}

// ListTasks returns every task, sorted by id.
func (s *Tasks) List(ctx context.Context) ([]*task.Task, error) {
	lister, err := s.tasks.ListKeys(ctx)
	if err != nil {
		return nil, s.unavailable("list tasks", err)
	}
	var ids []string
	for k := range lister.Keys() {
		ids = append(ids, k)
	}
	slices.Sort(ids)
	out := make([]*task.Task, 0, len(ids))
	for _, id := range ids {
		t, err := s.Get(ctx, id)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// TaskStats is what a task's executions measured, kept across restarts for
// estimates and TaskInfo.
type TaskStats struct {
	Count      int64            `json:"count"`
	LastStatus execution.Status `json:"last_status"`
	// RecentMs are the durations of the latest executions, oldest first.
	RecentMs []int64 `json:"recent_ms,omitempty"`
}

// Add adds what delta measured to st: its count, its last status (when
// set) and its recent durations, of which st keeps the latest keep.
func (st *TaskStats) Add(delta *TaskStats, keep int) {
	st.Count += delta.Count
	if delta.LastStatus != execution.StatusUnknown {
		st.LastStatus = delta.LastStatus
	}
	st.RecentMs = append(st.RecentMs, delta.RecentMs...)
	if len(st.RecentMs) > keep {
		st.RecentMs = st.RecentMs[len(st.RecentMs)-keep:]
	}
}

// AddStats adds delta to a task's stored stats by compare-and-set — the
// nodes sharing the store add theirs at the same time, and none is lost —
// and returns the sum, keeping the latest keep durations.
func (s *Tasks) AddStats(ctx context.Context, taskID string, delta *TaskStats, keep int) (*TaskStats, error) {
	for {
		var sum TaskStats
		var rev uint64
		e, err := s.stats.Get(ctx, taskID)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return nil, s.unavailable("get task stats", err)
		default:
			if err := json.Unmarshal(e.Value(), &sum); err != nil {
				s.log.Warn("task stats that cannot be read are replaced", "task", taskID, "err", err)
			}
			rev = e.Revision()
		}
		sum.Add(delta, keep)
		b, err := json.Marshal(&sum)
		if err != nil {
			return nil, fmt.Errorf("encode task stats: %w", err)
		}
		if rev == 0 {
			_, err = s.stats.Create(ctx, taskID, b)
		} else {
			_, err = s.stats.Update(ctx, taskID, b, rev)
		}
		if err == nil {
			return &sum, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, s.unavailable("store task stats", err)
		}
	}
}

// AllStats loads every task's stats.
func (s *Tasks) AllStats(ctx context.Context) (map[string]*TaskStats, error) {
	out := map[string]*TaskStats{}
	lister, err := s.stats.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return out, nil
	}
	if err != nil {
		return nil, s.unavailable("list task stats", err)
	}
	for k := range lister.Keys() {
		e, err := s.stats.Get(ctx, k)
		if err != nil {
			continue
		}
		var st TaskStats
		if json.Unmarshal(e.Value(), &st) == nil {
			out[k] = &st
		}
	}
	return out, nil
}

// DeleteStats deletes a task's stats.
func (s *Tasks) DeleteStats(ctx context.Context, taskID string) error {
	if err := s.stats.Purge(ctx, taskID); err != nil {
		return s.unavailable("delete task stats", err)
	}
	return nil
}

// WatchTasks calls changed with the id of every task that is created,
// updated or deleted (by any node) until ctx ends.
func (s *Tasks) Watch(ctx context.Context, changed func(id string)) error {
	w, err := s.tasks.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return s.unavailable("watch tasks", err)
	}
	go func() {
		defer w.Stop()
		for e := range w.Updates() {
			if e != nil {
				changed(e.Key())
			}
		}
	}()
	return nil
}

// Changes delivers execution id's record each time it is written, from
// the next message this connection publishes on, until stop is called: a way to wait for a record to change
// without polling. Records written between two receptions may be skipped
// (the latest one is kept); a nil record is a write that could not be
// decoded, or a deletion.
func (s *Records) Changes(id string) (records <-chan *execution.Record, stop func(), err error) {
	ch := make(chan *execution.Record, 1)
	sub, err := s.nc.Subscribe(kvSubject(BucketExecutions, id), func(m *nats.Msg) {
		var r *execution.Record
		if len(m.Data) > 0 {
			r = new(execution.Record)
			if json.Unmarshal(m.Data, r) != nil {
				r = nil
			}
		}
		for { // keep the latest
			select {
			case ch <- r:
				return
			default:
			}
			select {
			case <-ch:
			default:
			}
		}
	})
	if err != nil {
		return nil, nil, unavailable("watch execution record", err)
	}
	// No flush: the server handles a connection's messages in order, so
	// the interest is known before anything this node publishes next (the
	// execution's queue message), and so before any write that follows it.
	return ch, func() { _ = sub.Unsubscribe() }, nil
}

// GetLatest is Get read from the stream's leader: the latest record, where
// Get may answer from a replica that has not caught up yet (with 3
// copies; with one, it is Get). Use it where a stale answer would drop work: deciding that a
// queued execution is already finished, or gone.
func (s *Records) GetLatest(ctx context.Context, id string) (*execution.Record, uint64, error) {
	r, rev, err := s.getLatestStored(ctx, id)
	return s.orQueued(ctx, id, r, rev, err)
}

func (s *Records) getLatestStored(ctx context.Context, id string) (*execution.Record, uint64, error) {
	if s.opts.Replicas <= 1 { // one copy: any read is the leader's
		return s.getStored(ctx, id)
	}
	req, _ := json.Marshal(map[string]string{"last_by_subj": kvSubject(BucketExecutions, id)})
	msg, err := request(s.core, ctx, false, func(ctx context.Context) (*nats.Msg, error) {
		return s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+BucketExecutions, req)
	})
	if err != nil {
		return nil, 0, s.unavailable("get execution record", err)
	}
	var resp struct {
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Seq    uint64 `json:"seq"`
			Header []byte `json:"hdrs"`
			Data   []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, 0, s.unavailable("get execution record", err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == jsNoMessageFound:
		return nil, 0, errdefs.ExecutionNotFound.New("execution %q not found", id)
	case resp.Error != nil:
		return nil, 0, s.unavailable("get execution record",
			&jetstream.APIError{ErrorCode: jetstream.ErrorCode(resp.Error.ErrCode), Description: resp.Error.Description})
	case resp.Message == nil || bytes.Contains(resp.Message.Header, []byte("KV-Operation:")):
		return nil, 0, errdefs.ExecutionNotFound.New("execution %q not found", id) // deleted or purged
	}
	var r execution.Record
	if err := json.Unmarshal(resp.Message.Data, &r); err != nil {
		return nil, 0, fmt.Errorf("decode execution %q: %w: %w", id, errdefs.ErrInternal, err)
	}
	return &r, resp.Message.Seq, nil
}

// jsNoMessageFound is JetStream's error code for a message that is not in
// the stream.
const jsNoMessageFound = 10037

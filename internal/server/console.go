package server

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/executor"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
)

// The web console's routes: its pages (package console serves them) and
// the two answers the API has no single call for. They are the console's
// own, not part of the API's contract, and cost nothing unless a browser
// asks.
const (
	routeConsole           = "GET /ui/"
	routeConsoleOverview   = "GET /ui/api/overview"
	routeConsoleExecutions = "GET /ui/api/executions"
	routeConsoleExecution  = "GET /ui/api/executions/{id}"
)

// The overview's charts: overviewBuckets buckets of overviewBucket each,
// the latest one ending now.
const (
	overviewBuckets = 20
	overviewBucket  = 30 * time.Second
)

// consoleRoutes registers the console's pages and data routes on mux.
func (s *restAPI) consoleRoutes(mux *http.ServeMux, pages http.Handler) {
	mux.Handle(routeConsole, pages)
	mux.HandleFunc(routeConsoleOverview, s.handleOverview)
	mux.HandleFunc(routeConsoleExecutions, s.handleRecentExecutions)
	mux.HandleFunc(routeConsoleExecution, s.handleConsoleExecution)
}

// overview is the console's overview data: what finished on this node
// lately, per bucket, and the durable queue's depth per priority band.
type overview struct {
	BucketSeconds int                  `json:"bucketSeconds"`
	Buckets       []overviewBucketJSON `json:"buckets"`
	// QueueBands is the queue's depth by band, index 0 the lowest.
	QueueBands []int64 `json:"queueBands"`
	QueueError string  `json:"queueError,omitempty"`
}

// overviewBucketJSON is one bucket of finished executions: how many, how
// many did not complete, and their duration's percentiles.
type overviewBucketJSON struct {
	Start  int64 `json:"start"` // Unix milliseconds
	Count  int   `json:"count"`
	Failed int   `json:"failed"`
	P50Ms  int64 `json:"p50Ms"`
	P99Ms  int64 `json:"p99Ms"`
}

// handleOverview answers GET /ui/api/overview.
func (s *restAPI) handleOverview(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	since := now.Add(-overviewBuckets * overviewBucket)
	recent, _ := s.mgr.Finished(since)
	o := overview{BucketSeconds: int(overviewBucket / time.Second), Buckets: bucketsOf(recent, since)}
	bands, err := s.mgr.QueueDepthByBand(r.Context())
	if err != nil {
		o.QueueError = err.Error()
	}
	o.QueueBands = bands
	writeJSON(w, o)
}

// bucketsOf sorts finished executions into overviewBuckets buckets from
// since on.
func bucketsOf(recent []executor.Finished, since time.Time) []overviewBucketJSON {
	durations := make([][]int64, overviewBuckets)
	out := make([]overviewBucketJSON, overviewBuckets)
	for i := range out {
		out[i].Start = since.Add(time.Duration(i) * overviewBucket).UnixMilli()
	}
	for _, f := range recent {
		i := int(f.At.Sub(since) / overviewBucket) // truncated toward zero: check before since apart
		if f.At.Before(since) || i >= overviewBuckets {
			continue
		}
		out[i].Count++
		if f.Status != execution.StatusCompleted {
			out[i].Failed++
		}
		durations[i] = append(durations[i], f.DurationMs)
	}
	for i, d := range durations {
		slices.Sort(d)
		out[i].P50Ms, out[i].P99Ms = percentile(d, 50), percentile(d, 99)
	}
	return out
}

// percentile is the nearest-rank percentile p of sorted (0 when empty).
func percentile(sorted []int64, p int) int64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

// recentQuery is what GET /ui/api/executions selects: the newest scan
// executions (of one task, or all), and of those the ones that pass its
// filters, at most limit.
type recentQuery struct {
	task   string
	scan   int
	status execution.Status // unknown: any
	mode   execution.Mode   // unknown: any
	since  time.Time        // zero: any
	dead   bool
	limit  int
}

// keeps says whether rec passes q's filters.
func (q recentQuery) keeps(rec *execution.Record) bool {
	return (q.status == execution.StatusUnknown || rec.Status == q.status) &&
		(q.mode == execution.ModeUnknown || rec.Mode == q.mode) && (!q.dead || rec.DeadLettered)
}

// consoleExecution is one row of the console's executions table.
type consoleExecution struct {
	Execution json.RawMessage `json:"execution"` // ExecutionInfo
	Node      string          `json:"node,omitempty"`
}

// handleConsoleExecution answers GET /ui/api/executions/{id}: what
// GetExecutionStatus does not say (mode, priority, when it was accepted)
// and the node that runs or ran it.
func (s *restAPI) handleConsoleExecution(w http.ResponseWriter, r *http.Request) {
	rec, err := s.mgr.Views.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	row, err := consoleRow(rec)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, row)
}

// consoleRow is rec as a row of the console's tables.
func consoleRow(rec *execution.Record) (consoleExecution, error) {
	b, err := jsonOpts.Marshal(infoOf(rec))
	return consoleExecution{Execution: b, Node: rec.Node}, err
}

// handleRecentExecutions answers GET /ui/api/executions: executions newest
// first, filtered by status, task, mode, age (since=DURATION) and
// dead-lettered (dead=true); limit rows (default 100). The filters but
// the task apply to the newest scan executions (default and at most
// maxPage): a console's refresh reads a bounded number of records,
// however many the store holds.
func (s *restAPI) handleRecentExecutions(w http.ResponseWriter, r *http.Request) {
	q, err := parseRecentQuery(r, s.now())
	if err != nil {
		writeError(w, r, err)
		return
	}
	recs, _, err := s.mgr.Views.List(r.Context(), store.ListFilter{TaskID: q.task, Limit: q.scan, Newest: true})
	if err != nil {
		writeError(w, r, err)
		return
	}
	rows := []consoleExecution{}
	for _, rec := range recs {
		if len(rows) == q.limit || (!q.since.IsZero() && rec.CreatedAt.Before(q.since)) {
			break
		}
		if !q.keeps(rec) {
			continue
		}
		row, err := consoleRow(rec)
		if err != nil {
			writeError(w, r, err)
			return
		}
		rows = append(rows, row)
	}
	writeJSON(w, map[string]any{"executions": rows})
}

// parseRecentQuery reads GET /ui/api/executions' query.
func parseRecentQuery(r *http.Request, now time.Time) (recentQuery, error) {
	v := r.URL.Query()
	q := recentQuery{task: v.Get("task")}
	if q.task != "" {
		if err := task.ValidateID(q.task); err != nil {
			return q, err
		}
	}
	var err error
	if q.limit, err = positive(v.Get("limit"), "limit", defaultPage); err != nil {
		return q, err
	}
	if q.scan, err = positive(v.Get("scan"), "scan", maxPage); err != nil {
		return q, err
	}
	st, ok := enumValue(pb.ExecutionStatus(0).Descriptor(), v.Get("status"))
	if !ok {
		return q, errdefs.InvalidStatusFilter.New("status=%q: use one of %s", v.Get("status"), enumNames(pb.ExecutionStatus(0).Descriptor()))
	}
	m, ok := enumValue(pb.ExecutionMode(0).Descriptor(), v.Get("mode"))
	if !ok {
		return q, errdefs.UnknownExecutionMode.New("mode=%q: use one of %s", v.Get("mode"), enumNames(pb.ExecutionMode(0).Descriptor()))
	}
	q.status, q.mode = execution.Status(st), execution.Mode(m)
	q.dead, _ = strconv.ParseBool(v.Get("dead"))
	if d := v.Get("since"); d != "" {
		age, err := time.ParseDuration(d)
		if err != nil || age <= 0 {
			return q, errdefs.InvalidTimeRange.New("since=%q: want a positive duration such as 15m", d)
		}
		q.since = now.Add(-age)
	}
	return q, nil
}

// positive reads a count from 1 to maxPage named name ("": def).
func positive(s, name string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, errdefs.InvalidLimit.New("%s=%q: want a positive number (at most %d)", name, s, maxPage)
	}
	return min(n, maxPage), nil
}

// enumValue is the number of the value of ed that s names (as the JSON
// codec reads names: full or short, any case); "" is 0.
func enumValue(ed protoreflect.EnumDescriptor, s string) (int32, bool) {
	if s == "" {
		return 0, true
	}
	name, ok := enumName(ed, s)
	if !ok {
		return 0, false
	}
	return int32(ed.Values().ByName(protoreflect.Name(name)).Number()), true
}

// writeJSON answers 200 with v as JSON.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

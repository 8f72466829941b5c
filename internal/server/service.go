package server

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/callback"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/executor"
	"github.com/spear-go/spear/internal/procstat"
	"github.com/spear-go/spear/internal/registry"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
)

// StatusPath is the HTTP route answering an execution's status; %s is the
// execution id.
const StatusPath = "/api/v1/executions/%s/status"

// Service implements spearlet.FunctionService over the executor and the
// registry. Its methods return domain errors; the transports convert them.
type Service struct {
	*invocations
	*executionsAPI
	*tasksAPI
	*nodeAPI
	*restAPI
}

// The Service's parts, one per concern; they share serviceCore.
type (
	// invocations invoke functions: sync, async, stream, attach.
	invocations struct{ *serviceCore }
	// executionsAPI answers about executions: status, cancel, list,
	// requeue, watch.
	executionsAPI struct{ *serviceCore }
	// tasksAPI registers, updates, lists and deletes tasks, and takes
	// uploads.
	tasksAPI struct{ *serviceCore }
	// nodeAPI reports the node's health and stats.
	nodeAPI struct{ *serviceCore }
	// restAPI serves the plain HTTP routes.
	restAPI struct{ *serviceCore }
)

// serviceCore is what the Service's parts share.
type serviceCore struct {
	mgr      *executor.Manager
	reg      *registry.Registry
	store    *store.Store
	nodeID   string
	info     map[string]string
	now      func() time.Time
	ids      *execution.IDs
	cpu      *procstat.CPU
	rss      *procstat.RecentRSS // for GetHealth
	log      *slog.Logger
	maxInput int
	// callbackAllow are the hosts a callback_url may name.
	callbackAllow callback.Allowlist
	// cluster is the node registry's view; nil: this node alone.
	cluster ClusterView

	inv   *invocations
	execs *executionsAPI
	tasks *tasksAPI
	node  *nodeAPI
	rest  *restAPI
}

// ServiceOptions configures a Service.
type ServiceOptions struct {
	NodeID string
	// SystemInfo is reported by GetHealth.
	SystemInfo map[string]string
	// MaxInputBytes bounds a function's input.
	MaxInputBytes int
	// CallbackAllow are the hosts a callback_url may name; the zero
	// Allowlist allows loopback hosts only.
	CallbackAllow callback.Allowlist
	// Cluster is the node registry's view (ListNodes, and the cluster in
	// GetHealth and GetStats); nil reports this node alone.
	Cluster ClusterView
	Now     func() time.Time
	Logger  *slog.Logger
	// IDs makes the ids of executions the caller names none for; nil:
	// ids made at Now's times.
	IDs *execution.IDs
}

// NewService returns the FunctionService implementation.
func NewService(opts ServiceOptions, mgr *executor.Manager, reg *registry.Registry, st *store.Store) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.IDs == nil {
		opts.IDs = execution.NewIDs(opts.Now)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &serviceCore{
		mgr: mgr, reg: reg, store: st, nodeID: opts.NodeID, info: opts.SystemInfo,
		now: opts.Now, ids: opts.IDs, cpu: procstat.NewCPU(runtime.NumCPU()), rss: &procstat.RecentRSS{MaxAge: 250 * time.Millisecond}, log: opts.Logger,
		maxInput: opts.MaxInputBytes, callbackAllow: opts.CallbackAllow, cluster: opts.Cluster,
	}
	c.inv, c.execs, c.tasks, c.node, c.rest = &invocations{c}, &executionsAPI{c}, &tasksAPI{c}, &nodeAPI{c}, &restAPI{c}
	return &Service{invocations: c.inv, executionsAPI: c.execs, tasksAPI: c.tasks, nodeAPI: c.node, restAPI: c.rest}
}

// failed is an InvokeFunction answer for an invocation refused without an
// RPC error (the contract's mode errors).
func failed(code errdefs.Code, msg string) *pb.InvokeFunctionResponse {
	return &pb.InvokeFunctionResponse{
		Success: false,
		Message: msg,
		Result:  &pb.ExecutionResult{Status: pb.ExecutionStatus_EXECUTION_STATUS_FAILED, ErrorCode: code.String(), ErrorMessage: msg},
	}
}

// InvokeFunction runs a function in sync mode or accepts it in async mode.
func (s *invocations) InvokeFunction(ctx context.Context, req *pb.InvokeFunctionRequest) (*pb.InvokeFunctionResponse, error) {
	switch req.ExecutionMode {
	case pb.ExecutionMode_EXECUTION_MODE_SYNC, pb.ExecutionMode_EXECUTION_MODE_ASYNC:
	case pb.ExecutionMode_EXECUTION_MODE_STREAM:
		return failed(errdefs.StreamModeNotSupported,
			"stream mode is not supported by InvokeFunction: call the StreamFunction method, which streams output chunks as they are produced"), nil
	default:
		return failed(errdefs.UnknownExecutionMode, fmt.Sprintf("%s: InvokeFunction runs SYNC or ASYNC (EXECUTION_MODE_SYNC, EXECUTION_MODE_ASYNC); "+
			"for STREAM call the StreamFunction method", enumProblem("execution_mode", req.ExecutionMode))), nil
	}
	spec, err := s.prepare(ctx, req, execution.Mode(req.ExecutionMode))
	if err != nil {
		return nil, err
	}
	if spec.Mode == execution.ModeAsync {
		rec, est, existing, err := s.mgr.Async.Submit(ctx, spec)
		if err != nil {
			return nil, err
		}
		msg := "accepted"
		if existing {
			msg = "an execution with this idempotency key exists: " + strings.ToLower(rec.Status.String())
		}
		resp := &pb.InvokeFunctionResponse{
			Success:               true,
			Message:               msg,
			ExecutionId:           rec.ID,
			TaskId:                rec.TaskID,
			InstanceId:            s.nodeID,
			Result:                resultOf(rec, existing),
			StatusEndpoint:        fmt.Sprintf(StatusPath, rec.ID),
			EstimatedCompletionMs: max(1, est.Milliseconds()),
		}
		if req.Wait {
			final, err := s.mgr.Views.Wait(ctx, rec.ID)
			if err != nil {
				return nil, err
			}
			resp.Result = s.resultWithOutput(ctx, final)
			resp.Success = final.Status == execution.StatusCompleted
			resp.Message = outcome(final)
		}
		return resp, nil
	}
	rec, err := s.mgr.Runs.Run(ctx, spec, nil)
	if err != nil {
		return nil, err
	}
	return &pb.InvokeFunctionResponse{
		Success:     rec.Status == execution.StatusCompleted,
		Message:     outcome(rec),
		ExecutionId: rec.ID,
		TaskId:      rec.TaskID,
		InstanceId:  s.nodeID,
		Result:      s.resultWithOutput(ctx, rec),
	}, nil
}

// replyOutputMax is the most output a unary answer carries: with the rest
// of the answer it stays under the 4 MiB a gRPC client accepts by default.
// A larger output comes whole by attaching or from the output route.
const replyOutputMax = 3 << 20

// resultWithOutput is an execution's result with as much of its output as
// an answer carries: what the record keeps, completed from the store.
func (s *invocations) resultWithOutput(ctx context.Context, r *execution.Record) *pb.ExecutionResult {
	res := resultOf(r, true)
	if !r.OutputPartial() || !r.OutputStored {
		return res
	}
	src := r.ID
	if r.OutputOf != "" { // a graph: its output step's
		src = r.OutputOf
	}
	head, err := s.mgr.Views.OutputHead(ctx, src, replyOutputMax)
	if err != nil {
		s.log.Warn("reading stored output", "execution", r.ID, "err", err)
		return res
	}
	if len(head) < len(r.Output) { // the chunks expired or went to free space
		return res
	}
	res.Result = pb.BytesAny(head)
	res.OutputPartial = r.OutputSize > int64(len(head))
	return res
}

func outcome(r *execution.Record) string {
	if r.Status == execution.StatusCompleted {
		return "completed"
	}
	if r.ErrorMessage != "" {
		return strings.ToLower(r.Status.String()) + ": " + r.ErrorMessage
	}
	return strings.ToLower(r.Status.String())
}

// prepare validates an invocation, registers its task if it asks to, and
// returns what to run.
func (s *invocations) prepare(ctx context.Context, req *pb.InvokeFunctionRequest, mode execution.Mode) (*execution.Spec, error) {
	taskID, err := s.resolveTask(ctx, req)
	if err != nil {
		return nil, err
	}
	c := req.Context
	if c == nil {
		c = &pb.ExecutionContext{}
	}
	if c.TimeoutMs < 0 {
		return nil, errdefs.InvalidTimeout.New("context.timeout_ms must not be negative (0 means the default)")
	}
	if c.MaxRetries < 0 {
		return nil, errdefs.InvalidMaxRetries.New("context.max_retries must not be negative")
	}
	if err := validEnv(c.Environment); err != nil {
		return nil, err
	}
	if !utf8.ValidString(req.FunctionName) || strings.ContainsRune(req.FunctionName, 0) || len(req.FunctionName) > 256 {
		return nil, errdefs.InvalidFunctionName.New("function_name must be UTF-8 without NUL, at most 256 bytes")
	}
	in, err := input(req.Parameters)
	if err != nil {
		return nil, err
	}
	if req.InputRef != "" {
		if err := s.checkInputRef(ctx, req); err != nil {
			return nil, err
		}
	}
	if s.maxInput > 0 && len(in) > s.maxInput {
		return nil, errdefs.InputTooLarge.New("input of %d bytes exceeds the limit of %d bytes", len(in), s.maxInput)
	}
	if req.CallbackUrl != "" {
		if err := s.callbackAllow.Check(req.CallbackUrl); err != nil {
			return nil, err
		}
	}
	now := s.now()
	id := c.ExecutionId
	switch {
	case req.IdempotencyKey != "" && id != "":
		return nil, errdefs.ConflictingIDs.New("give either context.execution_id or idempotency_key, not both")
	case req.IdempotencyKey != "":
		if len(req.IdempotencyKey) > 256 || !utf8.ValidString(req.IdempotencyKey) {
			return nil, errdefs.InvalidIdempotencyKey.New("idempotency_key must be valid UTF-8 of at most 256 bytes")
		}
		id = execution.IdempotentID(taskID, req.IdempotencyKey)
	case id == "":
		id = s.ids.New()
	default:
		if err := execution.ValidateID(id); err != nil {
			return nil, err
		}
	}
	return &execution.Spec{
		ExecutionID: id,
		TaskID:      taskID,
		Function:    req.FunctionName,
		Mode:        mode,
		Input:       in,
		InputRef:    req.InputRef,
		Env:         c.Environment,
		TimeoutMs:   c.TimeoutMs,
		MaxRetries:  c.MaxRetries,
		Metadata:    req.InvocationMetadata,
		CreatedAt:   now,
		IDGiven:     c.ExecutionId != "",
		IDUnseen:    c.ExecutionId == "" && req.IdempotencyKey == "",
		Idempotent:  req.IdempotencyKey != "",
		Priority:    req.Priority,
		CallbackURL: req.CallbackUrl,
	}, nil
}

// checkInputRef checks an invocation's input_ref: an uploaded artifact
// that exists, given instead of parameters.
func (s *invocations) checkInputRef(ctx context.Context, req *pb.InvokeFunctionRequest) error {
	if len(req.Parameters) > 0 {
		return errdefs.ConflictingInput.New("give either parameters or input_ref, not both")
	}
	if !strings.HasPrefix(req.InputRef, store.ArtifactScheme) {
		return errdefs.InvalidInputRef.New("input_ref %q: want %ssha256:<hex>, the location UploadArtifact returned", req.InputRef, store.ArtifactScheme)
	}
	return s.store.Inputs.Exists(ctx, req.InputRef)
}

// resolveTask returns the task an invocation runs, registering it first for
// NEW_TASK (or EXISTING_TASK with create_if_not_exists).
func (s *invocations) resolveTask(ctx context.Context, req *pb.InvokeFunctionRequest) (string, error) {
	register := func() (string, error) {
		if req.ArtifactSpec == nil {
			return "", errdefs.MissingArtifactSpec.New("a new task needs an artifact_spec")
		}
		t, _, err := s.reg.Register(ctx, registry.Registration{
			ID: req.TaskId, Name: req.TaskName, Description: req.TaskDescription, Artifact: artifactOf(req.ArtifactSpec),
			Limits: limitsOf(req.Limits),
		})
		if err != nil {
			return "", err
		}
		return t.ID, nil
	}
	switch req.InvocationType {
	case pb.InvocationType_INVOCATION_TYPE_NEW_TASK:
		return register()
	case pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK, pb.InvocationType_INVOCATION_TYPE_UNKNOWN:
		if req.TaskId == "" {
			if req.InvocationType == pb.InvocationType_INVOCATION_TYPE_UNKNOWN && req.ArtifactSpec != nil {
				return register()
			}
			return "", errdefs.MissingTaskID.New("task_id is required to invoke an existing task")
		}
		// Only whether it exists: the executor resolves its artifact,
		// once per call.
		_, err := s.reg.Lookup(ctx, req.TaskId)
		if err == nil {
			return req.TaskId, nil
		}
		if errdefs.TaskNotFound.Is(err) && req.CreateIfNotExists && req.ArtifactSpec != nil {
			return register()
		}
		return "", err
	default:
		return "", errdefs.InvalidInvocationType.New("%s: use one of %s (or leave it unset to invoke task_id)",
			enumProblem("invocation_type", req.InvocationType), enumNames(req.InvocationType.Descriptor()))
	}
}

// streamTo runs an invocation in stream mode, sending output chunks as the
// function writes them and a final message with the outcome.
func (s *invocations) streamTo(ctx context.Context, req *pb.InvokeFunctionRequest, send func(*pb.StreamExecutionResult) error) error {
	if err := streamMode(req.ExecutionMode); err != nil {
		return err
	}
	if id := req.GetContext().GetExecutionId(); id != "" {
		rec, err := s.mgr.Views.Get(ctx, id)
		if err == nil {
			if err := attachable(req, rec); err != nil {
				return err
			}
			return s.attach(ctx, id, send)
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
	}
	spec, err := s.prepare(ctx, req, execution.ModeStream)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex
	var sendErr error
	emit := func(m *pb.StreamExecutionResult) {
		mu.Lock()
		defer mu.Unlock()
		if sendErr != nil {
			return
		}
		if sendErr = send(m); sendErr != nil {
			cancel(sendErr) // the caller is gone: stop the function
		}
	}
	spec.IDUnseen = false // the first message names it
	emit(&pb.StreamExecutionResult{
		ExecutionId: spec.ExecutionID,
		Status:      pb.ExecutionStatus_EXECUTION_STATUS_PENDING,
		Metadata:    map[string]string{"task_id": spec.TaskID, "node": s.nodeID},
	})
	rec, err := s.mgr.Runs.Run(ctx, spec, func(c executor.Chunk) {
		emit(&pb.StreamExecutionResult{
			ExecutionId: spec.ExecutionID,
			Status:      pb.ExecutionStatus_EXECUTION_STATUS_RUNNING,
			ChunkData:   pb.BytesAny(c.Data),
			Sequence:    c.Seq,
		})
	})
	if err != nil {
		return err
	}
	emit(finalMessage(rec, s.nodeID))
	mu.Lock()
	defer mu.Unlock()
	return sendErr
}

// streamMode checks a StreamFunction's execution_mode: STREAM, SYNC (the
// caller waits for the result, as a stream does) or unset run as a stream;
// ASYNC is refused, as a stream's execution ends with its caller; a value
// of no mode is refused as InvokeFunction refuses it.
func streamMode(m pb.ExecutionMode) error {
	switch m {
	case pb.ExecutionMode_EXECUTION_MODE_UNKNOWN, pb.ExecutionMode_EXECUTION_MODE_STREAM, pb.ExecutionMode_EXECUTION_MODE_SYNC:
		return nil
	case pb.ExecutionMode_EXECUTION_MODE_ASYNC:
		return errdefs.AsyncModeNotSupported.New("StreamFunction streams while its caller stays, and a caller that leaves cancels the execution: " +
			"to run in the background, call InvokeFunction with EXECUTION_MODE_ASYNC, then StreamFunction with only context.execution_id to follow it")
	}
	return errdefs.UnknownExecutionMode.New("%s: StreamFunction runs STREAM (or unset, or SYNC)", enumProblem("execution_mode", m))
}

// attachable checks that a stream request naming an existing execution
// asks only to attach to it: an id is never reused for a new run, so a
// request that also names another task, a new task or input is refused
// rather than silently ignored.
func attachable(req *pb.InvokeFunctionRequest, rec *execution.Record) error {
	if (req.TaskId == "" || req.TaskId == rec.TaskID) && len(req.Parameters) == 0 && req.InputRef == "" &&
		req.InvocationType != pb.InvocationType_INVOCATION_TYPE_NEW_TASK {
		return nil
	}
	return errdefs.ExecutionExists.New("execution %q already exists (task %q): execution ids are never reused; to attach to it send only context.execution_id, without input or another task",
		rec.ID, rec.TaskID)
}

// finalMessage is the last message of a stream: the terminal status.
func finalMessage(rec *execution.Record, node string) *pb.StreamExecutionResult {
	return &pb.StreamExecutionResult{
		ExecutionId:  rec.ID,
		Status:       pb.ExecutionStatus(rec.Status),
		IsFinal:      rec.Status.Terminal(),
		ErrorMessage: rec.ErrorMessage,
		ErrorCode:    rec.ErrorCode,
		Metadata: map[string]string{
			"task_id":           rec.TaskID,
			"node":              node,
			"exit_code":         strconv.Itoa(int(rec.ExitCode)),
			"execution_time_ms": strconv.FormatInt(rec.DurationMs, 10),
			"memory_used_bytes": strconv.FormatInt(rec.MemoryUsedBytes, 10),
		},
	}
}

// attach streams an existing execution's output, replayed from the first
// chunk and then followed live, and ends with its final status.
func (s *invocations) attach(ctx context.Context, id string, send func(*pb.StreamExecutionResult) error) error {
	rec, err := s.mgr.Views.Attach(ctx, id, func(c executor.Chunk) error {
		return send(&pb.StreamExecutionResult{
			ExecutionId: id,
			Status:      pb.ExecutionStatus_EXECUTION_STATUS_RUNNING,
			ChunkData:   pb.BytesAny(c.Data),
			Sequence:    c.Seq,
			Metadata:    map[string]string{"attached": "true"},
		})
	})
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return send(finalMessage(rec, s.nodeID))
}

// WatchExecution streams an execution's status transitions.
func (s *executionsAPI) watch(ctx context.Context, req *pb.WatchExecutionRequest, send func(*pb.ExecutionEvent) error) error {
	return s.mgr.Views.Watch(ctx, req.ExecutionId, func(r *execution.Record) error {
		return send(&pb.ExecutionEvent{
			ExecutionId: r.ID,
			Status:      pb.ExecutionStatus(r.Status),
			Time:        ts(s.now()),
			Result:      resultOf(r, req.IncludeResult && r.Status.Terminal()),
		})
	})
}

// GetExecutionStatus reports an execution's status, output and logs.
func (s *executionsAPI) GetExecutionStatus(ctx context.Context, req *pb.GetExecutionStatusRequest) (*pb.GetExecutionStatusResponse, error) {
	rec, err := s.mgr.Views.Get(ctx, req.ExecutionId)
	if errdefs.ExecutionNotFound.Is(err) {
		return &pb.GetExecutionStatusResponse{Found: false, Message: err.Error()}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := statusOf(rec, false, req.IncludeLogs)
	if rec.Graph != nil && req.IncludeLogs {
		if resp.Logs, err = s.inv.graphLogs(ctx, rec.ID); err != nil {
			return nil, err
		}
	}
	if req.IncludeResult {
		resp.Result = s.inv.resultWithOutput(ctx, rec)
	}
	return resp, nil
}

// CancelExecution stops a queued or running execution.
func (s *executionsAPI) CancelExecution(ctx context.Context, req *pb.CancelExecutionRequest) (*pb.CancelExecutionResponse, error) {
	if !utf8.ValidString(req.Reason) {
		return nil, errdefs.InvalidUTF8.New("reason must be valid UTF-8")
	}
	out, err := s.mgr.Cancels.Cancel(ctx, req.ExecutionId, req.Reason, req.Force)
	if err != nil {
		return nil, err
	}
	return &pb.CancelExecutionResponse{Success: out.Cancelled, Message: out.Message, FinalStatus: pb.ExecutionStatus(out.Status)}, nil
}

const (
	defaultPage = 100
	maxPage     = 1000
)

func pageSize(limit int32) (int, error) {
	switch {
	case limit < 0:
		return 0, errdefs.InvalidLimit.New("limit must not be negative")
	case limit == 0:
		return defaultPage, nil
	default:
		return min(int(limit), maxPage), nil
	}
}

func (s *tasksAPI) taskInfo(t *task.Task, details bool) *pb.TaskInfo {
	count, last := s.mgr.TaskStats(t.ID)
	ti := &pb.TaskInfo{
		TaskId:         t.ID,
		TaskName:       t.Name,
		CreatedAt:      t.CreatedAt.UnixMilli(),
		UpdatedAt:      t.UpdatedAt.UnixMilli(),
		ExecutionCount: int32(min(count, 1<<31-1)),
		LastStatus:     pb.ExecutionStatus(last),
		Description:    t.Description,
		Limits:         limitsPB(t.Limits),
	}
	if details {
		ti.ArtifactSpec = specOf(t.Artifact)
		ti.Metadata = t.Metadata
	}
	return ti
}

// ListTasks lists tasks by id, paginated.
func (s *tasksAPI) ListTasks(ctx context.Context, req *pb.ListTasksRequest) (*pb.ListTasksResponse, error) {
	n, err := pageSize(req.Limit)
	if err != nil {
		return nil, err
	}
	tasks, more, err := s.reg.List(ctx, req.Prefix, req.StartAfter, n)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListTasksResponse{HasMore: more}
	for _, t := range tasks {
		resp.Tasks = append(resp.Tasks, s.taskInfo(t, req.IncludeDetails))
	}
	if more && len(tasks) > 0 {
		resp.NextStartAfter = tasks[len(tasks)-1].ID
	}
	return resp, nil
}

// GetTask returns one task and, optionally, its latest executions.
func (s *tasksAPI) GetTask(ctx context.Context, req *pb.GetTaskRequest) (*pb.GetTaskResponse, error) {
	t, err := s.reg.Lookup(ctx, req.TaskId)
	if errdefs.TaskNotFound.Is(err) {
		return &pb.GetTaskResponse{Found: false, Message: err.Error()}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := &pb.GetTaskResponse{Found: true, Task: s.taskInfo(t, true)}
	if req.IncludeExecutions {
		n, err := pageSize(req.ExecutionLimit)
		if err != nil {
			return nil, err
		}
		if req.ExecutionLimit == 0 {
			n = 10
		}
		recs, _, err := s.mgr.Views.List(ctx, store.ListFilter{TaskID: t.ID, Limit: n, Newest: true})
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			resp.Executions = append(resp.Executions, infoOf(r))
		}
	}
	return resp, nil
}

// DeleteTask removes a task and, optionally, its execution records.
func (s *tasksAPI) DeleteTask(ctx context.Context, req *pb.DeleteTaskRequest) (*pb.DeleteTaskResponse, error) {
	if _, err := s.reg.Lookup(ctx, req.TaskId); err != nil {
		return nil, err
	}
	if n := s.mgr.LiveOfTask(req.TaskId); n > 0 && !req.Force {
		return nil, errdefs.TaskBusy.New("task %q has %d executions running or queued on this node; wait, cancel them, or delete with force", req.TaskId, n)
	}
	if err := s.reg.Delete(ctx, req.TaskId); err != nil {
		return nil, err
	}
	if err := s.mgr.ForgetTask(ctx, req.TaskId); err != nil {
		s.log.Warn("deleting task stats", "task", req.TaskId, "err", err)
	}
	resp := &pb.DeleteTaskResponse{Success: true, Deleted: true, Message: "deleted"}
	if req.CleanupExecutions {
		n, err := s.store.Records.DeleteOfTask(ctx, req.TaskId)
		if err != nil {
			return nil, err
		}
		resp.CleanedExecutions = int32(n)
	}
	return resp, nil
}

// ListExecutions lists execution records in creation order, paginated.
func (s *executionsAPI) ListExecutions(ctx context.Context, req *pb.ListExecutionsRequest) (*pb.ListExecutionsResponse, error) {
	n, err := pageSize(req.Limit)
	if err != nil {
		return nil, err
	}
	if req.StatusFilter < 0 || req.StatusFilter > pb.ExecutionStatus_EXECUTION_STATUS_TIMEOUT {
		return nil, errdefs.InvalidStatusFilter.New("%s: use one of %s (or leave it unset for all)",
			enumProblem("status_filter", req.StatusFilter), enumNames(req.StatusFilter.Descriptor()))
	}
	if req.ParentId != "" {
		return s.listSteps(ctx, req)
	}
	if req.TaskId != "" {
		if err := task.ValidateID(req.TaskId); err != nil {
			return nil, err
		}
	}
	recs, more, err := s.mgr.Views.List(ctx, store.ListFilter{
		TaskID: req.TaskId, StartAfter: req.StartAfter, Limit: n, Status: execution.Status(req.StatusFilter),
		DeadLettered: req.DeadLetteredOnly,
	})
	if err != nil {
		return nil, err
	}
	resp := &pb.ListExecutionsResponse{HasMore: more}
	for _, r := range recs {
		resp.Executions = append(resp.Executions, infoOf(r))
	}
	if more && len(recs) > 0 {
		resp.NextStartAfter = recs[len(recs)-1].ID
	}
	return resp, nil
}

// GetHealth reports the node's health from measured values. It is the
// cheapest call of the node: the queue's depth (and whether the store
// answers) is at most queueProbeMaxAge old, the rest in-memory counters.
func (s *nodeAPI) GetHealth(ctx context.Context, req *pb.GetHealthRequest) (*pb.GetHealthResponse, error) {
	resp := &pb.GetHealthResponse{Status: "healthy", Message: "serving", UptimeSeconds: int64(s.mgr.Uptime().Seconds()),
		Cluster: s.clusterInfo()}
	queued, qerr := s.mgr.RecentQueueDepth(ctx)
	store := s.store.Storage()
	switch {
	case qerr != nil:
		resp.Status, resp.Message = "degraded", "the durable store does not answer: "+qerr.Error()
	case store.Full:
		resp.Status, resp.Message = "degraded", "the store refused a write for lack of space: new work is refused (STORAGE_FULL) until retention frees space"
	case store.Budget > 0 && store.Used*10 > store.Budget*9:
		resp.Status, resp.Message = "degraded", fmt.Sprintf("the store holds %d of its %d bytes (over 90%%): new work will soon be refused (STORAGE_FULL)", store.Used, store.Budget)
	}
	if req.IncludeDetails {
		resp.Details = s.healthDetails(queued, store)
	}
	return resp, nil
}

// healthDetails are GetHealth's details: what runs on this node now.
// active_tasks counts the tasks with an execution running here, as
// GetStats' TaskStats.active_tasks does.
func (s *nodeAPI) healthDetails(queued int64, store store.StorageState) *pb.HealthDetails {
	running, waiting := s.mgr.Counts()
	rss := s.rss.Get()
	info := map[string]string{
		"node_id":            s.nodeID,
		"go_version":         runtime.Version(),
		"num_cpu":            strconv.Itoa(runtime.NumCPU()),
		"goroutines":         strconv.Itoa(runtime.NumGoroutine()),
		"workers":            strconv.Itoa(s.mgr.Workers()),
		"rss_bytes":          strconv.FormatInt(rss, 10),
		"store_bytes":        strconv.FormatInt(store.Used, 10),
		"store_budget_bytes": strconv.FormatInt(store.Budget, 10),
	}
	for k, v := range s.info {
		info[k] = v
	}
	return &pb.HealthDetails{
		ActiveTasks:       int32(s.mgr.RunningTasks()),
		RunningExecutions: int32(running),
		PendingExecutions: int32(int64(waiting) + queued),
		TotalMemoryUsed:   rss,
		TotalExecutions:   s.mgr.TotalExecutions(),
		SystemInfo:        info,
	}
}

// GetStats reports measured service, task and execution statistics over a
// time range (default 24 h).
func (s *nodeAPI) GetStats(ctx context.Context, req *pb.GetStatsRequest) (*pb.GetStatsResponse, error) {
	if req.TimeRangeHours < 0 {
		return nil, errdefs.InvalidTimeRange.New("time_range_hours must not be negative")
	}
	hours := req.TimeRangeHours
	if hours == 0 {
		hours = 24
	}
	since := s.now().Add(-time.Duration(hours) * time.Hour)
	recent, total := s.mgr.Finished(since)
	tasks, _, err := s.reg.List(ctx, "", "", 1<<30)
	if err != nil {
		return nil, err
	}
	rss, _ := procstat.RSS()
	memTotal, _ := procstat.MemTotal()
	cpu, _ := s.cpu.Percent()
	resp := &pb.GetStatsResponse{ServiceStats: &pb.ServiceStats{
		UptimeSeconds:   int64(s.mgr.Uptime().Seconds()),
		TotalTasks:      int32(len(tasks)),
		TotalExecutions: int32(min(total, 1<<31-1)),
		TotalMemoryUsed: rss,
		CpuUsagePercent: cpu,
	}, Cluster: s.clusterInfo()}
	st := s.store.Storage()
	resp.ServiceStats.StoreBytes, resp.ServiceStats.StoreBudgetBytes = st.Used, st.Budget
	if memTotal > 0 {
		resp.ServiceStats.MemoryUsagePercent = float64(rss) / float64(memTotal) * 100
	}
	if req.IncludeTaskStats {
		resp.TaskStats = s.taskStats(tasks, recent)
	}
	if req.IncludeExecutionStats {
		resp.ExecutionStats = s.executionStats(ctx, recent)
	}
	return resp, nil
}

// taskStats counts tasks by type and as active — with an execution
// running on this node now, as GetHealth counts them — or idle, and names
// the five with the most recent executions.
func (s *nodeAPI) taskStats(tasks []*task.Task, recent []executor.Finished) *pb.TaskStats {
	active := int32(s.mgr.RunningTasks())
	ts := &pb.TaskStats{TasksByType: map[string]int32{}, ActiveTasks: active, IdleTasks: max(0, int32(len(tasks))-active)}
	perTask := map[string]int{}
	for _, f := range recent {
		perTask[f.TaskID]++
	}
	byID := map[string]*task.Task{}
	for _, t := range tasks {
		byID[t.ID] = t
		ts.TasksByType[string(t.Artifact.Type)]++
	}
	ids := make([]string, 0, len(perTask))
	for id := range perTask {
		if byID[id] != nil {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b string) int {
		if perTask[a] != perTask[b] {
			return perTask[b] - perTask[a]
		}
		return strings.Compare(a, b)
	})
	for _, id := range ids[:min(len(ids), 5)] {
		ts.MostActiveTasks = append(ts.MostActiveTasks, s.tasks.taskInfo(byID[id], false))
	}
	return ts
}

// executionStats counts executions running and pending now (as GetHealth
// does) and those that finished recently, by outcome and function.
func (s *nodeAPI) executionStats(ctx context.Context, recent []executor.Finished) *pb.ExecutionStats {
	running, waiting := s.mgr.Counts()
	queued, _ := s.mgr.RecentQueueDepth(ctx)
	es := &pb.ExecutionStats{
		RunningExecutions:    int32(running),
		PendingExecutions:    int32(int64(waiting) + queued),
		ExecutionsByFunction: map[string]int32{},
	}
	var sum float64
	for _, f := range recent {
		switch f.Status {
		case execution.StatusCompleted:
			es.CompletedExecutions++
		case execution.StatusFailed, execution.StatusTimeout:
			es.FailedExecutions++
		}
		sum += float64(f.DurationMs)
		name := f.TaskID
		if f.Function != "" {
			name += "/" + f.Function
		}
		es.ExecutionsByFunction[name]++
	}
	if len(recent) > 0 {
		es.AverageExecutionTimeMs = sum / float64(len(recent))
		es.SuccessRatePercent = float64(es.CompletedExecutions) / float64(len(recent)) * 100
	}
	return es
}

// RegisterTask registers a task without invoking it.
func (s *tasksAPI) RegisterTask(ctx context.Context, req *pb.RegisterTaskRequest) (*pb.RegisterTaskResponse, error) {
	if req.ArtifactSpec == nil {
		return nil, errdefs.MissingArtifactSpec.New("artifact_spec is required")
	}
	t, created, err := s.reg.Register(ctx, registry.Registration{
		ID: req.TaskId, Name: req.TaskName, Description: req.TaskDescription,
		Artifact: artifactOf(req.ArtifactSpec), Metadata: req.Metadata, Limits: limitsOf(req.Limits),
	})
	if err != nil {
		return nil, err
	}
	return &pb.RegisterTaskResponse{Task: s.taskInfo(t, true), Created: created}, nil
}

// UpdateTaskLimits replaces a task's limits.
func (s *tasksAPI) UpdateTaskLimits(ctx context.Context, req *pb.UpdateTaskLimitsRequest) (*pb.UpdateTaskLimitsResponse, error) {
	t, err := s.reg.UpdateLimits(ctx, req.TaskId, limitsOf(req.Limits))
	if err != nil {
		return nil, err
	}
	return &pb.UpdateTaskLimitsResponse{Task: s.taskInfo(t, true)}, nil
}

// UpdateTask re-pins a task to an artifact's content as it is now.
func (s *tasksAPI) UpdateTask(ctx context.Context, req *pb.UpdateTaskRequest) (*pb.UpdateTaskResponse, error) {
	t, changed, err := s.reg.Update(ctx, req.TaskId, artifactOf(req.ArtifactSpec))
	if err != nil {
		return nil, err
	}
	return &pb.UpdateTaskResponse{Task: s.taskInfo(t, true), Changed: changed}, nil
}

// RequeueExecution queues a dead-lettered execution again.
func (s *executionsAPI) RequeueExecution(ctx context.Context, req *pb.RequeueExecutionRequest) (*pb.RequeueExecutionResponse, error) {
	rec, err := s.mgr.Async.Requeue(ctx, req.ExecutionId)
	if err != nil {
		return nil, err
	}
	return &pb.RequeueExecutionResponse{
		Success: true, Message: "queued again", ExecutionId: rec.ID, Status: pb.ExecutionStatus(rec.Status),
	}, nil
}

// UploadArtifact stores an artifact's bytes on the node.
func (s *tasksAPI) UploadArtifact(ctx context.Context, req *pb.UploadArtifactRequest) (*pb.UploadArtifactResponse, error) {
	if err := checkChecksum(req.Checksum); err != nil {
		return nil, err
	}
	digest, size, err := s.store.Artifacts.Put(ctx, req.Name, bytes.NewReader(req.Content), req.Checksum)
	if err != nil {
		return nil, err
	}
	return &pb.UploadArtifactResponse{Location: store.ArtifactScheme + digest, Checksum: digest, SizeBytes: size}, nil
}

// checkChecksum checks the form of an upload's optional checksum, so that
// a malformed one is reported as such and not as a mismatch.
func checkChecksum(sum string) error {
	if sum == "" {
		return nil
	}
	hexPart, ok := strings.CutPrefix(sum, "sha256:")
	if _, err := hex.DecodeString(hexPart); !ok || len(hexPart) != 64 || err != nil {
		return errdefs.InvalidChecksum.New("checksum %q: want sha256:<64 hex digits>", sum)
	}
	return nil
}

// listSteps lists a graph's step executions, in the graph's order
// (status_filter applies; a graph has at most 1,000 steps: one page).
func (s *executionsAPI) listSteps(ctx context.Context, req *pb.ListExecutionsRequest) (*pb.ListExecutionsResponse, error) {
	if err := execution.ValidateID(req.ParentId); err != nil {
		return nil, err
	}
	recs, err := s.mgr.Graphs.Steps(ctx, req.ParentId)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListExecutionsResponse{}
	for _, r := range recs {
		if req.StatusFilter == 0 || r.Status == execution.Status(req.StatusFilter) {
			resp.Executions = append(resp.Executions, infoOf(r))
		}
	}
	return resp, nil
}

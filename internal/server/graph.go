package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/executor"
	"github.com/spear-go/spear/internal/graph"
)

// maxGraphRecord bounds a graph's definition as stored in its record:
// steps, their parameters and environments.
const maxGraphRecord = 512 << 10

// InvokeGraph runs a graph in sync mode, or accepts it in async mode; it
// is answered as InvokeFunction is, the output being the output step's.
func (s *invocations) InvokeGraph(ctx context.Context, req *pb.InvokeGraphRequest) (*pb.InvokeFunctionResponse, error) {
	switch req.ExecutionMode {
	case pb.ExecutionMode_EXECUTION_MODE_SYNC, pb.ExecutionMode_EXECUTION_MODE_ASYNC:
	case pb.ExecutionMode_EXECUTION_MODE_STREAM:
		return failed(errdefs.StreamModeNotSupported, "stream mode is not supported by InvokeGraph: call the StreamGraph method"), nil
	default:
		return failed(errdefs.UnknownExecutionMode, fmt.Sprintf("%s: InvokeGraph runs SYNC or ASYNC; for STREAM call StreamGraph",
			enumProblem("execution_mode", req.ExecutionMode))), nil
	}
	rec, est, existing, err := s.startGraph(ctx, req, execution.Mode(req.ExecutionMode))
	if err != nil {
		return nil, err
	}
	resp := &pb.InvokeFunctionResponse{
		Success: true, Message: "accepted", ExecutionId: rec.ID, TaskId: rec.TaskID, InstanceId: s.nodeID,
		Result: resultOf(rec, existing), StatusEndpoint: fmt.Sprintf(StatusPath, rec.ID),
		EstimatedCompletionMs: max(1, est.Milliseconds()),
	}
	if existing {
		resp.Message = "a graph with this idempotency key exists: " + strings.ToLower(rec.Status.String())
	}
	if rec.Mode == execution.ModeSync || req.Wait {
		final, err := s.awaitGraph(ctx, rec)
		if err != nil {
			return nil, err
		}
		resp.Result, resp.Success, resp.Message = s.resultWithOutput(ctx, final), final.Status == execution.StatusCompleted, outcome(final)
	}
	return resp, nil
}

// awaitGraph waits for a graph to end; a sync caller that leaves first
// cancels it, as a sync execution ends with its caller.
func (s *invocations) awaitGraph(ctx context.Context, rec *execution.Record) (*execution.Record, error) {
	final, err := s.mgr.Graphs.WaitGraph(ctx, rec.ID)
	if err == nil && ctx.Err() != nil && rec.Mode != execution.ModeAsync {
		s.cancelGraph(rec.ID, "the caller went away")
	}
	return final, err
}

func (s *invocations) cancelGraph(id, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.mgr.Cancels.Cancel(ctx, id, reason, true); err != nil {
		s.log.Warn("cancelling a graph its caller left", "graph", id, "err", err)
	}
}

// streamGraph runs a graph and streams its output step's output as it is
// written, then a final message with the graph's outcome.
func (s *invocations) streamGraph(ctx context.Context, req *pb.InvokeGraphRequest, send func(*pb.StreamExecutionResult) error) error {
	if err := streamMode(req.ExecutionMode); err != nil {
		return err
	}
	rec, _, _, err := s.startGraph(ctx, req, execution.ModeStream)
	if err != nil {
		return err
	}
	if err := send(&pb.StreamExecutionResult{ExecutionId: rec.ID, Status: pb.ExecutionStatus_EXECUTION_STATUS_RUNNING,
		Metadata: map[string]string{"task_id": rec.TaskID, "node": s.nodeID}}); err != nil {
		s.cancelGraph(rec.ID, "the caller went away")
		return err
	}
	err = s.attach(ctx, rec.ID, send)
	if ctx.Err() != nil {
		s.cancelGraph(rec.ID, "the caller went away")
	}
	return err
}

// startGraph validates a graph request and starts the graph.
func (s *invocations) startGraph(ctx context.Context, req *pb.InvokeGraphRequest, mode execution.Mode) (*execution.Record, time.Duration, bool, error) {
	rec, in, err := s.prepareGraph(ctx, req, mode)
	if err != nil {
		return nil, 0, false, err
	}
	rec.Graph.Input, rec.Graph.InputRef = in, req.InputRef
	return s.mgr.Graphs.StartGraph(ctx, rec, req.IdempotencyKey != "")
}

// prepareGraph checks a graph request and builds the graph's record and
// input; nothing runs until every check passed.
func (s *invocations) prepareGraph(ctx context.Context, req *pb.InvokeGraphRequest, mode execution.Mode) (*execution.Record, []byte, error) {
	c := req.Context
	if c == nil {
		c = &pb.ExecutionContext{}
	}
	g, err := s.graphOf(ctx, req, c)
	if err != nil {
		return nil, nil, err
	}
	in, err := s.graphInput(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	if req.CallbackUrl != "" {
		if err := s.callbackAllow.Check(req.CallbackUrl); err != nil {
			return nil, nil, err
		}
	}
	id, err := graphID(req, c, s.ids.New)
	if err != nil {
		return nil, nil, err
	}
	now := s.now()
	if timeout := cmpOr(req.TimeoutMs, c.TimeoutMs); timeout > 0 {
		g.Deadline, g.TimeoutMs = now.Add(time.Duration(timeout)*time.Millisecond), timeout
	}
	rec := execution.NewRecord(&execution.Spec{ExecutionID: id, TaskID: executor.GraphTask, Mode: mode,
		Priority: req.Priority, Metadata: req.InvocationMetadata, CreatedAt: now, CallbackURL: req.CallbackUrl})
	rec.Graph = g
	if b, _ := json.Marshal(rec); len(b) > maxGraphRecord {
		return nil, nil, errdefs.GraphTooLarge.New("the graph's definition takes %d bytes; at most %d are allowed (give large inputs as input_ref)", len(b), maxGraphRecord)
	}
	return rec, in, nil
}

func cmpOr(a, b int64) int64 {
	if a != 0 {
		return a
	}
	return b
}

// graphOf checks a graph's shape first, then each step's task: a bad
// graph is refused before any task is looked up.
func (s *invocations) graphOf(ctx context.Context, req *pb.InvokeGraphRequest, c *pb.ExecutionContext) (*execution.Graph, error) {
	if req.TimeoutMs < 0 || c.TimeoutMs < 0 {
		return nil, errdefs.InvalidTimeout.New("timeout_ms must not be negative (0 means none)")
	}
	if err := validEnv(c.Environment); err != nil {
		return nil, err
	}
	g := &execution.Graph{Output: req.Output, FailFast: req.FailFast == nil || *req.FailFast, Env: c.Environment}
	for _, ps := range req.Steps {
		st, err := stepOf(ps)
		if err != nil {
			return nil, err
		}
		g.Steps = append(g.Steps, st)
	}
	if err := graph.Validate(g); err != nil {
		return nil, err
	}
	for i := range g.Steps {
		st := &g.Steps[i]
		t, err := s.reg.Get(ctx, st.TaskID)
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, errdefs.TaskNotFound.New("step %q: task %q not found", st.ID, st.TaskID)
		}
		if err != nil {
			return nil, err
		}
		st.Runtime = string(t.Artifact.Type)
	}
	return g, nil
}

// stepOf converts one step of a request, checking what the graph's
// validator does not see.
func stepOf(ps *pb.GraphStep) (execution.Step, error) {
	if ps == nil {
		return execution.Step{}, errdefs.InvalidStep.New("a step is null")
	}
	if err := validEnv(ps.Environment); err != nil {
		return execution.Step{}, errdefs.InvalidStep.New("step %q: %v", ps.Id, err)
	}
	if _, ok := pb.OnFailure_name[int32(ps.OnFailure)]; !ok {
		return execution.Step{}, errdefs.InvalidStep.New("step %q: %s", ps.Id, enumProblem("on_failure", ps.OnFailure))
	}
	in, err := input(ps.Parameters)
	if err != nil {
		return execution.Step{}, errdefs.InvalidStep.New("step %q: %v", ps.Id, err)
	}
	return execution.Step{
		ID: ps.Id, TaskID: ps.TaskId, DependsOn: ps.DependsOn, Input: in, HasInput: len(ps.Parameters) > 0,
		Env: ps.Environment, TimeoutMs: ps.TimeoutMs, MaxRetries: ps.MaxRetries, OnFailure: execution.OnFailure(ps.OnFailure),
	}, nil
}

// graphInput is the graph's input (its roots'), checked as an
// invocation's is.
func (s *invocations) graphInput(ctx context.Context, req *pb.InvokeGraphRequest) ([]byte, error) {
	in, err := input(req.Parameters)
	if err != nil {
		return nil, err
	}
	if req.InputRef != "" {
		fake := &pb.InvokeFunctionRequest{InputRef: req.InputRef, Parameters: req.Parameters}
		if err := s.checkInputRef(ctx, fake); err != nil {
			return nil, err
		}
	}
	if s.maxInput > 0 && len(in) > s.maxInput {
		return nil, errdefs.InputTooLarge.New("input of %d bytes exceeds the limit of %d bytes", len(in), s.maxInput)
	}
	return in, nil
}

// maxGraphIDLen leaves a step's execution id (graph id, '_', step id)
// within the 128 characters of an id.
const maxGraphIDLen = 128 - 1 - graph.MaxStepIDLen

// graphID is a new graph's id: "graph-" and a new execution id, or one
// derived from the idempotency key, or the caller's.
func graphID(req *pb.InvokeGraphRequest, c *pb.ExecutionContext, newID func() string) (string, error) {
	switch {
	case req.IdempotencyKey != "" && c.ExecutionId != "":
		return "", errdefs.ConflictingIDs.New("give either context.execution_id or idempotency_key, not both")
	case req.IdempotencyKey != "":
		if len(req.IdempotencyKey) > 256 || !utf8.ValidString(req.IdempotencyKey) {
			return "", errdefs.InvalidIdempotencyKey.New("idempotency_key must be valid UTF-8 of at most 256 bytes")
		}
		return "graph-" + strings.TrimPrefix(execution.IdempotentID(executor.GraphTask, req.IdempotencyKey), "idem-"), nil
	case c.ExecutionId == "":
		return "graph-" + newID(), nil
	}
	if err := execution.ValidateID(c.ExecutionId); err != nil {
		return "", err
	}
	if len(c.ExecutionId) > maxGraphIDLen {
		return "", errdefs.InvalidExecutionID.New("a graph's execution id is at most %d characters (its steps' ids add to it)", maxGraphIDLen)
	}
	return c.ExecutionId, nil
}

// graphLogs are a graph's logs: its steps' standard error, merged in time
// order, each line naming its step.
func (s *invocations) graphLogs(ctx context.Context, id string) ([]string, error) {
	steps, err := s.mgr.Graphs.Steps(ctx, id)
	if err != nil {
		return nil, err
	}
	var lines []execution.LogLine
	for _, r := range steps {
		for _, l := range r.Logs {
			lines = append(lines, execution.LogLine{Time: l.Time, Line: "[" + r.StepID + "] " + l.Line})
		}
	}
	slices.SortStableFunc(lines, func(a, b execution.LogLine) int { return a.Time.Compare(b.Time) })
	return logLines(&execution.Record{Logs: lines}), nil
}

package server

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/task"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func resultOf(r *execution.Record, withOutput bool) *pb.ExecutionResult {
	res := &pb.ExecutionResult{
		Status:          pb.ExecutionStatus(r.Status),
		ErrorMessage:    r.ErrorMessage,
		ErrorCode:       r.ErrorCode,
		ExecutionTimeMs: r.DurationMs,
		MemoryUsedBytes: r.MemoryUsedBytes,
		StartedAt:       ts(r.StartedAt),
		CompletedAt:     ts(r.CompletedAt),
		ExitCode:        r.ExitCode,
		Attempts:        r.Attempts,
		Metrics:         metricsOf(r),
		Sandbox:         r.Sandbox,
	}
	res.DeadLettered = r.DeadLettered
	res.AttemptHistory = attemptsOf(r)
	if c := r.Callback; c != nil {
		res.Callback = &pb.CallbackDelivery{
			Url: c.URL, State: c.State, Attempts: c.Attempts, LastStatusCode: c.LastStatusCode,
			LastError: c.LastError, DeliveredAt: ts(c.DeliveredAt),
		}
	}
	if withOutput && (r.Status.Terminal() || len(r.Output) > 0) {
		res.Result = pb.BytesAny(r.Output)
		res.OutputSize, res.OutputSha256, res.OutputPartial = r.OutputSize, r.OutputSHA256, r.OutputPartial()
	}
	return res
}

// attemptsOf is an execution's attempt history: each run that ended and,
// while one runs, the attempt in progress (RUNNING, with its node and
// start, without an end).
func attemptsOf(r *execution.Record) []*pb.AttemptInfo {
	var out []*pb.AttemptInfo
	for _, a := range r.History {
		out = append(out, &pb.AttemptInfo{
			Attempt: a.N, Status: pb.ExecutionStatus(a.Status), ErrorCode: a.ErrorCode, ErrorMessage: a.ErrorMessage,
			StartedAt: ts(a.StartedAt), CompletedAt: ts(a.CompletedAt), Node: a.Node,
		})
	}
	if r.Status == execution.StatusRunning && (len(r.History) == 0 || r.History[len(r.History)-1].N < r.Attempts) {
		out = append(out, &pb.AttemptInfo{
			Attempt: max(r.Attempts, 1), Status: pb.ExecutionStatus_EXECUTION_STATUS_RUNNING, StartedAt: ts(r.StartedAt), Node: r.Node,
		})
	}
	return out
}

// metricsOf fills the spec's metrics map with what a client that knows only
// the spec's fields cannot read elsewhere, and only when it is not the
// default: the exit code of a function that exited non-zero, the attempts
// of an execution that ran more than once. A plain successful run has none:
// decoding a map costs a client more than the rest of the result (five
// entries added 13 µs to a 230 µs invocation; docs/RATIONALE.md).
func metricsOf(r *execution.Record) map[string]string {
	var m map[string]string
	add := func(k, v string) {
		if m == nil {
			m = make(map[string]string, 2)
		}
		m[k] = v
	}
	if c := r.ExitCode; c != 0 && c != -1 { // -1: it did not exit (never ran, or was killed)
		add("exit_code", strconv.Itoa(int(r.ExitCode)))
	}
	if r.Attempts > 1 {
		add("attempts", strconv.Itoa(int(r.Attempts)))
	}
	return m
}

func limitsOf(l *pb.TaskLimits) task.Limits {
	if l == nil {
		return task.Limits{}
	}
	return task.Limits{
		MaxConcurrency: l.MaxConcurrency, MaxQueued: l.MaxQueued, MemoryLimitBytes: l.MemoryLimitBytes,
		DefaultTimeoutMs: l.DefaultTimeoutMs, MaxTimeoutMs: l.MaxTimeoutMs,
		PidsLimit: l.PidsLimit, Network: l.Network,
	}
}

func limitsPB(l task.Limits) *pb.TaskLimits {
	if l == (task.Limits{}) {
		return nil
	}
	return &pb.TaskLimits{
		MaxConcurrency: l.MaxConcurrency, MaxQueued: l.MaxQueued, MemoryLimitBytes: l.MemoryLimitBytes,
		DefaultTimeoutMs: l.DefaultTimeoutMs, MaxTimeoutMs: l.MaxTimeoutMs,
		PidsLimit: l.PidsLimit, Network: l.Network,
	}
}

func infoOf(r *execution.Record) *pb.ExecutionInfo {
	return &pb.ExecutionInfo{
		ExecutionId:     r.ID,
		TaskId:          r.TaskID,
		FunctionName:    r.Function,
		ExecutionMode:   pb.ExecutionMode(r.Mode),
		Status:          pb.ExecutionStatus(r.Status),
		StartedAt:       ts(r.StartedAt),
		CompletedAt:     ts(r.CompletedAt),
		ExecutionTimeMs: r.DurationMs,
		MemoryUsedBytes: r.MemoryUsedBytes,
		ErrorMessage:    r.ErrorMessage,
		Metadata:        r.Metadata,
		ErrorCode:       r.ErrorCode,
		CreatedAt:       ts(r.CreatedAt),
		Attempts:        r.Attempts,
		DeadLettered:    r.DeadLettered,
		Priority:        r.Priority,
		ParentId:        r.ParentID,
		StepId:          r.StepID,
	}
}

func logLines(r *execution.Record) []string {
	out := make([]string, len(r.Logs))
	for i, l := range r.Logs {
		out[i] = l.Time.UTC().Format(time.RFC3339Nano) + " " + l.Line
	}
	return out
}

func specOf(a task.Artifact) *pb.ArtifactSpec {
	return &pb.ArtifactSpec{
		ArtifactId:   a.ID,
		ArtifactType: string(a.Type),
		Location:     a.Location,
		Version:      a.Version,
		Checksum:     a.Checksum,
		Metadata:     a.Metadata,
	}
}

// statusOf is the status of the execution r.
func statusOf(r *execution.Record, withOutput, withLogs bool) *pb.GetExecutionStatusResponse {
	st := &pb.GetExecutionStatusResponse{
		Found: true, ExecutionId: r.ID, TaskId: r.TaskID,
		Result: resultOf(r, withOutput), Message: strings.ToLower(r.Status.String()),
		ParentId: r.ParentID, StepId: r.StepID, Steps: stepsOf(r.Graph),
	}
	if withLogs {
		st.Logs = logLines(r)
	}
	return st
}

func artifactOf(s *pb.ArtifactSpec) task.Artifact {
	if s == nil {
		return task.Artifact{}
	}
	return task.Artifact{
		ID:       s.ArtifactId,
		Type:     runtime.Type(strings.ToLower(strings.TrimSpace(s.ArtifactType))),
		Location: s.Location,
		Version:  s.Version,
		Checksum: s.Checksum,
		Metadata: s.Metadata,
	}
}

// input turns the invocation's parameters into the function's standard
// input: nothing when no parameter has a value; the raw bytes of a single BytesValue or
// StringValue; otherwise one JSON object keyed by parameter name.
func input(params []*pb.FunctionParameter) ([]byte, error) {
	seen := map[string]bool{}
	for i, p := range params {
		if p.Value == nil {
			if p.Required {
				return nil, errdefs.MissingParameter.New("parameter %q is required but has no value", p.Name)
			}
			continue
		}
		if len(params) > 1 {
			if p.Name == "" {
				return nil, errdefs.InvalidParameter.New("parameter %d has no name; several parameters need names", i)
			}
			if seen[p.Name] {
				return nil, errdefs.DuplicateParameter.New("parameter %q is given twice", p.Name)
			}
			seen[p.Name] = true
		}
	}
	if !slices.ContainsFunc(params, func(p *pb.FunctionParameter) bool { return p.Value != nil }) {
		return nil, nil // no values: no input, however many parameters
	}
	if len(params) == 1 && params[0].Value != nil {
		// The usual input, without a look-up in the type registry.
		if a := params[0].Value; a.MessageIs((*wrapperspb.BytesValue)(nil)) {
			var v wrapperspb.BytesValue
			if a.UnmarshalTo(&v) == nil {
				return v.Value, nil
			}
		}
		switch v := unpack(params[0].Value).(type) {
		case *wrapperspb.BytesValue:
			return v.Value, nil
		case *wrapperspb.StringValue:
			return []byte(v.Value), nil
		}
	}
	obj := make(map[string]json.RawMessage, len(params))
	for _, p := range params {
		if p.Value == nil {
			continue
		}
		m, err := p.Value.UnmarshalNew()
		if err != nil {
			return nil, errdefs.InvalidParameter.New("parameter %q: cannot decode value of type %q: %v", p.Name, p.Value.TypeUrl, err)
		}
		b, err := protojson.Marshal(m)
		if err != nil {
			return nil, errdefs.InvalidParameter.New("parameter %q: %v", p.Name, err)
		}
		obj[p.Name] = b
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode parameters: %w", err)
	}
	return b, nil
}

func unpack(a *anypb.Any) proto.Message {
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil
	}
	return m
}

// validEnv checks an environment: names non-empty, without '=' or NUL, and
// everything valid UTF-8.
func validEnv(env map[string]string) error {
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(v, "\x00") || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return errdefs.InvalidEnvironment.New("environment variable %q: names must be non-empty without '=' or NUL, values without NUL, both UTF-8", k)
		}
	}
	return nil
}

// stepsOf is where each step of a graph is (nil for an execution that is
// not a graph).
func stepsOf(g *execution.Graph) []*pb.StepInfo {
	if g == nil {
		return nil
	}
	out := make([]*pb.StepInfo, len(g.Steps))
	for i, s := range g.Steps {
		st := g.States[i]
		exec := st.ExecID
		if exec == "-" { // it could not be started
			exec = ""
		}
		out[i] = &pb.StepInfo{
			StepId: s.ID, ExecutionId: exec, TaskId: s.TaskID, Status: pb.ExecutionStatus(st.Status),
			Attempts: st.Attempts, ErrorCode: st.ErrorCode, ErrorMessage: st.ErrorMessage, DependsOn: s.DependsOn,
		}
	}
	return out
}

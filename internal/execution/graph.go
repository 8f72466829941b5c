package execution

import "time"

// OnFailure says what a step's final failure does to its graph.
type OnFailure int32

// What a step's failure does: FAIL ends the graph FAILED (the default);
// CONTINUE lets its dependents run, given null and the error in place of
// its output.
const (
	OnFailureFail OnFailure = iota
	OnFailureContinue
)

// Step is one step of a graph: a task run as a child execution of the
// graph, once the steps it depends on ended.
type Step struct {
	ID        string   `json:"id"`
	TaskID    string   `json:"task"`
	DependsOn []string `json:"deps,omitempty"`
	// Input replaces the graph's input for a root step (HasInput says it
	// was given, even empty).
	Input      []byte            `json:"in,omitempty"`
	HasInput   bool              `json:"has_in,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	TimeoutMs  int64             `json:"timeout_ms,omitempty"`
	MaxRetries int32             `json:"max_retries,omitempty"`
	OnFailure  OnFailure         `json:"on_failure,omitempty"`
	// Runtime is the step's task's runtime, resolved at acceptance.
	Runtime string `json:"rt,omitempty"`
}

// Graph is what a graph execution's record holds: its steps, how it
// runs them, and where each one is. It changes only by compare-and-set
// on the record.
type Graph struct {
	Steps []Step `json:"steps"`
	// Output is the id of the step whose output is the graph's.
	Output   string `json:"output"`
	FailFast bool   `json:"fail_fast"`
	// Deadline ends every step still running (zero: none); TimeoutMs is
	// what it was set from, for a requeue.
	Deadline  time.Time `json:"deadline,omitzero"`
	TimeoutMs int64     `json:"timeout_ms,omitempty"`
	// Requeues counts how often the graph was queued again after it
	// ended (RequeueExecution): its steps that did not complete run again.
	Requeues int32 `json:"requeues,omitempty"`
	// Env applies to every step (a step's own wins).
	Env map[string]string `json:"env,omitempty"`
	// Input is the graph's input (its root steps'), or InputRef where it
	// is stored (a large one, or an uploaded artifact).
	Input    []byte `json:"in,omitempty"`
	InputRef string `json:"in_ref,omitempty"`
	// States has one entry per step, in the order of Steps.
	States []StepState `json:"states"`
}

// StepState is where one step of a graph is.
type StepState struct {
	// Status is UNKNOWN until the step's execution is created.
	Status       Status `json:"status,omitempty"`
	ExecID       string `json:"exec,omitempty"`
	Attempts     int32  `json:"attempts,omitempty"`
	ErrorCode    string `json:"err_code,omitempty"`
	ErrorMessage string `json:"err,omitempty"`
	// Base is the attempts the step's execution had made when a requeue
	// of the graph ran it again: a report of an earlier run (no more
	// attempts than Base) is stale.
	Base int32 `json:"base,omitempty"`
}

// Started reports whether the step's execution was created.
func (s StepState) Started() bool { return s.ExecID != "" }

// Upstream is a step's parent, whose output feeds the step's input.
type Upstream struct {
	Step   string `json:"step"`
	ExecID string `json:"exec"`
	// Failed says the parent failed (on_failure CONTINUE): null and its
	// error stand for its output.
	Failed       bool   `json:"failed,omitempty"`
	ErrorCode    string `json:"err_code,omitempty"`
	ErrorMessage string `json:"err,omitempty"`
}

// StepExecutionID is the id of a graph step's execution: derived, so
// that starting a step twice starts it once.
func StepExecutionID(graphID, stepID string) string { return graphID + "_" + stepID }

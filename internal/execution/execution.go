// Package execution defines an execution's record: its mode, status and
// outcome, as stored durably and reported through the API.
package execution

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/ident"
)

// Status is an execution's state. The zero value means unknown. Values equal
// the wire enum spearlet.ExecutionStatus.
type Status int32

// Statuses.
const (
	StatusUnknown Status = iota
	StatusPending
	StatusRunning
	StatusCompleted
	StatusFailed
	StatusCancelled
	StatusTimeout
)

// Terminal reports whether s is a final state.
func (s Status) Terminal() bool { return s >= StatusCompleted && s <= StatusTimeout }

func (s Status) String() string {
	switch s {
	case StatusPending:
		return "PENDING"
	case StatusRunning:
		return "RUNNING"
	case StatusCompleted:
		return "COMPLETED"
	case StatusFailed:
		return "FAILED"
	case StatusCancelled:
		return "CANCELLED"
	case StatusTimeout:
		return "TIMEOUT"
	default:
		return "UNKNOWN"
	}
}

// Mode is how an execution was invoked. The zero value means unknown. Values
// equal the wire enum spearlet.ExecutionMode.
type Mode int32

// Modes.
const (
	ModeUnknown Mode = iota
	ModeSync
	ModeAsync
	ModeStream
)

func (m Mode) String() string {
	switch m {
	case ModeSync:
		return "sync"
	case ModeAsync:
		return "async"
	case ModeStream:
		return "stream"
	default:
		return "unknown"
	}
}

// Spec is what to run: everything needed to start (or restart, after a
// crash) an execution. Async specs travel in the durable queue.
type Spec struct {
	ExecutionID string `json:"id"`
	TaskID      string `json:"task"`
	// Runtime is the task's runtime, which the queue routes async work by
	// (only nodes that have it take it).
	Runtime  string `json:"rt,omitempty"`
	Function string `json:"fn,omitempty"`
	Mode     Mode   `json:"mode"`
	Input    []byte `json:"in,omitempty"`
	// InputRef names a stored input used instead of Input: an uploaded
	// artifact ("artifact:sha256:<hex>") or, for an async input too large
	// for a queue message, "input:<id>".
	InputRef   string            `json:"in_ref,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	TimeoutMs  int64             `json:"timeout_ms,omitempty"`
	MaxRetries int32             `json:"max_retries,omitempty"`
	Priority   int32             `json:"prio,omitempty"`
	Metadata   map[string]string `json:"meta,omitempty"`
	CreatedAt  time.Time         `json:"created"`
	// IDGiven says the caller chose ExecutionID (it may be a duplicate).
	IDGiven bool `json:"id_given,omitempty"`
	// IDUnseen says the node made ExecutionID and nobody has seen it yet:
	// a sync run may take another one made by the node (the id a process
	// was started ahead as: see runtime.Prestarter). Never stored.
	IDUnseen bool `json:"-"`
	// CallbackURL receives the final record.
	CallbackURL string `json:"callback,omitempty"`
	// Requeues counts how often a dead-lettered execution was queued again;
	// AttemptBase is the attempts made before the latest requeue (the retry
	// budget starts again from there).
	Requeues    int32 `json:"requeues,omitempty"`
	AttemptBase int32 `json:"attempt_base,omitempty"`
	// Idempotent says ExecutionID was derived from an idempotency key: an
	// existing execution with that id is the answer, not an error.
	Idempotent bool `json:"idempotent,omitempty"`
	// ParentID and StepID name the graph and step a step's execution
	// runs; Upstream are the step's parents, whose outputs are its input
	// (instead of Input); Deadline is the graph's (zero: none).
	ParentID string     `json:"parent,omitempty"`
	StepID   string     `json:"step,omitempty"`
	Upstream []Upstream `json:"upstream,omitempty"`
	Deadline time.Time  `json:"deadline,omitzero"`
	// StreamsTo says a step reads this step's output as it is written;
	// LiveOutput that it, or the caller of a stream graph, does: its
	// chunks are stored from the first.
	StreamsTo  bool `json:"streams_to,omitempty"`
	LiveOutput bool `json:"live_out,omitempty"`
	// Unrecorded says no record was stored when it was accepted: its queue
	// message is its record (PENDING) until the worker that takes it
	// creates the record, RUNNING. EstimatedMs is the record's.
	Unrecorded  bool  `json:"unrec,omitempty"`
	EstimatedMs int64 `json:"est_ms,omitempty"`
}

// OutputPartial reports whether Output holds only the first part of the
// output.
func (r *Record) OutputPartial() bool { return r.OutputSize > int64(len(r.Output)) }

// LogLine is one line of standard error.
type LogLine struct {
	Time time.Time `json:"t"`
	Line string    `json:"l"`
}

// Record is an execution's durable record.
type Record struct {
	ID          string            `json:"id"`
	TaskID      string            `json:"task"`
	Function    string            `json:"fn,omitempty"`
	Mode        Mode              `json:"mode"`
	Status      Status            `json:"status"`
	Priority    int32             `json:"prio,omitempty"`
	TimeoutMs   int64             `json:"timeout_ms,omitempty"`
	MaxRetries  int32             `json:"max_retries,omitempty"`
	Attempts    int32             `json:"attempts,omitempty"`
	Metadata    map[string]string `json:"meta,omitempty"`
	CreatedAt   time.Time         `json:"created"`
	StartedAt   time.Time         `json:"started,omitzero"`
	CompletedAt time.Time         `json:"completed,omitzero"`
	// Node is the id of the node that last ran (or runs) the execution.
	Node string `json:"node,omitempty"`
	// Output is the output's first part, at most the store's inline size;
	// OutputSize and OutputSHA256 describe the whole of it, which
	// OutputStored says the chunk stream holds.
	Output       []byte `json:"out,omitempty"`
	OutputSize   int64  `json:"out_size,omitempty"`
	OutputSHA256 string `json:"out_sha256,omitempty"`
	OutputStored bool   `json:"out_stored,omitempty"`
	// OutputDropped says the stored output (and input) went to free space
	// (retention by size); the record keeps the first part.
	OutputDropped   bool      `json:"out_dropped,omitempty"`
	Logs            []LogLine `json:"logs,omitempty"`
	ExitCode        int32     `json:"exit"`
	ErrorCode       string    `json:"err_code,omitempty"`
	ErrorMessage    string    `json:"err,omitempty"`
	DurationMs      int64     `json:"dur_ms,omitempty"`
	MemoryUsedBytes int64     `json:"mem,omitempty"`
	// StartupUs is how long the runtime took to start the function, in
	// microseconds; EstimatedMs what the node estimated, at acceptance, for
	// the whole execution (async).
	StartupUs   int64 `json:"startup_us,omitempty"`
	EstimatedMs int64 `json:"estimated_ms,omitempty"`
	// Sandbox lists the sandbox features the last run got (see
	// runtime.Result.Sandbox).
	Sandbox string `json:"sandbox,omitempty"`
	// History has one entry per run, oldest first.
	History []Attempt `json:"history,omitempty"`
	// DeadLettered is set when retries ran out; Spec is then kept so the
	// execution can be queued again.
	DeadLettered bool  `json:"dead,omitempty"`
	Spec         *Spec `json:"spec,omitempty"`
	// Callback is the completion callback's delivery.
	Callback *Callback `json:"callback,omitempty"`
	// ParentID and StepID name the graph and step of a step's execution;
	// Graph is a graph execution's steps and their states.
	ParentID string `json:"parent,omitempty"`
	StepID   string `json:"step,omitempty"`
	Graph    *Graph `json:"graph,omitempty"`
	// OutputOf is the execution whose stored output chunks are this one's
	// (a graph's output step); empty: its own.
	OutputOf string `json:"out_of,omitempty"`
}

// Attempt is one run of an execution.
type Attempt struct {
	N            int32     `json:"n"`
	Status       Status    `json:"status"`
	ErrorCode    string    `json:"err_code,omitempty"`
	ErrorMessage string    `json:"err,omitempty"`
	StartedAt    time.Time `json:"started,omitzero"`
	CompletedAt  time.Time `json:"completed,omitzero"`
	Node         string    `json:"node,omitempty"`
}

// Callback is the state of a completion callback.
type Callback struct {
	URL            string    `json:"url"`
	State          string    `json:"state"`
	Attempts       int32     `json:"attempts,omitempty"`
	LastStatusCode int32     `json:"last_status,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	DeliveredAt    time.Time `json:"delivered_at,omitzero"`
}

// NewRecord returns the PENDING record of spec.
func NewRecord(spec *Spec) *Record {
	return &Record{
		ID:          spec.ExecutionID,
		TaskID:      spec.TaskID,
		Function:    spec.Function,
		Mode:        spec.Mode,
		Status:      StatusPending,
		Priority:    spec.Priority,
		TimeoutMs:   spec.TimeoutMs,
		MaxRetries:  spec.MaxRetries,
		Metadata:    spec.Metadata,
		CreatedAt:   spec.CreatedAt,
		EstimatedMs: spec.EstimatedMs,
		ParentID:    spec.ParentID,
		StepID:      spec.StepID,
		ExitCode:    -1,
		Callback:    newCallback(spec.CallbackURL),
	}
}

func newCallback(url string) *Callback {
	if url == "" {
		return nil
	}
	return &Callback{URL: url, State: "pending"}
}

// IdempotentID derives the execution id of an idempotency key: the same key
// for the same task is the same execution.
func IdempotentID(taskID, key string) string {
	sum := sha256.Sum256([]byte(taskID + "\x00" + key))
	return "idem-" + hex.EncodeToString(sum[:16])
}

// ValidateID checks a caller-supplied execution id. Ids are used as NATS
// subject tokens and KV keys.
func ValidateID(id string) error {
	if !ident.Valid(id) {
		return errdefs.InvalidExecutionID.New("execution id %q: want "+ident.Rule, id)
	}
	return nil
}

// NewID returns a new execution id: 12 hex digits of Unix milliseconds then
// 10 random hex digits, so ids sort by creation time.
func NewID(now time.Time) string {
	var b [11]byte // 6 bytes of milliseconds, 5 random
	ms := uint64(now.UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i], ms = byte(ms), ms>>8
	}
	if _, err := rand.Read(b[6:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// Package runtime defines the small interface every function runtime
// (process, wasm, docker) implements, and the contract they share: input on
// standard input, output on standard output (streamed as written), standard
// error kept as logs, an exit code, an environment, and a context that bounds
// the run.
//
// A runtime says what its Run can do as data, Capabilities (in the style of
// the Capabilities of Nomad's task drivers), and offers optional lifecycle
// methods as separate small interfaces (Validator, Reconciler,
// Forgetter, CacheReporter, Prestarter, Closer): the node wires every
// runtime through these, without knowing its concrete type.
package runtime

import (
	"context"
	"errors"
	"io"
	"time"
)

// DefaultFunction is the function name that selects a module's or program's
// default entry point.
const DefaultFunction = "__spear_default_entry__"

// Type names a runtime. It equals ArtifactSpec.artifact_type.
type Type string

// Runtime types.
const (
	TypeProcess Type = "process"
	TypeWasm    Type = "wasm"
	TypeDocker  Type = "docker"
)

// Artifact is what a runtime runs, resolved by the node: Location is a local
// file path for process and wasm, an image reference for docker.
type Artifact struct {
	// TaskID identifies the task; runtimes key caches by TaskID+Digest.
	TaskID string
	Type   Type
	// Location is a local path (process, wasm) or image reference (docker).
	Location string
	// Digest is "sha256:<hex>" of the artifact's content when known.
	Digest string
	// Metadata is the task's artifact metadata (runtime-specific options).
	Metadata map[string]string
}

// Invocation is one run of a function.
type Invocation struct {
	ExecutionID string
	Artifact    Artifact
	// Function is the function name; "" or DefaultFunction selects the
	// default entry point. Process: passed as the first argument (when not
	// default) and as SPEAR_FUNCTION_NAME.
	Function string
	// Input is the function's standard input.
	Input io.Reader
	// Env is the function's whole environment.
	Env map[string]string
	// Attempt is which run of the execution this is, from 1 (a retry or a
	// rerun after a node was lost counts up); passed to the function as
	// SPEAR_ATTEMPT when > 0 (process and docker runtimes).
	Attempt int32
	// Stdout receives standard output as the function writes it: each Write
	// is one chunk, made as soon as the bytes are read. Never nil.
	Stdout io.Writer
	// Stderr receives standard error. Never nil.
	Stderr io.Writer
	// MemoryLimitBytes caps the function's memory when > 0.
	MemoryLimitBytes int64
	// PidsLimit caps how many processes (threads included) the function
	// may have at once when > 0 (process runtime; else the node's
	// default).
	PidsLimit int64
	// HostNetwork runs the function in the host's network instead of the
	// sandbox's loopback-only network namespace (process runtime).
	HostNetwork bool
}

// Result is how a run ended when the function itself ended.
type Result struct {
	// ExitCode is the function's exit status; 0 is success.
	ExitCode int
	// MemoryUsedBytes is the peak memory the function used, measured, or 0
	// when the runtime cannot measure it.
	MemoryUsedBytes int64
	// MemoryLimitHit says the function reached its memory ceiling (a
	// refused allocation, an OOM kill), as far as the runtime can tell.
	MemoryLimitHit bool
	// PidsLimitHit says the function was refused a new process or
	// thread by its process limit, as far as the runtime can tell.
	PidsLimitHit bool
	// Sandbox lists the sandbox features the run got, comma-separated
	// (see package sandbox); "" when the runtime does not say.
	Sandbox string
	// Startup is how long the runtime took to get the function running
	// (process spawned, instance created, container started): the cold
	// start cost of this invocation.
	Startup time.Duration
}

// Runtime runs functions.
type Runtime interface {
	// Type is the artifact type this runtime serves.
	Type() Type
	// Run runs inv to completion. A function that exits non-zero returns a
	// Result with that ExitCode and a nil error. When ctx ends first, Run
	// stops the function (no process, instance or container remains once Run
	// returns) and returns an error wrapping ctx.Err(). Any other error
	// means the function could not be run (bad artifact, engine down) and
	// wraps an errdefs class.
	Run(ctx context.Context, inv *Invocation) (Result, error)
}

// Capabilities is what a runtime's Run does beyond the contract every
// runtime keeps (see Runtime). The zero value claims nothing.
type Capabilities struct {
	// GracefulStop: a context ended with a GracefulStop cause asks the
	// function to stop (a signal it can catch) and kills it only after the
	// grace; without it every stop kills at once.
	GracefulStop bool
	// MemoryLimit: Invocation.MemoryLimitBytes is enforced, and a function
	// that runs over it ends with Result.MemoryLimitHit set.
	MemoryLimit bool
	// MemoryPeak: Result.MemoryUsedBytes is measured (the function's peak,
	// exact or sampled); without it, it is 0.
	MemoryPeak bool
}

// CapabilityReporter is implemented by runtimes that declare their
// Capabilities. They may depend on the machine (a memory cgroup) or the
// runtime's options, so they are asked of a runtime as it was set up.
type CapabilityReporter interface {
	Capabilities() Capabilities
}

// CapabilitiesOf returns what rt declares, or no capability when it
// declares none.
func CapabilitiesOf(rt Runtime) Capabilities {
	if c, ok := rt.(CapabilityReporter); ok {
		return c.Capabilities()
	}
	return Capabilities{}
}

// Reconciler is implemented by runtimes whose functions can outlive a node
// killed with SIGKILL (processes, containers). Reconcile stops and removes
// what an earlier run of this node left behind and returns how much it
// cleaned up; it never touches another node's functions. The node calls it
// once at start-up, holding its data dir, before any function runs: at that
// point nothing of this node is live, so everything of this node's found is
// a leftover.
type Reconciler interface {
	Reconcile(ctx context.Context) (cleaned int, err error)
}

// Validator is implemented by runtimes that can check an artifact when a task
// is registered (the file is a WASM module, the image exists, ...), and warm
// any cache, so that bad tasks are refused at registration.
type Validator interface {
	Validate(ctx context.Context, a Artifact) error
}

// Forgetter is implemented by runtimes that keep something per artifact
// between runs (a compiled module). Forget releases what the runtime holds
// for a's task — only the version a.Digest names when it is set, every
// version when it is empty — once no run uses it. The node calls it when a
// task is deleted or re-pinned to other content.
type Forgetter interface {
	Forget(ctx context.Context, a Artifact)
}

// CacheReporter is implemented by runtimes that cache artifacts:
// CachedArtifacts is how many they hold now.
type CacheReporter interface {
	CachedArtifacts() int
}

// Prestarter is implemented by runtimes that can start a function before
// its invocation arrives (the process runtime's spares). Reserve takes one
// started for invocations like inv (everything set but ExecutionID, Input,
// Stdout and Stderr) and returns the execution id it was started as: a
// Run of an invocation like inv with that id runs in it. release discards
// it unless a Run took it; call it once the execution is over. ok is false
// when none is ready; every call counts as demand, so that a kind of
// invocation called often gets spares.
type Prestarter interface {
	Reserve(inv *Invocation) (id string, release func(), ok bool)
	// Spares says how many are ready now, and how many were used and
	// discarded since the runtime started.
	Spares() SpareCounts
}

// SpareCounts is what a Prestarter holds and did.
type SpareCounts struct {
	Ready           int
	Used, Discarded uint64
}

// Closer is implemented by runtimes holding resources (caches, clients).
type Closer interface {
	Close(ctx context.Context) error
}

// GracefulStop is a context cause asking a runtime to stop a function
// gently: a runtime that can (process: SIGTERM to the group; docker: stop)
// gives the function Grace to exit before killing it. Any other cause (a
// deadline, a forced cancel) kills at once.
type GracefulStop struct {
	Grace time.Duration
	// Reason is why the function is stopped; errors.Is sees through to it.
	Reason error
}

func (g *GracefulStop) Error() string {
	if g.Reason == nil {
		return "stopped gracefully"
	}
	return g.Reason.Error()
}

func (g *GracefulStop) Unwrap() error { return g.Reason }

// StopGrace reports how long a function whose context ended may take to
// exit after a gentle signal: the Grace of a GracefulStop cause, or 0 to
// kill at once.
func StopGrace(ctx context.Context) time.Duration {
	var g *GracefulStop
	if ctx.Err() != nil && errors.As(context.Cause(ctx), &g) {
		return g.Grace
	}
	return 0
}

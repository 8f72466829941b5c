package errdefs

import (
	"context"
	"fmt"
)

// Code is a stable, machine-readable error code — the error_code clients
// see — and the class it belongs to. The class decides the gRPC code, the
// HTTP status and the CLI's exit code, each mapped in one place; every code
// is declared here, once, and README's error-code table is checked against
// this list.
type Code struct {
	name  string
	class error
}

func (c Code) String() string { return c.name }

// Class is the code's error class (nil for outcome codes, which are
// recorded on executions rather than returned by a call).
func (c Code) Class() error { return c.class }

// New returns an error with code c and its class.
func (c Code) New(format string, args ...any) error {
	return &Coded{Code: c.name, Class: c.class, Msg: fmt.Sprintf(format, args...)}
}

// Is reports whether err carries code c.
func (c Code) Is(err error) bool { return err != nil && CodeOf(err) == c.name }

// Codes of the classes themselves, for errors without a more specific code.
var (
	InvalidArgument    = Code{"INVALID_ARGUMENT", ErrInvalidArgument}
	NotFound           = Code{"NOT_FOUND", ErrNotFound}
	AlreadyExists      = Code{"ALREADY_EXISTS", ErrAlreadyExists}
	FailedPrecondition = Code{"FAILED_PRECONDITION", ErrFailedPrecondition}
	ResourceExhausted  = Code{"RESOURCE_EXHAUSTED", ErrResourceExhausted}
	Unavailable        = Code{"UNAVAILABLE", ErrUnavailable}
	Unimplemented      = Code{"UNIMPLEMENTED", ErrUnimplemented}
	Internal           = Code{"INTERNAL", ErrInternal}
	Unauthenticated    = Code{"UNAUTHENTICATED", ErrUnauthenticated}
	PermissionDenied   = Code{"PERMISSION_DENIED", ErrPermissionDenied}
	DeadlineExceeded   = Code{"DEADLINE_EXCEEDED", context.DeadlineExceeded} // the caller's deadline passed
	Cancelled          = Code{"CANCELLED", context.Canceled}                 // cancelled by a caller
)

// Codes of calls refused for what they ask.
var (
	ArtifactOutsideRoot     = Code{"ARTIFACT_OUTSIDE_ROOT", ErrPermissionDenied}     // a local artifact path outside --artifact-root
	AuthInvalid             = Code{"AUTH_INVALID", ErrUnauthenticated}               // a token that is malformed, unknown, revoked or expired
	AuthRequired            = Code{"AUTH_REQUIRED", ErrUnauthenticated}              // no bearer token on a node with auth on
	AuthScope               = Code{"AUTH_SCOPE", ErrPermissionDenied}                // the token's scope does not allow the call
	CallbackNotAllowed      = Code{"CALLBACK_NOT_ALLOWED", ErrPermissionDenied}      // a callback_url host not in --callback-allow
	ArtifactChanged         = Code{"ARTIFACT_CHANGED", ErrFailedPrecondition}        // a task's file no longer has the content it was registered with
	ArtifactNotExecutable   = Code{"ARTIFACT_NOT_EXECUTABLE", ErrFailedPrecondition} // a process artifact without execute permission
	AsyncModeNotSupported   = Code{"ASYNC_MODE_NOT_SUPPORTED", ErrInvalidArgument}   // StreamFunction in async mode: call InvokeFunction, then attach
	ArtifactNotAFile        = Code{"ARTIFACT_NOT_A_FILE", ErrFailedPrecondition}     // a directory (or device, FIFO) where a file is needed
	ArtifactNotFound        = Code{"ARTIFACT_NOT_FOUND", ErrFailedPrecondition}      // no file (or uploaded artifact) at the location
	ArtifactNotRunnable     = Code{"ARTIFACT_NOT_RUNNABLE", ErrFailedPrecondition}   // neither an executable for this node nor a script with a #! line
	ArtifactNoInterpreter   = Code{"ARTIFACT_NO_INTERPRETER", ErrFailedPrecondition} // the interpreter a #! line (or an ELF's loader) names is not on the node
	ArtifactUnreadable      = Code{"ARTIFACT_UNREADABLE", ErrFailedPrecondition}     // the artifact cannot be read
	ArtifactWrongArch       = Code{"ARTIFACT_WRONG_ARCH", ErrFailedPrecondition}     // an executable built for another architecture than the node's
	ChecksumMismatch        = Code{"CHECKSUM_MISMATCH", ErrInvalidArgument}          // the content does not have the checksum given
	ClusterUnavailable      = Code{"CLUSTER_UNAVAILABLE", ErrUnavailable}            // no quorum of the JetStream servers answers the node: retry, with an idempotency key
	ConflictingIDs          = Code{"CONFLICTING_IDS", ErrInvalidArgument}            // both an execution id and an idempotency key
	ConflictingInput        = Code{"CONFLICTING_INPUT", ErrInvalidArgument}          // both parameters and input_ref
	DuplicateParameter      = Code{"DUPLICATE_PARAMETER", ErrInvalidArgument}        // two parameters of one name
	EmptyArtifact           = Code{"EMPTY_ARTIFACT", ErrInvalidArgument}             // an upload without content
	ExecutionExists         = Code{"EXECUTION_EXISTS", ErrAlreadyExists}             // execution ids are never reused
	ExecutionNotFound       = Code{"EXECUTION_NOT_FOUND", ErrNotFound}               // no such execution (or it expired)
	FunctionNotFound        = Code{"FUNCTION_NOT_FOUND", ErrNotFound}                // a WASM module without the function named
	DuplicateStep           = Code{"DUPLICATE_STEP", ErrInvalidArgument}             // two steps of a graph with one id
	GraphCycle              = Code{"GRAPH_CYCLE", ErrInvalidArgument}                // steps that depend on each other in a loop
	GraphEmpty              = Code{"GRAPH_EMPTY", ErrInvalidArgument}                // a graph without steps
	GraphTooLarge           = Code{"GRAPH_TOO_LARGE", ErrInvalidArgument}            // more than 1,000 steps, or a definition over its size
	InvalidGraphOutput      = Code{"INVALID_GRAPH_OUTPUT", ErrInvalidArgument}       // output names no step, or is needed (several sinks) and not given
	InvalidStep             = Code{"INVALID_STEP", ErrInvalidArgument}               // a step with a bad id, no task, or fields out of range
	SelfDependency          = Code{"SELF_DEPENDENCY", ErrInvalidArgument}            // a step that depends on itself
	UnknownDependency       = Code{"UNKNOWN_DEPENDENCY", ErrInvalidArgument}         // depends_on names no step of the graph
	ImageNotFound           = Code{"IMAGE_NOT_FOUND", ErrFailedPrecondition}         // the container image is not on the node
	InputNotFound           = Code{"INPUT_NOT_FOUND", ErrNotFound}                   // input_ref names nothing stored
	InputTooLarge           = Code{"INPUT_TOO_LARGE", ErrResourceExhausted}          // over --max-input-bytes
	InstantiateFailed       = Code{"INSTANTIATE_FAILED", ErrInvalidArgument}         // a WASM module that cannot be instantiated
	InvalidArtifact         = Code{"INVALID_ARTIFACT", ErrInvalidArgument}           // not a valid artifact of its type
	InvalidArtifactLocation = Code{"INVALID_ARTIFACT_LOCATION", ErrInvalidArgument}  // a location of the wrong form
	InvalidArtifactMetadata = Code{"INVALID_ARTIFACT_METADATA", ErrInvalidArgument}  // artifact metadata the runtime refuses
	InvalidCallbackURL      = Code{"INVALID_CALLBACK_URL", ErrInvalidArgument}       // not an http(s) URL
	InvalidChecksum         = Code{"INVALID_CHECKSUM", ErrInvalidArgument}           // not sha256:<64 hex digits>
	InvalidEnvironment      = Code{"INVALID_ENVIRONMENT", ErrInvalidArgument}        // an environment variable that cannot be set
	InvalidExecutionID      = Code{"INVALID_EXECUTION_ID", ErrInvalidArgument}       // not 1-128 of A-Z a-z 0-9 _ -
	InvalidFunction         = Code{"INVALID_FUNCTION", ErrInvalidArgument}           // a WASM export that is not a function to call
	InvalidFunctionName     = Code{"INVALID_FUNCTION_NAME", ErrInvalidArgument}      // function_name not UTF-8, or too long
	InvalidIdempotencyKey   = Code{"INVALID_IDEMPOTENCY_KEY", ErrInvalidArgument}    // not UTF-8, or too long
	InvalidInputRef         = Code{"INVALID_INPUT_REF", ErrInvalidArgument}          // input_ref not artifact:sha256:<hex>
	InvalidInvocation       = Code{"INVALID_INVOCATION", ErrInvalidArgument}         // an invocation a runtime cannot run
	InvalidInvocationType   = Code{"INVALID_INVOCATION_TYPE", ErrInvalidArgument}    // an unknown invocation_type
	InvalidLimit            = Code{"INVALID_LIMIT", ErrInvalidArgument}              // a negative page limit
	InvalidLimits           = Code{"INVALID_LIMITS", ErrInvalidArgument}             // task limits out of range
	InvalidMaxRetries       = Code{"INVALID_MAX_RETRIES", ErrInvalidArgument}        // negative max_retries
	InvalidParameter        = Code{"INVALID_PARAMETER", ErrInvalidArgument}          // a parameter that cannot be passed
	InvalidStatusFilter     = Code{"INVALID_STATUS_FILTER", ErrInvalidArgument}      // an unknown status filter
	InvalidTaskID           = Code{"INVALID_TASK_ID", ErrInvalidArgument}            // not a valid task id
	InvalidTimeout          = Code{"INVALID_TIMEOUT", ErrInvalidArgument}            // a negative timeout
	InvalidTimeRange        = Code{"INVALID_TIME_RANGE", ErrInvalidArgument}         // a negative time range
	InvalidUTF8             = Code{"INVALID_UTF8", ErrInvalidArgument}               // a string field that is not UTF-8
	InvalidWait             = Code{"INVALID_WAIT", ErrInvalidArgument}               // wait= not a duration
	MissingArtifactLocation = Code{"MISSING_ARTIFACT_LOCATION", ErrInvalidArgument}  // an artifact without a location
	MissingArtifactSpec     = Code{"MISSING_ARTIFACT_SPEC", ErrInvalidArgument}      // a new task without an artifact_spec
	MissingArtifactType     = Code{"MISSING_ARTIFACT_TYPE", ErrInvalidArgument}      // an artifact without a type
	MissingParameter        = Code{"MISSING_PARAMETER", ErrInvalidArgument}          // a required parameter not given
	MissingTaskID           = Code{"MISSING_TASK_ID", ErrInvalidArgument}            // no task_id to invoke
	MissingTaskName         = Code{"MISSING_TASK_NAME", ErrInvalidArgument}          // a new task without a name or id
	GraphStopping           = Code{"GRAPH_STOPPING", ErrFailedPrecondition}          // requeue of a graph whose cancelled steps have not all stopped yet: try again
	NotAGraph               = Code{"NOT_A_GRAPH", ErrFailedPrecondition}             // parent_id names an execution that is not a graph
	NodeIDInUse             = Code{"NODE_ID_IN_USE", ErrAlreadyExists}               // another live node has this --node-id
	NodeShuttingDown        = Code{"NODE_SHUTTING_DOWN", ErrUnavailable}             // the node is stopping: try another
	StoreFormatMismatch     = Code{"STORE_FORMAT_MISMATCH", ErrFailedPrecondition}   // live nodes keep the store in another format
	NotDeadLettered         = Code{"NOT_DEAD_LETTERED", ErrFailedPrecondition}       // requeue of an execution whose retries did not run out
	QueueFull               = Code{"QUEUE_FULL", ErrResourceExhausted}               // the task's or node's queue is full
	RequestTooLarge         = Code{"REQUEST_TOO_LARGE", ErrResourceExhausted}        // environment and metadata over a queue message
	RuntimeClosed           = Code{"RUNTIME_CLOSED", ErrUnavailable}                 // the runtime is shutting down
	RuntimeUnavailable      = Code{"RUNTIME_UNAVAILABLE", ErrFailedPrecondition}     // this node has no runtime of the task's type
	StorageFull             = Code{"STORAGE_FULL", ErrResourceExhausted}             // the store is too full to accept more work
	StreamModeNotSupported  = Code{"STREAM_MODE_NOT_SUPPORTED", ErrInvalidArgument}  // InvokeFunction in stream mode: call StreamFunction
	TaskBusy                = Code{"TASK_BUSY", ErrFailedPrecondition}               // delete of a task with live executions, without force
	TaskExists              = Code{"TASK_EXISTS", ErrAlreadyExists}                  // a task of that id exists with another artifact
	TaskNotFound            = Code{"TASK_NOT_FOUND", ErrNotFound}                    // no such task
	UnknownArtifactType     = Code{"UNKNOWN_ARTIFACT_TYPE", ErrInvalidArgument}      // not process, wasm or docker
	UnknownExecutionMode    = Code{"UNKNOWN_EXECUTION_MODE", ErrInvalidArgument}     // an execution_mode InvokeFunction does not know
)

// Outcome codes: why an execution did not complete, in result.error_code.
var (
	FunctionFailed      = Code{"FUNCTION_FAILED", nil}                        // the function exited non-zero
	ExecutionTimeout    = Code{"EXECUTION_TIMEOUT", nil}                      // the run's deadline passed
	OutputTooLarge      = Code{"OUTPUT_TOO_LARGE", nil}                       // output over --max-output-bytes; the first part is kept
	OutputNotStored     = Code{"OUTPUT_NOT_STORED", nil}                      // completed, but the output could not all be stored
	RuntimeError        = Code{"RUNTIME_ERROR", nil}                          // the function could not be run
	AttemptLost         = Code{"ATTEMPT_LOST", nil}                           // an attempt's node stopped reporting progress; another ran it again
	NodeShutdown        = Code{"NODE_SHUTDOWN", nil}                          // a sync or stream run cut by the node's shutdown
	QueueTimeout        = Code{"QUEUE_TIMEOUT", nil}                          // waited longer than --queue-ttl to start
	RetriesExhausted    = Code{"RETRIES_EXHAUSTED", nil}                      // every retry failed; dead-lettered
	CallerCancelled     = Code{"CALLER_CANCELLED", nil}                       // the sync or stream caller went away
	MemoryLimitExceeded = Code{"MEMORY_LIMIT_EXCEEDED", ErrResourceExhausted} // the function ran out of its memory limit
	PidsLimit           = Code{"PIDS_LIMIT", ErrResourceExhausted}            // the function hit its process (pids) limit
	StepFailed          = Code{"STEP_FAILED", nil}                            // a graph's step failed for good; the message names it
	UpstreamFailed      = Code{"UPSTREAM_FAILED", nil}                        // a graph's step never ran: its graph failed first
	UpstreamRestarted   = Code{"UPSTREAM_RESTARTED", nil}                     // a streamed graph step stopped because its parent runs again; it runs again too
	InputUnavailable    = Code{"INPUT_UNAVAILABLE", nil}                      // a graph step's parent output could not be read whole, or failed its checksum
)

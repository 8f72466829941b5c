// Package task defines a registered function (a task) and validates its
// artifact specification.
package task

import (
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/ident"
	"github.com/spear-go/spear/internal/runtime"
)

// Task is a registered function.
type Task struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description string            `json:"desc,omitempty"`
	Artifact    Artifact          `json:"artifact"`
	Metadata    map[string]string `json:"meta,omitempty"`
	Limits      Limits            `json:"limits,omitzero"`
	CreatedAt   time.Time         `json:"created"`
	UpdatedAt   time.Time         `json:"updated"`
}

// Limits are a task's quotas; zero means no limit (or the node's default).
type Limits struct {
	// MaxConcurrency bounds the task's executions running at once on one
	// node.
	MaxConcurrency int32 `json:"max_concurrency,omitempty"`
	// MaxQueued bounds the task's executions waiting to run; beyond it
	// invocations are refused with QUEUE_FULL.
	MaxQueued int32 `json:"max_queued,omitempty"`
	// MemoryLimitBytes caps one execution's memory.
	MemoryLimitBytes int64 `json:"memory_limit_bytes,omitempty"`
	// DefaultTimeoutMs bounds an execution that names no timeout;
	// MaxTimeoutMs caps any.
	DefaultTimeoutMs int64 `json:"default_timeout_ms,omitempty"`
	MaxTimeoutMs     int64 `json:"max_timeout_ms,omitempty"`
	// PidsLimit caps the processes (threads included) of one execution
	// (process runtime); 0 is the node's default.
	PidsLimit int64 `json:"pids_limit,omitempty"`
	// Network is "" (the sandbox's loopback-only network) or NetworkHost.
	Network string `json:"network,omitempty"`
}

// NetworkHost is the Limits.Network of a task that uses the host's
// network.
const NetworkHost = "host"

// Validate checks that limits are non-negative and consistent.
func (l Limits) Validate() error {
	if l.MaxConcurrency < 0 || l.MaxQueued < 0 || l.MemoryLimitBytes < 0 || l.DefaultTimeoutMs < 0 || l.MaxTimeoutMs < 0 || l.PidsLimit < 0 {
		return errdefs.InvalidLimits.New("task limits must not be negative (0 means no limit)")
	}
	if l.MaxTimeoutMs > 0 && l.DefaultTimeoutMs > l.MaxTimeoutMs {
		return errdefs.InvalidLimits.New("default_timeout_ms %d exceeds max_timeout_ms %d", l.DefaultTimeoutMs, l.MaxTimeoutMs)
	}
	if l.MemoryLimitBytes > 0 && l.MemoryLimitBytes < 1<<20 {
		return errdefs.InvalidLimits.New("memory_limit_bytes %d is below the 1 MiB minimum", l.MemoryLimitBytes)
	}
	if l.Network != "" && l.Network != NetworkHost {
		return errdefs.InvalidLimits.New("network %q: want empty (the sandbox's loopback-only network) or %q", l.Network, NetworkHost)
	}
	return nil
}

// Artifact is a task's artifact as the user specified it, plus the
// resolved digest.
type Artifact struct {
	ID       string            `json:"id,omitempty"`
	Type     runtime.Type      `json:"type"`
	Location string            `json:"location"`
	Version  string            `json:"version,omitempty"`
	Checksum string            `json:"checksum,omitempty"`
	Metadata map[string]string `json:"meta,omitempty"`
}

// Or returns a with its empty fields taken from b, except the checksum:
// it pins content, so it is never carried over.
func (a Artifact) Or(b Artifact) Artifact {
	if a.ID == "" {
		a.ID = b.ID
	}
	if a.Type == "" {
		a.Type = b.Type
	}
	if a.Location == "" {
		a.Location = b.Location
	}
	if a.Version == "" {
		a.Version = b.Version
	}
	if a.Metadata == nil {
		a.Metadata = b.Metadata
	}
	return a
}

// ValidateID checks a task id: it is used as a NATS subject token and a KV
// key.
func ValidateID(id string) error {
	if !ident.Valid(id) {
		return errdefs.InvalidTaskID.New("task id %q: want "+ident.Rule, id)
	}
	return nil
}

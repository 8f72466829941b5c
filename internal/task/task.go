// Package task defines a registered function (a task) and validates its
// artifact specification.
package task

import (
	"regexp"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
)

// Task is a registered function.
type Task struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description string            `json:"desc,omitempty"`
	Artifact    Artifact          `json:"artifact"`
	Metadata    map[string]string `json:"meta,omitempty"`
	CreatedAt   time.Time         `json:"created"`
	UpdatedAt   time.Time         `json:"updated"`
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

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ValidateID checks a task id: it is used as a NATS subject token and a KV
// key.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return errdefs.New(errdefs.ErrInvalidArgument, "INVALID_TASK_ID",
			"task id %q: want 1-128 characters of A-Z, a-z, 0-9, '_' or '-'", id)
	}
	return nil
}

// Package sandbox holds the pieces of the process runtime's sandbox that do
// not depend on how a process is started: the per-thread confinement a
// launcher thread carries into every child it forks (a network namespace
// with loopback only, no_new_privs, a Landlock domain, a seccomp deny-list),
// the pool of unprivileged uids runs are given one of (Slots), the
// per-execution working directories (WorkDirs), and the report of which
// levels a node applies (Report).
//
// The four levels are those of docs/SECURITY.md: 1 process (process group,
// scrubbed environment, work dir, rlimits), 2 privileges (uid, no_new_privs,
// Landlock, seccomp), 3 cgroups, 4 network (a network namespace).
package sandbox

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Mode is how much sandbox a node applies.
type Mode string

// Modes.
const (
	// ModeAuto applies every level the host allows.
	ModeAuto Mode = "auto"
	// ModeOff applies none beyond the process group and scrubbed
	// environment Spear always gave (for benchmarks and debugging).
	ModeOff Mode = "off"
)

// ParseMode parses a --sandbox value ("" is auto).
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", ModeAuto:
		return ModeAuto, nil
	case ModeOff:
		return ModeOff, nil
	}
	return "", fmt.Errorf("sandbox %q: want auto or off", s)
}

// Feature names, as they appear in an execution's sandbox field.
const (
	FeatProcessGroup = "process-group"
	FeatEnv          = "env"
	FeatWorkDir      = "workdir"
	FeatRlimits      = "rlimits"
	FeatUID          = "uid"
	FeatNoNewPrivs   = "no-new-privs"
	FeatLandlock     = "landlock"
	FeatSeccomp      = "seccomp"
	FeatCgroups      = "cgroups"
	FeatNetNS        = "netns"
)

// Level is the state of one sandbox level on a node.
type Level struct {
	// Name is process, privileges, cgroups or network.
	Name string
	// On lists the level's features the node applies.
	On []string
	// Missing says, per feature not applied, why.
	Missing map[string]string
}

// Full reports whether every feature of the level is applied.
func (l Level) Full() bool { return len(l.On) > 0 && len(l.Missing) == 0 }

// String is "on", "on: a, b; c unavailable: why", or "unavailable: why".
func (l Level) String() string {
	var why []string
	for _, f := range slices.Sorted(maps.Keys(l.Missing)) {
		why = append(why, f+" unavailable: "+l.Missing[f])
	}
	switch {
	case len(l.On) == 0 && len(why) == 0:
		return "off"
	case len(l.On) == 0:
		return strings.Join(why, "; ")
	case len(why) == 0:
		return "on (" + strings.Join(l.On, ", ") + ")"
	}
	return "partial (" + strings.Join(l.On, ", ") + "); " + strings.Join(why, "; ")
}

// Report is which levels a node applies.
type Report struct {
	Mode   Mode
	Levels []Level
}

// Info returns the report as GetHealth's system_info entries: "sandbox"
// (the mode and the levels fully on) and "sandbox.<level>" per level.
func (r Report) Info() map[string]string {
	m := map[string]string{}
	var full []string
	for _, l := range r.Levels {
		m["sandbox."+l.Name] = l.String()
		if l.Full() {
			full = append(full, l.Name)
		}
	}
	s := string(r.Mode)
	if len(full) > 0 {
		s += ": " + strings.Join(full, ",")
	}
	m["sandbox"] = s
	return m
}

package cli

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	"github.com/spear-go/spear/api/spearlet"
)

// Task limit flag names, shared by `task create` and `task limits`.
const (
	flagMaxConcurrency = "max-concurrency"
	flagMaxQueued      = "max-queued"
	flagMemoryLimit    = "memory-limit"
	flagDefaultTimeout = "default-timeout"
	flagMaxTimeout     = "max-timeout"
	flagPidsLimit      = "pids-limit"
	flagNetwork        = "network"
)

// limitOpts holds the task limit flags.
type limitOpts struct {
	maxConcurrency, maxQueued  int32
	memory                     string
	defaultTimeout, maxTimeout time.Duration
	pids                       int64
	network                    string
}

// register adds the limit flags to f.
func (o *limitOpts) register(f *pflag.FlagSet) {
	f.Int32Var(&o.maxConcurrency, flagMaxConcurrency, 0, "executions of the task running at once on one node (0: no limit)")
	f.Int32Var(&o.maxQueued, flagMaxQueued, 0, "executions of the task waiting to run; more are refused with QUEUE_FULL (0: no limit)")
	f.StringVar(&o.memory, flagMemoryLimit, "", "memory ceiling of one execution: bytes, or with a suffix K, M, G, T (10^3...) or Ki, Mi, Gi, Ti (2^10...), e.g. 64Mi (0: no limit)")
	f.DurationVar(&o.defaultTimeout, flagDefaultTimeout, 0, "timeout of an execution that names none, e.g. 30s (0: node default)")
	f.DurationVar(&o.maxTimeout, flagMaxTimeout, 0, "cap on any execution's timeout, e.g. 5m (0: no cap)")
	f.Int64Var(&o.pids, flagPidsLimit, 0, "processes (threads included) one execution may have at once; more fail with PIDS_LIMIT (0: node default)")
	f.StringVar(&o.network, flagNetwork, "", `network of an execution: "host" (the host's network) or "sandbox" (loopback only, the default)`)
}

// apply overwrites the fields of l whose flags were given on the command
// line, leaving the others alone, and reports whether any was given.
func (o *limitOpts) apply(f *pflag.FlagSet, l *spearlet.TaskLimits) (bool, error) {
	changed := false
	if f.Changed(flagMaxConcurrency) {
		if o.maxConcurrency < 0 {
			return false, usageErrorf("--%s must not be negative", flagMaxConcurrency)
		}
		l.MaxConcurrency, changed = o.maxConcurrency, true
	}
	if f.Changed(flagMaxQueued) {
		if o.maxQueued < 0 {
			return false, usageErrorf("--%s must not be negative", flagMaxQueued)
		}
		l.MaxQueued, changed = o.maxQueued, true
	}
	if f.Changed(flagMemoryLimit) {
		n, err := parseByteSize(o.memory)
		if err != nil {
			return false, usageErrorf("--%s %q: %v", flagMemoryLimit, o.memory, err)
		}
		l.MemoryLimitBytes, changed = n, true
	}
	if f.Changed(flagPidsLimit) {
		if o.pids < 0 {
			return false, usageErrorf("--%s must not be negative", flagPidsLimit)
		}
		l.PidsLimit, changed = o.pids, true
	}
	if f.Changed(flagNetwork) {
		switch o.network {
		case "host":
			l.Network = "host"
		case "sandbox", "":
			l.Network = ""
		default:
			return false, usageErrorf("--%s %q: want host or sandbox", flagNetwork, o.network)
		}
		changed = true
	}
	if f.Changed(flagDefaultTimeout) {
		ms, err := durationMillis(flagDefaultTimeout, o.defaultTimeout)
		if err != nil {
			return false, err
		}
		l.DefaultTimeoutMs, changed = ms, true
	}
	if f.Changed(flagMaxTimeout) {
		ms, err := durationMillis(flagMaxTimeout, o.maxTimeout)
		if err != nil {
			return false, err
		}
		l.MaxTimeoutMs, changed = ms, true
	}
	return changed, nil
}

// durationMillis converts a timeout flag to milliseconds: 0 stays 0, a
// positive duration must be at least 1ms.
func durationMillis(flag string, d time.Duration) (int64, error) {
	switch {
	case d < 0:
		return 0, usageErrorf("--%s must not be negative", flag)
	case d > 0 && d < time.Millisecond:
		return 0, usageErrorf("--%s %v: want 0 or at least 1ms", flag, d)
	}
	return d.Milliseconds(), nil
}

// byteUnits are the multipliers of the suffixes parseByteSize accepts, in
// lower case.
var byteUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "ki": 1 << 10, "kib": 1 << 10,
	"m": 1e6, "mb": 1e6, "mi": 1 << 20, "mib": 1 << 20,
	"g": 1e9, "gb": 1e9, "gi": 1 << 30, "gib": 1 << 30,
	"t": 1e12, "tb": 1e12, "ti": 1 << 40, "tib": 1 << 40,
}

// parseByteSize parses a byte count with an optional unit suffix (case
// insensitive): "1048576", "500M" (10^6), "64Mi" (2^20), "1.5Gi", "2GiB".
// The result must be a whole number of bytes.
func parseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(s)
	}
	num, unit := s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	if num == "" || strings.Count(num, ".") > 1 || num == "." {
		return 0, fmt.Errorf("want a number of bytes with an optional suffix (K, Ki, M, Mi, G, Gi, T, Ti)")
	}
	mult, ok := byteUnits[unit]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q: want B, K, Ki, M, Mi, G, Gi, T or Ti", s[i:])
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("bad number %q", num)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("not a whole number of bytes")
	}
	n := r.Num()
	if !n.IsInt64() {
		return 0, fmt.Errorf("too large")
	}
	return n.Int64(), nil
}

// addLimits adds a task's limits to kv; unset limits are skipped unless
// all is set, when they are shown as "unset".
func addLimits(kv *kvList, l *spearlet.TaskLimits, all bool) {
	orUnset := func(s string) string {
		if s == "" && all {
			return "unset"
		}
		return s
	}
	count := func(n int32) string {
		if n == 0 {
			return ""
		}
		return strconv.Itoa(int(n))
	}
	mem := ""
	if n := l.GetMemoryLimitBytes(); n > 0 {
		mem = fmtBytes(n)
		if n >= 1024 {
			mem += fmt.Sprintf(" (%d bytes)", n)
		}
	}
	kv.add("max concurrency", orUnset(count(l.GetMaxConcurrency())))
	kv.add("max queued", orUnset(count(l.GetMaxQueued())))
	kv.add("memory limit", orUnset(mem))
	kv.add("default timeout", orUnset(fmtMillis(l.GetDefaultTimeoutMs())))
	kv.add("max timeout", orUnset(fmtMillis(l.GetMaxTimeoutMs())))
	pids := ""
	if n := l.GetPidsLimit(); n > 0 {
		pids = strconv.FormatInt(n, 10)
	}
	kv.add("pids limit", orUnset(pids))
	kv.add("network", l.GetNetwork())
}

func (a *taskCommands) newTaskLimitsCmd() *cobra.Command {
	var o limitOpts
	cmd := &cobra.Command{
		Use:   "limits ID [flags]",
		Short: "Show or change a task's limits",
		Long: `Change the limits of task ID. Limits whose flags are not given keep their
current value (the task is read first); 0 removes a limit. Without limit
flags, the current limits are shown and nothing is changed.

The change is a read-modify-write: a concurrent change of the same task's
limits between the read and the write is overwritten.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.taskLimits(cmd, args[0], &o)
		},
	}
	o.register(cmd.Flags())
	return cmd
}

func (a *taskCommands) taskLimits(cmd *cobra.Command, id string, o *limitOpts) error {
	// Validate the flags before any RPC.
	changed, err := o.apply(cmd.Flags(), &spearlet.TaskLimits{})
	if err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	got, err := call(ctx, a.timeout, c.GetTask, &spearlet.GetTaskRequest{TaskId: id})
	if err != nil {
		return err
	}
	if !got.GetFound() {
		if a.json {
			if err := a.printJSON(got); err != nil {
				return err
			}
		}
		return taskNotFound(id, got.GetMessage())
	}
	if !changed {
		if a.json {
			return a.printJSON(got)
		}
		var kv kvList
		kv.add("task id", got.GetTask().GetTaskId())
		addLimits(&kv, got.GetTask().GetLimits(), true)
		kv.print(a.stdout)
		return nil
	}
	limits := &spearlet.TaskLimits{}
	if cur := got.GetTask().GetLimits(); cur != nil {
		limits = proto.Clone(cur).(*spearlet.TaskLimits)
	}
	if _, err := o.apply(cmd.Flags(), limits); err != nil {
		return err
	}
	resp, err := call(ctx, a.timeout, c.UpdateTaskLimits, &spearlet.UpdateTaskLimitsRequest{TaskId: id, Limits: limits})
	if err != nil {
		return err
	}
	if a.json {
		return a.printJSON(resp)
	}
	fmt.Fprintf(a.stdout, "updated limits of task %s\n", id)
	var kv kvList
	// Show what the node stored, falling back to what was sent.
	if resp.GetTask().GetLimits() != nil {
		limits = resp.GetTask().GetLimits()
	}
	addLimits(&kv, limits, true)
	kv.print(a.stdout)
	return nil
}

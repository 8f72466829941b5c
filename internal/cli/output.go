package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spear-go/spear/api/spearlet"
)

// printJSON writes m as one line of protojson.
func (a *app) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	b = append(b, '\n')
	_, err = a.stdout.Write(b)
	return err
}

// newTable returns a tabwriter for aligned columns; call Flush when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// row writes one tab-separated table row.
func row(tw io.Writer, cols ...string) {
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
}

// kvList collects "key: value" lines printed aligned; empty values are
// skipped.
type kvList [][2]string

func (l *kvList) add(k, v string) {
	if v != "" {
		*l = append(*l, [2]string{k, v})
	}
}

func (l kvList) print(w io.Writer) {
	tw := newTable(w)
	for _, kv := range l {
		row(tw, kv[0]+":", kv[1])
	}
	_ = tw.Flush()
}

// statusName is an ExecutionStatus in lower case without the enum prefix.
func statusName(s spearlet.ExecutionStatus) string {
	return enumName(s.String(), "EXECUTION_STATUS_")
}

// modeName is an ExecutionMode in lower case without the enum prefix.
func modeName(m spearlet.ExecutionMode) string {
	return enumName(m.String(), "EXECUTION_MODE_")
}

func enumName(s, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

// parseStatus maps a lower-case status name to its enum value.
func parseStatus(s string) (spearlet.ExecutionStatus, bool) {
	v, ok := spearlet.ExecutionStatus_value["EXECUTION_STATUS_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, false
	}
	return spearlet.ExecutionStatus(v), true
}

// fmtTimestamp formats ts as local RFC3339, "" when unset.
func fmtTimestamp(ts *timestamppb.Timestamp) string {
	if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return ""
	}
	return ts.AsTime().Local().Format(time.RFC3339)
}

// fmtUnixMillis formats Unix milliseconds as local RFC3339, "" when 0.
func fmtUnixMillis(ms int64) string {
	if ms == 0 {
		return ""
	}
	return time.UnixMilli(ms).Local().Format(time.RFC3339)
}

// fmtMillis formats a duration in milliseconds, "" when 0.
func fmtMillis(ms int64) string {
	if ms == 0 {
		return ""
	}
	return (time.Duration(ms) * time.Millisecond).String()
}

// fmtBytes formats a byte count, "" when 0.
func fmtBytes(n int64) string {
	const unit = 1024
	switch {
	case n == 0:
		return ""
	case n < unit:
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// orDash returns s, or "-" when s is empty (for table cells).
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fmtMap formats a map as sorted "k=v" pairs separated by ", ".
func fmtMap[V any](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%v", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// truncate shortens s to n runes with an ellipsis.
func truncate(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// writeFlush writes b to w and flushes w if it buffers.
func writeFlush(w io.Writer, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	switch f := w.(type) {
	case interface{ Flush() error }:
		return f.Flush()
	case interface{ Flush() }:
		f.Flush()
	}
	return nil
}

// isTerminal reports whether w is a character device (a TTY).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// outcome maps an execution status to the CLI exit code; terminal is false
// for statuses that are not final.
func outcome(s spearlet.ExecutionStatus) (code int, terminal bool) {
	switch s {
	case spearlet.ExecutionStatus_EXECUTION_STATUS_COMPLETED:
		return ExitOK, true
	case spearlet.ExecutionStatus_EXECUTION_STATUS_FAILED:
		return ExitFailed, true
	case spearlet.ExecutionStatus_EXECUTION_STATUS_TIMEOUT:
		return ExitTimeout, true
	case spearlet.ExecutionStatus_EXECUTION_STATUS_CANCELLED:
		return ExitCancelled, true
	default:
		return ExitFailed, false
	}
}

// failureVerb describes a terminal non-completed status for messages.
func failureVerb(s spearlet.ExecutionStatus) string {
	switch s {
	case spearlet.ExecutionStatus_EXECUTION_STATUS_TIMEOUT:
		return "timed out"
	case spearlet.ExecutionStatus_EXECUTION_STATUS_CANCELLED:
		return "was cancelled"
	case spearlet.ExecutionStatus_EXECUTION_STATUS_FAILED:
		return "failed"
	default:
		return "ended with status " + statusName(s)
	}
}

// reportFailure prints "error: execution ID <verb>: CODE: message" to
// stderr.
func (a *app) reportFailure(execID string, s spearlet.ExecutionStatus, errorCode, errorMessage string) {
	var b strings.Builder
	b.WriteString("error: execution ")
	if execID != "" {
		b.WriteString(execID + " ")
	}
	b.WriteString(failureVerb(s))
	if errorCode != "" {
		b.WriteString(": " + errorCode)
	}
	if errorMessage != "" {
		b.WriteString(": " + errorMessage)
	}
	fmt.Fprintln(a.stderr, b.String())
}

// finishExecution reports a finished execution's result (human mode: raw
// output on stdout, the whole of it whatever its size; failure on stderr)
// and returns the outcome as an exit error (nil for COMPLETED).
func (a *app) finishExecution(ctx context.Context, execID string, res *spearlet.ExecutionResult) error {
	code, _ := outcome(res.GetStatus())
	if !a.json {
		if err := a.writeOutput(ctx, execID, res, a.stdout); err != nil {
			return err
		}
	}
	if code != ExitOK {
		a.reportFailure(execID, res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage())
	}
	return exitWith(code)
}

// parseKVs parses repeated "k=v" flag values.
func parseKVs(flag string, vals []string) (map[string]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(vals))
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, usageErrorf("--%s %q: want KEY=VALUE", flag, v)
		}
		m[k] = val
	}
	return m, nil
}

// answer prints resp as JSON with --json, and turns a negative answer (ok
// false) into a failure (exit 1) with the message format and args. human
// is true when the caller should go on to print the human form.
func (a *app) answer(resp proto.Message, ok bool, format string, args ...any) (human bool, err error) {
	if a.json {
		if err := a.printJSON(resp); err != nil {
			return false, err
		}
	}
	if !ok {
		return false, failf(format, args...)
	}
	return !a.json, nil
}

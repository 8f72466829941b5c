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

	"golang.org/x/sys/unix"
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

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// lastByteWriter remembers the last byte written through it.
type lastByteWriter struct {
	w    io.Writer
	last byte
	any  bool
}

func (l *lastByteWriter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if n > 0 {
		l.last, l.any = p[n-1], true
	}
	return n, err
}

// writeRaw runs write with a writer to stdout for a function's raw output.
// On a terminal it then ends an unterminated last line, so the prompt
// starts on a line of its own; piped, the bytes stay exact.
func (a *app) writeRaw(write func(io.Writer) error) error {
	lw := &lastByteWriter{w: a.stdout}
	err := write(lw)
	if lw.any && lw.last != '\n' && a.isTerminal(a.stdout) {
		fmt.Fprintln(a.stdout)
	}
	return err
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

// reportFailure prints "error: execution ID <verb>: message (CODE)" to
// stderr.
func (a *app) reportFailure(execID string, s spearlet.ExecutionStatus, errorCode, errorMessage string) {
	msg := "execution "
	if execID != "" {
		msg += execID + " "
	}
	msg += failureVerb(s)
	// Not "was cancelled: cancelled: no longer needed".
	errorMessage = strings.TrimPrefix(errorMessage, statusName(s)+": ")
	if !strings.EqualFold(errorMessage, statusName(s)) {
		msg += suffix(errorMessage)
	}
	fmt.Fprintln(a.stderr, "error: "+withCode(msg, errorCode))
}

// finishExecution reports a finished execution's result (human mode: raw
// output on stdout, the whole of it whatever its size; failure on stderr)
// and returns the outcome as an exit error (nil for COMPLETED).
func (a *app) finishExecution(ctx context.Context, execID string, res *spearlet.ExecutionResult) error {
	if !a.json {
		err := a.writeRaw(func(w io.Writer) error { return a.writeOutput(ctx, execID, res, w) })
		if err != nil {
			return err
		}
	}
	return a.ended(execID, res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage())
}

// ended reports an execution's final status s on stderr when it is not
// COMPLETED and returns the error that exits with its code.
func (a *app) ended(execID string, s spearlet.ExecutionStatus, errorCode, errorMessage string) error {
	err := outcomeExit(s)
	if err != nil {
		a.reportFailure(execID, s, errorCode, errorMessage)
	}
	return err
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

// answer prints resp as JSON with --json, and returns fail for a negative
// answer (ok false). human is true when the caller should go on to print
// the human form.
func (a *app) answer(resp proto.Message, ok bool, fail error) (human bool, err error) {
	if a.json {
		if err := a.printJSON(resp); err != nil {
			return false, err
		}
	}
	if !ok {
		return false, fail
	}
	return !a.json, nil
}

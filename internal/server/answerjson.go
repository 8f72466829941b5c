package server

import (
	"encoding/base64"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	pb "github.com/spear-go/spear/api/spearlet"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The answers a curl user reads most (an invocation's, an execution's
// status) are written here field by field, as protojson writes them: in
// field number order, zero values left out, 64-bit integers quoted, enums
// by name, timestamps in RFC 3339, an output's Any with its @type and the
// BytesValue's base64 or the StringValue's text. protojson takes about
// 18 µs for an invocation's answer, this about 5 µs (BenchmarkJSONCodec).
// Whatever this does not write exactly as protojson would (a string that
// is not UTF-8, an Any of another type, an enum value without a name, a
// timestamp out of range, an execution with steps) makes it give up, and
// protojson writes the message. TestAnswerJSON holds the two to the same
// output.

// appendAnswer appends the JSON of m, an answer written here, to b; false
// when m is of another type or holds what only protojson writes.
func appendAnswer(b []byte, m any) ([]byte, bool) {
	w := jsonObject{b: b}
	switch m := m.(type) {
	case *pb.InvokeFunctionResponse:
		w.invokeResponse(m)
	case *pb.GetExecutionStatusResponse:
		w.statusResponse(m)
	default:
		return b, false
	}
	return w.b, !w.failed
}

// jsonObject writes one JSON object's fields; failed records that a value
// is not one it writes.
type jsonObject struct {
	b      []byte
	failed bool
	fields int // written in the innermost open object
}

func (w *jsonObject) invokeResponse(m *pb.InvokeFunctionResponse) {
	w.open()
	w.bool("success", m.GetSuccess())
	w.str("message", m.GetMessage())
	w.str("executionId", m.GetExecutionId())
	w.str("taskId", m.GetTaskId())
	w.str("instanceId", m.GetInstanceId())
	if r := m.GetResult(); r != nil {
		w.key("result")
		w.result(r)
	}
	w.str("statusEndpoint", m.GetStatusEndpoint())
	w.int64("estimatedCompletionMs", m.GetEstimatedCompletionMs())
	w.close()
}

func (w *jsonObject) statusResponse(m *pb.GetExecutionStatusResponse) {
	if len(m.GetSteps()) > 0 {
		w.failed = true
		return
	}
	w.open()
	w.bool("found", m.GetFound())
	if r := m.GetResult(); r != nil {
		w.key("result")
		w.result(r)
	}
	if logs := m.GetLogs(); len(logs) > 0 {
		w.key("logs")
		w.b = append(w.b, '[')
		for i, l := range logs {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.quote(l)
		}
		w.b = append(w.b, ']')
	}
	w.str("message", m.GetMessage())
	w.str("executionId", m.GetExecutionId())
	w.str("taskId", m.GetTaskId())
	w.str("parentId", m.GetParentId())
	w.str("stepId", m.GetStepId())
	w.close()
}

func (w *jsonObject) result(r *pb.ExecutionResult) {
	w.open()
	w.status("status", r.GetStatus())
	if a := r.GetResult(); a != nil {
		w.key("result")
		w.anyValue(a)
	}
	w.str("errorMessage", r.GetErrorMessage())
	w.str("errorCode", r.GetErrorCode())
	w.int64("executionTimeMs", r.GetExecutionTimeMs())
	w.int64("memoryUsedBytes", r.GetMemoryUsedBytes())
	w.strMap("metrics", r.GetMetrics())
	w.time("startedAt", r.GetStartedAt())
	w.time("completedAt", r.GetCompletedAt())
	w.int32("exitCode", r.GetExitCode())
	w.int32("attempts", r.GetAttempts())
	w.bool("deadLettered", r.GetDeadLettered())
	if h := r.GetAttemptHistory(); len(h) > 0 {
		w.key("attemptHistory")
		w.b = append(w.b, '[')
		for i, a := range h {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.attempt(a)
		}
		w.b = append(w.b, ']')
	}
	if c := r.GetCallback(); c != nil {
		w.key("callback")
		w.callback(c)
	}
	w.int64("outputSize", r.GetOutputSize())
	w.str("outputSha256", r.GetOutputSha256())
	w.bool("outputPartial", r.GetOutputPartial())
	w.str("sandbox", r.GetSandbox())
	w.close()
}

func (w *jsonObject) attempt(a *pb.AttemptInfo) {
	w.open()
	w.int32("attempt", a.GetAttempt())
	w.status("status", a.GetStatus())
	w.str("errorCode", a.GetErrorCode())
	w.str("errorMessage", a.GetErrorMessage())
	w.time("startedAt", a.GetStartedAt())
	w.time("completedAt", a.GetCompletedAt())
	w.str("node", a.GetNode())
	w.close()
}

func (w *jsonObject) callback(c *pb.CallbackDelivery) {
	w.open()
	w.str("url", c.GetUrl())
	w.str("state", c.GetState())
	w.int32("attempts", c.GetAttempts())
	w.int32("lastStatusCode", c.GetLastStatusCode())
	w.str("lastError", c.GetLastError())
	w.time("deliveredAt", c.GetDeliveredAt())
	w.close()
}

// Any types written here: a function's output.
const (
	bytesValueURL  = "type.googleapis.com/google.protobuf.BytesValue"
	stringValueURL = "type.googleapis.com/google.protobuf.StringValue"
)

// anyValue writes a BytesValue or StringValue held in an Any.
func (w *jsonObject) anyValue(a *anypb.Any) {
	url := a.GetTypeUrl()
	if url != bytesValueURL && url != stringValueURL {
		w.failed = true
		return
	}
	v, ok := wrappedValue(a.GetValue())
	if !ok {
		w.failed = true
		return
	}
	w.open()
	w.key("@type")
	w.quote(url)
	w.key("value")
	if url == bytesValueURL {
		w.b = append(w.b, '"')
		w.b = base64.StdEncoding.AppendEncode(w.b, v)
		w.b = append(w.b, '"')
	} else {
		w.quote(string(v))
	}
	w.close()
}

// wrappedValue is the value field (1, length-delimited) of a wrapper's
// encoding; false for anything else (another field, a repeated one).
func wrappedValue(b []byte) ([]byte, bool) {
	var v []byte
	seen := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != 1 || typ != protowire.BytesType || seen {
			return nil, false
		}
		b = b[n:]
		val, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return nil, false
		}
		v, b, seen = val, b[m:], true
	}
	return v, true
}

func (w *jsonObject) open() {
	w.b = append(w.b, '{')
	w.fields = 0
}

// close ends an object; the enclosing one has at least its key written.
func (w *jsonObject) close() {
	w.b = append(w.b, '}')
	w.fields = 1
}

func (w *jsonObject) key(name string) {
	if w.fields > 0 {
		w.b = append(w.b, ',')
	}
	w.fields++
	w.b = append(w.b, '"')
	w.b = append(w.b, name...)
	w.b = append(w.b, '"', ':')
}

func (w *jsonObject) str(name, v string) {
	if v != "" {
		w.key(name)
		w.quote(v)
	}
}

func (w *jsonObject) bool(name string, v bool) {
	if v {
		w.key(name)
		w.b = append(w.b, "true"...)
	}
}

func (w *jsonObject) int32(name string, v int32) {
	if v != 0 {
		w.key(name)
		w.b = strconv.AppendInt(w.b, int64(v), 10)
	}
}

func (w *jsonObject) int64(name string, v int64) {
	if v != 0 {
		w.key(name)
		w.b = append(w.b, '"')
		w.b = strconv.AppendInt(w.b, v, 10)
		w.b = append(w.b, '"')
	}
}

func (w *jsonObject) status(name string, v pb.ExecutionStatus) {
	if v == 0 {
		return
	}
	s, ok := pb.ExecutionStatus_name[int32(v)]
	if !ok {
		w.failed = true
		return
	}
	w.key(name)
	w.quote(s)
}

func (w *jsonObject) strMap(name string, m map[string]string) {
	if len(m) == 0 {
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	w.key(name)
	w.b = append(w.b, '{')
	for i, k := range keys {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.quote(k)
		w.b = append(w.b, ':')
		w.quote(m[k])
	}
	w.b = append(w.b, '}')
}

// Timestamps protojson writes: years 1 to 9999.
var (
	minTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	maxTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).Unix()
)

// time writes a timestamp as protojson does: UTC, with 0, 3, 6 or 9
// fractional digits.
func (w *jsonObject) time(name string, ts *timestamppb.Timestamp) {
	if ts == nil {
		return
	}
	s, n := ts.GetSeconds(), ts.GetNanos()
	if s < minTime || s > maxTime || n < 0 || n >= 1e9 {
		w.failed = true
		return
	}
	w.key(name)
	w.b = append(w.b, '"')
	w.b = time.Unix(s, 0).UTC().AppendFormat(w.b, "2006-01-02T15:04:05")
	if n != 0 {
		frac := strconv.AppendInt(nil, int64(n)+1e9, 10)[1:] // nine digits
		switch {
		case n%1e6 == 0:
			frac = frac[:3]
		case n%1e3 == 0:
			frac = frac[:6]
		}
		w.b = append(w.b, '.')
		w.b = append(w.b, frac...)
	}
	w.b = append(w.b, 'Z', '"')
}

// quote writes s as a JSON string, escaped as protojson escapes it; a
// string that is not valid UTF-8 (which protojson refuses) is left to it.
func (w *jsonObject) quote(s string) {
	if !utf8.ValidString(s) {
		w.failed = true
		return
	}
	w.b = append(w.b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= ' ' && c != '"' && c != '\\' {
			continue
		}
		w.b = append(w.b, s[start:i]...)
		start = i + 1
		switch c {
		case '"', '\\':
			w.b = append(w.b, '\\', c)
		case '\b':
			w.b = append(w.b, '\\', 'b')
		case '\f':
			w.b = append(w.b, '\\', 'f')
		case '\n':
			w.b = append(w.b, '\\', 'n')
		case '\r':
			w.b = append(w.b, '\\', 'r')
		case '\t':
			w.b = append(w.b, '\\', 't')
		default:
			w.b = append(w.b, '\\', 'u', '0', '0', hexDigit[c>>4], hexDigit[c&0xf])
		}
	}
	w.b = append(w.b, s[start:]...)
	w.b = append(w.b, '"')
}

const hexDigit = "0123456789abcdef"

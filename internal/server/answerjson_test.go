package server

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestAnswerJSON: for answers with every field set at random (strings to
// escape and not UTF-8, enum values without a name, timestamps at and
// past their range, Anys of several types and malformed ones), the JSON
// appendAnswer writes is, value for value, protojson's; where it gives
// up, protojson writes the message. A field added to an answer and not
// written here fails this test.
func TestAnswerJSON(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	written := 0
	const n = 4000
	for i := range n {
		var m proto.Message = &pb.InvokeFunctionResponse{}
		if i%2 == 1 {
			m = &pb.GetExecutionStatusResponse{}
		}
		fill(rnd, m.ProtoReflect(), 0)
		want, werr := protojson.Marshal(m)
		got, ok := appendAnswer([]byte("prefix"), m)
		if !ok {
			continue
		}
		written++
		if werr != nil {
			t.Fatalf("appendAnswer wrote %s where protojson fails: %v", got, werr)
		}
		got, found := bytes.CutPrefix(got, []byte("prefix"))
		if !found {
			t.Fatalf("appendAnswer did not append: %s", got)
		}
		if g, w := decoded(t, got), decoded(t, want); !reflect.DeepEqual(g, w) {
			t.Fatalf("answer %d:\nappendAnswer %s\nprotojson    %s", i, got, want)
		}
	}
	// Most are written here; enough give up to exercise the fallbacks.
	if written < n/2 || written > n-n/10 {
		t.Errorf("appendAnswer wrote %d of %d answers", written, n)
	}
}

// TestAnswerJSONTypical: an invocation's and a status's usual answers are
// written here, and the codec's output is what protojson reads back as
// the same message.
func TestAnswerJSONTypical(t *testing.T) {
	now := timestamppb.New(time.Date(2026, 12, 1, 7, 37, 53, 466832476, time.UTC))
	res := &pb.ExecutionResult{
		Status: pb.ExecutionStatus_EXECUTION_STATUS_FAILED, Result: pb.BytesAny([]byte("hello")),
		ErrorMessage: "exit status 1: \"boom\"\n", ErrorCode: "FUNCTION_FAILED", MemoryUsedBytes: 131072,
		StartedAt: now, CompletedAt: now, Attempts: 1, OutputSize: 5, OutputSha256: "2cf2",
		AttemptHistory: []*pb.AttemptInfo{{Attempt: 1, Status: pb.ExecutionStatus_EXECUTION_STATUS_FAILED, StartedAt: now, Node: "vm-1"}},
		Metrics:        map[string]string{"b": "2", "a": "1"},
	}
	for _, m := range []proto.Message{
		&pb.InvokeFunctionResponse{Success: true, Message: "completed", ExecutionId: "01a2", TaskId: "echo", Result: res},
		&pb.GetExecutionStatusResponse{Found: true, Result: res, Logs: []string{"a", "é"}, ExecutionId: "01a2"},
	} {
		b, err := enumJSON{"json"}.Marshal(m)
		if _, ok := appendAnswer(nil, m); !ok || err != nil {
			t.Fatalf("%T: not written here (%v)", m, err)
		}
		back := m.ProtoReflect().New().Interface()
		if err := protojson.Unmarshal(b, back); err != nil || !proto.Equal(back, m) {
			t.Errorf("%T: %s reads back as %v (%v)", m, b, back, err)
		}
	}
	// Another message takes protojson's path.
	if b, err := (enumJSON{"json"}).Marshal(&pb.ListTasksResponse{NextStartAfter: "t"}); err != nil || !bytes.Contains(b, []byte(`"t"`)) {
		t.Errorf("ListTasksResponse: %s, %v", b, err)
	}
}

// decoded reads JSON into plain values, numbers as written.
func decoded(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return v
}

// fill sets each field of m at random, or leaves it unset.
func fill(rnd *rand.Rand, m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if rnd.IntN(4) == 0 {
			continue
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for range rnd.IntN(4) {
				mp.Set(protoreflect.ValueOfString(randString(rnd)).MapKey(), protoreflect.ValueOfString(randString(rnd)))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range rnd.IntN(4) {
				if fd.Kind() == protoreflect.MessageKind {
					e := l.NewElement()
					fillMessage(rnd, e.Message(), depth+1)
					l.Append(e)
				} else {
					l.Append(scalar(rnd, fd))
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			fillMessage(rnd, m.Mutable(fd).Message(), depth+1)
		default:
			m.Set(fd, scalar(rnd, fd))
		}
	}
}

// fillMessage fills a message field: timestamps and Anys with the values
// that matter to their JSON, others field by field.
func fillMessage(rnd *rand.Rand, m protoreflect.Message, depth int) {
	switch v := m.Interface().(type) {
	case *timestamppb.Timestamp:
		secs := []int64{0, 1, -1, -62135596800, 253402300799, 1764574673}
		nanos := []int32{0, 1, 5e8, 123e6, 123456e3, 123456789, 999999999}
		v.Seconds, v.Nanos = secs[rnd.IntN(len(secs))], nanos[rnd.IntN(len(nanos))]
		if rare(rnd) { // out of range
			v.Seconds, v.Nanos = []int64{-62135596801, 253402300800}[rnd.IntN(2)], []int32{0, -1, 1e9}[rnd.IntN(3)]
		}
	case *anypb.Any:
		if rare(rnd) {
			v.TypeUrl, v.Value = bytesValueURL, []byte{0x0a, 0x05, 'x'} // truncated
			return
		}
		var inner proto.Message
		switch rnd.IntN(10) {
		case 0, 1, 2, 3, 4, 5, 6:
			b := make([]byte, rnd.IntN(40))
			for i := range b {
				b[i] = byte(rnd.IntN(256))
			}
			inner = wrapperspb.Bytes(b)
		case 7, 8:
			inner = wrapperspb.String(randString(rnd))
		default:
			inner = wrapperspb.Int32(rnd.Int32()) // another type
		}
		a, err := anypb.New(inner)
		if err != nil { // a StringValue not UTF-8, which Marshal refuses
			v.TypeUrl, v.Value = stringValueURL, []byte{0x0a, 1, 0xff}
			return
		}
		v.TypeUrl, v.Value = a.TypeUrl, a.Value
	default:
		if depth < 4 {
			fill(rnd, m, depth)
		}
	}
}

func scalar(rnd *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	ints := []int64{0, 1, -1, 42, math.MaxInt32, math.MinInt32}
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(randString(rnd))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(rnd.IntN(2) == 0)
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(int32(ints[rnd.IntN(len(ints))]))
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(append(ints, math.MaxInt64, math.MinInt64)[rnd.IntN(len(ints)+2)])
	case protoreflect.EnumKind:
		if rare(rnd) {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber([]int{-1, 7}[rnd.IntN(2)])) // no name
		}
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(rnd.IntN(7)))
	}
	panic("fill: no value for a " + fd.Kind().String())
}

func randString(rnd *rand.Rand) string {
	if rare(rnd) {
		return "bad \xff utf8"
	}
	strs := []string{"", "completed", `a "quoted" \ back`, "ctl \x00\x01\x1f\b\f\n\r\t\x7f", "é 日本 \u2028\u2029 \ufffd", "<html>&amp;"}
	return strs[rnd.IntN(len(strs))]
}

// rare is true once in a hundred: for the values protojson refuses or
// writes otherwise, so that most answers hold none of them.
func rare(rnd *rand.Rand) bool { return rnd.IntN(100) == 0 }

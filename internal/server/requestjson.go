package server

import (
	"encoding/base64"
	"slices"
	"strconv"
	"unicode/utf8"

	pb "github.com/spear-go/spear/api/spearlet"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// readInvocation reads the JSON invocation a curl user sends — a task, a
// mode, the input as a StringValue or BytesValue, perhaps wait, priority
// and keys — into m, without protojson's generic decoder (11 µs; this,
// about 3.6 µs: BenchmarkJSONCodec). It takes only what it reads exactly
// as protojson would: strings without escapes, enum values by their full
// names, plain integers, standard base64, each field once. Anything else
// (another field, a null, a short enum name, an escape, a syntax error)
// makes it give up, and the codec reads the request as before.
// TestReadInvocation holds the two to the same message.
func readInvocation(b []byte, m *pb.InvokeFunctionRequest) bool {
	r := jsonReader{b: b}
	ok := r.object(func(key string) bool { return r.invocationField(key, m) })
	r.space()
	return ok && r.i == len(r.b)
}

func (r *jsonReader) invocationField(key string, m *pb.InvokeFunctionRequest) bool {
	var ok bool
	switch key {
	case "taskId":
		m.TaskId, ok = r.str()
	case "taskName":
		m.TaskName, ok = r.str()
	case "functionName":
		m.FunctionName, ok = r.str()
	case "idempotencyKey":
		m.IdempotencyKey, ok = r.str()
	case "callbackUrl":
		m.CallbackUrl, ok = r.str()
	case "inputRef":
		m.InputRef, ok = r.str()
	case "executionMode":
		var v int32
		v, ok = r.enum(pb.ExecutionMode_value)
		m.ExecutionMode = pb.ExecutionMode(v)
	case "invocationType":
		var v int32
		v, ok = r.enum(pb.InvocationType_value)
		m.InvocationType = pb.InvocationType(v)
	case "wait":
		m.Wait, ok = r.boolean()
	case "priority":
		m.Priority, ok = r.int32()
	case "parameters":
		ok = r.array(func() bool {
			p := &pb.FunctionParameter{}
			m.Parameters = append(m.Parameters, p)
			return r.parameter(p)
		})
	}
	return ok
}

func (r *jsonReader) parameter(p *pb.FunctionParameter) bool {
	return r.object(func(key string) bool {
		var ok bool
		switch key {
		case "name":
			p.Name, ok = r.str()
		case "type":
			p.Type, ok = r.str()
		case "description":
			p.Description, ok = r.str()
		case "required":
			p.Required, ok = r.boolean()
		case "value":
			p.Value, ok = r.wrapped()
		}
		return ok
	})
}

// wrapped reads an Any holding a StringValue or BytesValue.
func (r *jsonReader) wrapped() (*anypb.Any, bool) {
	var url, val string
	var hasURL, hasVal bool
	ok := r.object(func(key string) bool {
		switch {
		case key == "@type" && !hasURL:
			url, hasURL = r.str()
			return hasURL
		case key == "value" && !hasVal:
			val, hasVal = r.str()
			return hasVal
		}
		return false
	})
	if !ok || !hasURL || !hasVal {
		return nil, false
	}
	var inner proto.Message
	switch url {
	case stringValueURL:
		inner = wrapperspb.String(val)
	case bytesValueURL:
		b, err := base64.StdEncoding.Strict().DecodeString(val)
		if err != nil {
			return nil, false
		}
		inner = wrapperspb.Bytes(b)
	default:
		return nil, false
	}
	a, err := anypb.New(inner)
	return a, err == nil
}

// jsonReader reads the JSON values readInvocation takes, from b at i.
type jsonReader struct {
	b []byte
	i int
}

func (r *jsonReader) space() {
	for r.i < len(r.b) && (r.b[r.i] == ' ' || r.b[r.i] == '\t' || r.b[r.i] == '\n' || r.b[r.i] == '\r') {
		r.i++
	}
}

// consume skips space and then c, reporting whether c was there.
func (r *jsonReader) consume(c byte) bool {
	r.space()
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

// object reads an object, calling field for the value of each key; a key
// given twice (which protojson refuses) ends it.
func (r *jsonReader) object(field func(key string) bool) bool {
	if !r.consume('{') {
		return false
	}
	if r.consume('}') {
		return true
	}
	var seen []string
	for {
		key, ok := r.str()
		if !ok || slices.Contains(seen, key) || !r.consume(':') || !field(key) {
			return false
		}
		seen = append(seen, key)
		if r.consume('}') {
			return true
		}
		if !r.consume(',') {
			return false
		}
	}
}

// array reads an array, calling elem for each element.
func (r *jsonReader) array(elem func() bool) bool {
	if !r.consume('[') {
		return false
	}
	if r.consume(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if r.consume(']') {
			return true
		}
		if !r.consume(',') {
			return false
		}
	}
}

// str reads a string without escapes or control characters, in UTF-8.
func (r *jsonReader) str() (string, bool) {
	if !r.consume('"') {
		return "", false
	}
	start := r.i
	for ; r.i < len(r.b); r.i++ {
		switch c := r.b[r.i]; {
		case c == '"':
			s := string(r.b[start:r.i])
			r.i++
			return s, utf8.ValidString(s)
		case c == '\\' || c < ' ':
			return "", false
		}
	}
	return "", false
}

func (r *jsonReader) boolean() (bool, bool) {
	r.space()
	for _, lit := range []string{"true", "false"} {
		if len(r.b)-r.i >= len(lit) && string(r.b[r.i:r.i+len(lit)]) == lit {
			r.i += len(lit)
			return lit == "true", true
		}
	}
	return false, false
}

// int32 reads a plain integer: digits without a leading zero, perhaps
// after a minus.
func (r *jsonReader) int32() (int32, bool) {
	r.space()
	start := r.i
	if r.i < len(r.b) && r.b[r.i] == '-' {
		r.i++
	}
	digits := r.i
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		r.i++
	}
	if r.i-digits > 1 && r.b[digits] == '0' {
		return 0, false
	}
	if r.i < len(r.b) && (r.b[r.i] == '.' || r.b[r.i] == 'e' || r.b[r.i] == 'E') {
		return 0, false
	}
	v, err := strconv.ParseInt(string(r.b[start:r.i]), 10, 32)
	return int32(v), err == nil
}

// enum reads an enum value by its full name.
func (r *jsonReader) enum(values map[string]int32) (int32, bool) {
	s, ok := r.str()
	v, known := values[s]
	return v, ok && known
}

package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	pb "github.com/spear-go/spear/api/spearlet"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// unknownEnum is the value a JSON enum name that names no value of its
// enum is read as: the method then refuses it as an unknown value (naming
// the valid ones), where Connect's own codec reads it as 0 — unset.
const unknownEnum = -1

// enumJSON is Connect's JSON codec, except that an enum value may also be
// given by its short name in any case: "SYNC", "sync" and
// "EXECUTION_MODE_SYNC" are the same execution_mode. Requests that
// protojson reads as they are take the usual path at the usual cost.
type enumJSON struct{ name string }

// jsonCodecs are the codecs of Connect's two JSON content types.
func jsonCodecs() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(enumJSON{"json"}),
		connect.WithCodec(enumJSON{"json; charset=utf-8"}),
	}
}

func (c enumJSON) Name() string { return c.name }

func (enumJSON) IsBinary() bool { return false }

func (c enumJSON) Marshal(m any) ([]byte, error) { return c.MarshalAppend(nil, m) }

// MarshalAppend writes the answers of appendAnswer itself, the rest with
// protojson.
func (enumJSON) MarshalAppend(b []byte, m any) ([]byte, error) {
	if out, ok := appendAnswer(b, m); ok {
		return out, nil
	}
	msg, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return protojson.MarshalOptions{}.MarshalAppend(b, msg)
}

func (enumJSON) Unmarshal(b []byte, m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", m)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	if req, ok := m.(*pb.InvokeFunctionRequest); ok && readInvocation(b, req) {
		return nil
	}
	if protojson.Unmarshal(b, msg) == nil {
		return nil
	}
	// Unknown fields (a newer client), enum names of another form, or an
	// error of its own (syntax, invalid UTF-8), which Connect's lenient
	// reading tells.
	lenient := protojson.UnmarshalOptions{DiscardUnknown: true}
	proto.Reset(msg)
	if err := lenient.Unmarshal(b, msg); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", m, err)
	}
	fixed, ok := normalizeEnums(b, msg.ProtoReflect().Descriptor())
	if !ok {
		return nil
	}
	proto.Reset(msg)
	if err := lenient.Unmarshal(fixed, msg); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", m, err)
	}
	return nil
}

// normalizeEnums rewrites the enum values of a JSON message of type md to
// their full names (or unknownEnum); false when b is not a JSON object.
func normalizeEnums(b []byte, md protoreflect.MessageDescriptor) ([]byte, bool) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var obj map[string]any
	if d.Decode(&obj) != nil {
		return nil, false
	}
	fixObject(obj, md)
	out, err := json.Marshal(obj)
	return out, err == nil
}

// fixObject rewrites the enum values of obj, a message of type md, and of
// the messages it holds, in place.
func fixObject(obj map[string]any, md protoreflect.MessageDescriptor) {
	fields := md.Fields()
	for k, v := range obj {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(k))
		}
		if fd == nil {
			continue
		}
		switch {
		case fd.IsMap():
			if m, ok := v.(map[string]any); ok {
				for mk, mv := range m {
					m[mk] = fixValue(mv, fd.MapValue())
				}
			}
		case fd.IsList():
			if l, ok := v.([]any); ok {
				for i, e := range l {
					l[i] = fixValue(e, fd)
				}
			}
		default:
			obj[k] = fixValue(v, fd)
		}
	}
}

// fixValue is v, a value of field fd, with its enum names made full.
func fixValue(v any, fd protoreflect.FieldDescriptor) any {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		s, ok := v.(string)
		if !ok {
			return v
		}
		if name, ok := enumName(fd.Enum(), s); ok {
			return name
		}
		if _, err := strconv.ParseInt(s, 10, 32); err == nil {
			return json.Number(s)
		}
		return json.Number(strconv.Itoa(unknownEnum))
	case protoreflect.MessageKind, protoreflect.GroupKind:
		md := fd.Message()
		if m, ok := v.(map[string]any); ok && !strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
			fixObject(m, md)
		}
	}
	return v
}

// enumName is the full name of the value of ed that s names: its full
// name or, in any case, the name without the enum's common prefix.
func enumName(ed protoreflect.EnumDescriptor, s string) (string, bool) {
	values := ed.Values()
	up := strings.ToUpper(strings.TrimSpace(s))
	for _, n := range []string{s, up, enumPrefix(ed) + up} {
		if v := values.ByName(protoreflect.Name(n)); v != nil {
			return n, true
		}
	}
	return "", false
}

// enumPrefix is the prefix every value name of ed shares, up to its last
// underscore: "EXECUTION_MODE_" for ExecutionMode.
func enumPrefix(ed protoreflect.EnumDescriptor) string {
	values := ed.Values()
	if values.Len() == 0 {
		return ""
	}
	p := string(values.Get(0).Name())
	for i := 1; i < values.Len(); i++ {
		n := string(values.Get(i).Name())
		for !strings.HasPrefix(n, p) {
			p = p[:len(p)-1]
		}
	}
	return p[:strings.LastIndexByte(p, '_')+1]
}

// enumNames lists the short names of ed's values but the zero one, for
// messages: "SYNC, ASYNC, STREAM".
func enumNames(ed protoreflect.EnumDescriptor) string {
	values, prefix := ed.Values(), enumPrefix(ed)
	names := make([]string, 0, values.Len())
	for i := range values.Len() {
		if v := values.Get(i); v.Number() != 0 {
			names = append(names, strings.TrimPrefix(string(v.Name()), prefix))
		}
	}
	return strings.Join(names, ", ")
}

// enumProblem says what is wrong with the value v of enum field: unset,
// a JSON name that names no value, or an unknown number.
func enumProblem[E interface {
	~int32
	Descriptor() protoreflect.EnumDescriptor
}](field string, v E) string {
	switch {
	case v == 0:
		return field + " is not set"
	case v == unknownEnum:
		return field + " names no value of " + string(v.Descriptor().Name())
	}
	return fmt.Sprintf("%s %d is not a value of %s", field, v, v.Descriptor().Name())
}

package server

import (
	"context"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/spear-go/spear/internal/errdefs"
)

// invalidUTF8 stands in for a string field that was not valid UTF-8, so the
// request reaches validation (INVALID_ARGUMENT, INVALID_UTF8) instead of
// failing in grpc-go's decoder, which answers INTERNAL before any handler
// or interceptor runs.
const invalidUTF8 = "\x00spear:invalid-utf8\x00"

// utf8Codec is grpc-go's protobuf codec, except for requests with invalid
// UTF-8 in string fields: those decode with the fields set to invalidUTF8,
// and are remembered in marks for the interceptors to refuse. Valid
// requests take the usual path at the usual cost.
type utf8Codec struct {
	encoding.CodecV2
	marks *utf8Marks
}

func newUTF8Codec(marks *utf8Marks) utf8Codec {
	return utf8Codec{CodecV2: encoding.GetCodecV2("proto"), marks: marks}
}

func (c utf8Codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	m, ok := v.(proto.Message)
	if err == nil || !ok || !strings.Contains(err.Error(), "UTF-8") {
		return err
	}
	clean, changed := markInvalidUTF8(data.Materialize(), m.ProtoReflect().Descriptor())
	if !changed {
		return err
	}
	proto.Reset(m)
	if proto.Unmarshal(clean, m) != nil {
		return err
	}
	c.marks.m.Store(m, struct{}{})
	return nil
}

// markInvalidUTF8 re-encodes a message's wire bytes with every string field
// that is not valid UTF-8 replaced by invalidUTF8, recursively.
func markInvalidUTF8(b []byte, md protoreflect.MessageDescriptor) ([]byte, bool) {
	var out []byte
	changed := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, false
		}
		field := b[:n+m]
		b = b[n+m:]
		fd := md.Fields().ByNumber(num)
		if typ == protowire.BytesType && fd != nil {
			val, _ := protowire.ConsumeBytes(field[n:])
			switch {
			case fd.Kind() == protoreflect.StringKind && !utf8.Valid(val):
				out = protowire.AppendString(protowire.AppendTag(out, num, typ), invalidUTF8)
				changed = true
				continue
			case fd.Kind() == protoreflect.MessageKind:
				if inner, ch := markInvalidUTF8(val, fd.Message()); ch {
					out = protowire.AppendBytes(protowire.AppendTag(out, num, typ), inner)
					changed = true
					continue
				}
			}
		}
		out = append(out, field...)
	}
	return out, changed
}

// invalidUTF8Field names the first string field of m that held invalid
// UTF-8 on the wire, or "".
func invalidUTF8Field(m protoreflect.Message) string {
	var found string
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		check := func(v protoreflect.Value, kind protoreflect.Kind) bool {
			switch kind {
			case protoreflect.StringKind:
				if v.String() == invalidUTF8 {
					found = string(fd.Name())
				}
			case protoreflect.MessageKind:
				if f := invalidUTF8Field(v.Message()); f != "" {
					found = string(fd.Name()) + "." + f
				}
			}
			return found == ""
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if !check(l.Get(i), fd.Kind()) {
					return false
				}
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapKey().Kind() == protoreflect.StringKind && k.String() == invalidUTF8 {
					found = string(fd.Name())
					return false
				}
				return check(mv, fd.MapValue().Kind())
			})
		default:
			check(v, fd.Kind())
		}
		return found == ""
	})
	return found
}

func errInvalidUTF8(field string) error {
	return errdefs.InvalidUTF8.New("field %s is not valid UTF-8", field)
}

// utf8Marks holds the requests utf8Codec decoded with marked fields, until
// an interceptor refuses them: only those are searched for the field.
type utf8Marks struct{ m sync.Map }

// check returns the INVALID_UTF8 error of a marked request.
func (k *utf8Marks) check(req any) error {
	if _, marked := k.m.LoadAndDelete(req); !marked {
		return nil
	}
	if m, ok := req.(proto.Message); ok {
		if f := invalidUTF8Field(m.ProtoReflect()); f != "" {
			return errInvalidUTF8(f)
		}
	}
	return nil
}

// unary refuses unary requests that had invalid UTF-8.
func (k *utf8Marks) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := k.check(req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// stream does the same for the request of a server stream.
func (k *utf8Marks) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, utf8Stream{ss, k})
}

type utf8Stream struct {
	grpc.ServerStream
	marks *utf8Marks
}

func (s utf8Stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.marks.check(m)
}

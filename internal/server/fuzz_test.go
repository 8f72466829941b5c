package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/callback"
	"github.com/spear-go/spear/internal/errdefs"
)

// The fuzz targets below run against an in-process node (newEnv) and check
// that no input panics it and that every refusal carries a mapped gRPC code
// and a stable error_code. Run one with
//
//	go test -run XXX -fuzz FuzzInvokeRequest -fuzztime 2m ./internal/server/
//
// Inputs that once failed are kept under testdata/fuzz/ and run as seeds by
// plain go test.

// fuzzCallTimeout bounds one fuzzed call: a hang guard, not a timing
// assertion.
const fuzzCallTimeout = 20 * time.Second

// seedRequests are real invocations, the starting points of
// FuzzInvokeRequest and FuzzConnectJSON.
func seedRequests(samples string) []*pb.InvokeFunctionRequest {
	sync, async := pb.ExecutionMode_EXECUTION_MODE_SYNC, pb.ExecutionMode_EXECUTION_MODE_ASYNC
	anyOf := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			panic(err)
		}
		return a
	}
	return []*pb.InvokeFunctionRequest{
		invokeReq("echo", "hello", sync),
		invokeReq("upper", "shout", async),
		invokeReq("wasm-echo", "wasm", sync),
		invokeReq("fail", "x", sync),
		invokeReq("echo", "", pb.ExecutionMode_EXECUTION_MODE_STREAM),
		{TaskId: "echo", ExecutionMode: 7},
		{InvocationType: 9, TaskId: "echo", ExecutionMode: sync},
		{InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK, TaskId: "no-such-task", ExecutionMode: sync},
		{InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK, TaskId: "../etc", ExecutionMode: sync},
		{
			InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK, TaskId: "env", ExecutionMode: sync,
			FunctionName: "main",
			Context: &pb.ExecutionContext{
				TimeoutMs: 5000, MaxRetries: 1, Environment: map[string]string{"NAME": "fuzz"},
				ExecutionId: "0123456789abcdef0123", SessionId: "s", UserId: "u",
			},
			InvocationMetadata: map[string]string{"k": "v"},
		},
		{
			InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK, TaskId: "echo", ExecutionMode: async,
			Wait: true, Priority: 5, IdempotencyKey: "key-1",
			Parameters: bytesParam("idem"),
		},
		{
			InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK, TaskId: "echo", ExecutionMode: sync,
			Context: &pb.ExecutionContext{TimeoutMs: -1},
		},
		{
			InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK, TaskId: "echo", ExecutionMode: sync,
			Parameters: []*pb.FunctionParameter{
				{Name: "s", Value: anyOf(wrapperspb.String("x"))},
				{Name: "n", Value: anyOf(wrapperspb.Int64(7))},
				{Name: "r", Required: true},
			},
		},
		{
			InvocationType: pb.InvocationType_INVOCATION_TYPE_NEW_TASK, TaskName: "fuzz new task", ExecutionMode: sync,
			ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: filepath.Join(samples, "process/echo.sh")},
			Parameters:   bytesParam("new"),
			Limits:       &pb.TaskLimits{MaxConcurrency: 2, MaxQueued: 4, DefaultTimeoutMs: 1000, MaxTimeoutMs: 5000},
		},
		{
			InvocationType: pb.InvocationType_INVOCATION_TYPE_NEW_TASK, TaskId: "fuzz-wasm", ExecutionMode: sync,
			ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "wasm", Location: "file://" + filepath.Join(samples, "wasm/echo.wasm"),
				Checksum: "sha256:0000000000000000000000000000000000000000000000000000000000000000"},
		},
		{
			InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK, TaskId: "fuzz-new", CreateIfNotExists: true,
			ExecutionMode: async, ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "bogus", Location: "/nonexistent"},
			CallbackUrl: "ftp://example.invalid/",
		},
	}
}

// sanitizeRequest keeps a fuzzed request from running anything but the
// sample functions: an artifact location other than a sample is moved
// into an empty directory, and a callback URL that would be delivered is
// dropped (only invalid ones, which are refused, are kept).
func sanitizeRequest(req *pb.InvokeFunctionRequest, samples, empty string) {
	if s := req.GetArtifactSpec(); s != nil && s.Location != "" && !strings.HasPrefix(s.Location, "artifact:") {
		loc := strings.TrimPrefix(s.Location, "file://")
		if !strings.HasPrefix(loc, samples+"/") || strings.Contains(loc, "..") {
			s.Location = filepath.Join(empty, url.PathEscape(s.Location))
		}
	}
	if req.CallbackUrl != "" && callback.ValidateURL(req.CallbackUrl) == nil {
		req.CallbackUrl = ""
	}
}

// checkRefusal fails the test unless err maps to a known gRPC code (not
// Internal or Unknown) and carries a non-empty error_code and message.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	code := grpcCode(err)
	if code == codes.Internal || code == codes.Unknown {
		t.Fatalf("error %q (%T) maps to %v", err, err, code)
	}
	if errorCode(err) == "" {
		t.Fatalf("error %q has no error_code", err)
	}
	if err.Error() == "" {
		t.Fatalf("error %T with code %s has no message", err, errorCode(err))
	}
}

func FuzzInvokeRequest(f *testing.F) {
	e := newEnv(f, envOptions{maxInput: 1 << 20})
	samples, empty := samplesDir(f), f.TempDir()
	for _, r := range seedRequests(samples) {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req pb.InvokeFunctionRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			return // the transport refuses it before the service sees it
		}
		sanitizeRequest(&req, samples, empty)
		ctx, cancel := context.WithTimeout(context.Background(), fuzzCallTimeout)
		defer cancel()
		resp, err := e.svc.InvokeFunction(ctx, &req)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
				t.Fatalf("InvokeFunction did not answer within %v", fuzzCallTimeout)
			}
			checkRefusal(t, err)
			return
		}
		if _, err := proto.Marshal(resp); err != nil {
			t.Fatalf("response cannot be sent: %v\n%v", err, resp)
		}
		if !resp.Success && resp.GetResult().GetErrorCode() == "" && resp.GetResult().GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_PENDING {
			t.Fatalf("unsuccessful response without error_code: %v", resp)
		}
	})
}

func FuzzParameters(f *testing.F) {
	for _, s := range []struct {
		name, typeURL string
		value         []byte
		required      bool
		n             uint8
	}{
		{"input", "type.googleapis.com/google.protobuf.BytesValue", []byte("\x0a\x05hello"), false, 1},
		{"s", "type.googleapis.com/google.protobuf.StringValue", []byte("\x0a\x02hi"), false, 1},
		{"n", "type.googleapis.com/google.protobuf.Int64Value", []byte("\x08\x07"), false, 3},
		{"d", "type.googleapis.com/google.protobuf.DoubleValue", []byte("\x09\x00\x00\x00\x00\x00\x00\xf8\x3f"), false, 2},
		{"r", "", nil, true, 1},
		{"", "type.googleapis.com/no.such.Type", []byte{1, 2, 3}, false, 2},
		{"x", "type.googleapis.com/google.protobuf.Struct", []byte("\x0a\x08\x0a\x01a\x12\x03\x08\x00\x00"), false, 1},
		{"bad utf8 \xff", "type.googleapis.com/google.protobuf.StringValue", []byte("\x0a\x02\xff\xfe"), false, 2},
	} {
		f.Add(s.name, s.typeURL, s.value, s.required, s.n)
	}
	f.Fuzz(func(t *testing.T, name, typeURL string, value []byte, required bool, n uint8) {
		// n parameters derived from one: the same name (duplicates), a
		// numbered name, or no value, by the position's residue.
		params := make([]*pb.FunctionParameter, 0, n%8)
		for i := range int(n % 8) {
			p := &pb.FunctionParameter{Name: name, Required: required}
			switch i % 3 {
			case 1:
				p.Name = name + string(rune('a'+i))
			case 2:
				// No value: optional ones are skipped, required ones refused.
			default:
				if typeURL != "" || len(value) > 0 {
					p.Value = &anypb.Any{TypeUrl: typeURL, Value: value}
				}
			}
			params = append(params, p)
		}
		in, err := input(params)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || errdefs.CodeOf(err) == "INVALID_ARGUMENT" {
				t.Fatalf("input: %v (code %s); want a coded invalid-argument error", err, errdefs.CodeOf(err))
			}
			checkRefusal(t, err)
			return
		}
		var withValue []*pb.FunctionParameter
		for _, p := range params {
			if p.Value != nil {
				withValue = append(withValue, p)
			}
		}
		switch {
		case len(withValue) == 0:
			if len(in) != 0 {
				t.Fatalf("no values gave input %q", in)
			}
		case len(params) == 1:
			switch v := unpack(params[0].Value).(type) {
			case *wrapperspb.BytesValue:
				if !bytes.Equal(in, v.Value) {
					t.Fatalf("input %q, want the BytesValue %q", in, v.Value)
				}
			case *wrapperspb.StringValue:
				if string(in) != v.Value {
					t.Fatalf("input %q, want the StringValue %q", in, v.Value)
				}
			default:
				checkJSONObject(t, in, len(withValue))
			}
		default:
			checkJSONObject(t, in, len(withValue))
		}
	})
}

// checkJSONObject fails unless in is a JSON object of n members.
func checkJSONObject(t *testing.T, in []byte, n int) {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(in, &obj); err != nil {
		t.Fatalf("input %q is not a JSON object: %v", in, err)
	}
	if len(obj) != n {
		t.Fatalf("input %q has %d members, want %d", in, len(obj), n)
	}
}

// serveHTTP runs one request through the node's HTTP/1.1 handler.
func serveHTTP(e *env, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.srv.http.Handler.ServeHTTP(rec, req)
	return rec
}

// checkHTTPError fails unless an error answer is JSON with a code, an
// error_code and a message.
func checkHTTPError(t *testing.T, rec *httptest.ResponseRecorder, connectJSON bool) {
	t.Helper()
	if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("HTTP %d: %s", rec.Code, rec.Body.Bytes())
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("HTTP %d: error body %q is not JSON: %v", rec.Code, rec.Body.Bytes(), err)
	}
	if body["code"] == "" || body["message"] == "" {
		t.Fatalf("HTTP %d: error body %q lacks code or message", rec.Code, rec.Body.Bytes())
	}
	if reason := reasonOf(body); !connectJSON && (reason == "" || rec.Header().Get(ErrorCodeTrailer) != reason) {
		t.Fatalf("HTTP %d: error body %q or header %q lacks the error code", rec.Code, rec.Body.Bytes(), rec.Header().Get(ErrorCodeTrailer))
	}
}

func FuzzStatusRoute(f *testing.F) {
	e := newEnv(f, envOptions{})
	ctx := context.Background()
	done, err := e.svc.InvokeFunction(ctx, invokeReq("echo", "done", pb.ExecutionMode_EXECUTION_MODE_SYNC))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []struct {
		cancel bool
		id     string
		query  string
	}{
		{false, done.ExecutionId, ""},
		{false, done.ExecutionId, "logs=true"},
		{false, done.ExecutionId, "wait=1s&logs=1"},
		{false, "000000000000ffffffffff", "wait=10ms"},
		{false, "no such id", "wait=-1s"},
		{false, "%ff%00", "wait=forever"},
		{false, "..", "logs=maybe"},
		{true, done.ExecutionId, "force=true&reason=why"},
		{true, "000000000000ffffffffff", "reason=%ff"},
		{true, "", "force=x"},
	} {
		f.Add(s.cancel, s.id, s.query)
	}
	f.Fuzz(func(t *testing.T, cancel bool, id, query string) {
		// Fuzz the id as a path segment (escaped, as a client would send
		// it) and the query as given: a bad wait must not hang the test,
		// so long waits are cut to a millisecond of the requested span.
		q, err := url.ParseQuery(query)
		if err != nil {
			return // not a query a client can send
		}
		if w := q.Get("wait"); w != "" {
			if d, err := time.ParseDuration(w); err == nil && d > 50*time.Millisecond {
				q.Set("wait", "50ms")
			}
		}
		method, path := http.MethodGet, "/api/v1/executions/"+url.PathEscape(id)+"/status"
		if cancel {
			method, path = http.MethodPost, "/api/v1/executions/"+url.PathEscape(id)+"/cancel"
		}
		rctx, stop := context.WithTimeout(context.Background(), fuzzCallTimeout)
		defer stop()
		req := httptest.NewRequestWithContext(rctx, method, path+"?"+q.Encode(), nil)
		rec := serveHTTP(e, req)
		if rctx.Err() != nil {
			t.Fatalf("%s %s did not answer within %v", method, req.URL, fuzzCallTimeout)
		}
		switch {
		case rec.Code == http.StatusOK:
			// An answer of the route.
			var m proto.Message = &pb.GetExecutionStatusResponse{}
			if cancel {
				m = &pb.CancelExecutionResponse{}
			}
			if err := protojson.Unmarshal(rec.Body.Bytes(), m); err != nil {
				t.Fatalf("HTTP %d: body %q is not a %T: %v", rec.Code, rec.Body.Bytes(), m, err)
			}
		case rec.Code == http.StatusMovedPermanently || rec.Code == http.StatusTemporaryRedirect || rec.Code == http.StatusPermanentRedirect:
			// The mux redirected to the cleaned path (an id such as "",
			// "." or ".."): no route of ours answered.
		default:
			checkHTTPError(t, rec, false)
		}
	})
}

func FuzzConnectJSON(f *testing.F) {
	e := newEnv(f, envOptions{maxInput: 1 << 20})
	samples, empty := samplesDir(f), f.TempDir()
	for _, r := range seedRequests(samples) {
		b, err := protojson.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `{"taskId":1}`, `{"executionMode":"EXECUTION_MODE_BOGUS"}`,
		`{"taskId":"echo","executionMode":"EXECUTION_MODE_SYNC","parameters":[{"value":{"@type":"type.googleapis.com/google.protobuf.BytesValue","value":"aGk="}}]}`,
		`{"taskId":"echo","executionMode":1,"context":{"timeoutMs":"-5"}}`,
		`{"taskId":"echo","executionMode":1,"context":{"timeoutMs":"99999999999999999999"}}`,
		`{"taskName":"\udc00","invocationType":1}`,
		`{"taskId":"echo","executionMode":1,"functionName":"\ud800x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		// Decode and re-encode with the server's own rules so that the
		// sanitizer sees what the service would; bodies that do not decode
		// are sent as they are (the decoder's refusal is under test).
		var req pb.InvokeFunctionRequest
		if (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &req) == nil {
			sanitizeRequest(&req, samples, empty)
			if b, err := protojson.Marshal(&req); err == nil {
				body = b
			}
		} else if bytes.Contains(body, []byte("callbackUrl")) || bytes.Contains(body, []byte("callback_url")) || bytes.Contains(body, []byte("location")) {
			return // cannot be sanitized reliably; nothing useful to learn from it
		}
		rctx, stop := context.WithTimeout(context.Background(), fuzzCallTimeout)
		defer stop()
		req2 := httptest.NewRequestWithContext(rctx, http.MethodPost, "/spearlet.FunctionService/InvokeFunction", bytes.NewReader(body))
		req2.Header.Set("Content-Type", "application/json")
		rec := serveHTTP(e, req2)
		if rctx.Err() != nil {
			t.Fatalf("POST %q did not answer within %v", body, fuzzCallTimeout)
		}
		if rec.Code == http.StatusOK {
			var resp pb.InvokeFunctionResponse
			if err := protojson.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("body %q is not an InvokeFunctionResponse: %v", rec.Body.Bytes(), err)
			}
			if !utf8.Valid(rec.Body.Bytes()) {
				t.Fatalf("response %q is not UTF-8", rec.Body.Bytes())
			}
			return
		}
		checkHTTPError(t, rec, true)
		if rec.Header().Get(ErrorCodeTrailer) == "" && rec.Code != http.StatusBadRequest {
			// Connect's own decoding refusals (400) carry no domain code;
			// everything the service refuses does.
			t.Fatalf("HTTP %d without %s: %s", rec.Code, ErrorCodeTrailer, rec.Body.Bytes())
		}
	})
}

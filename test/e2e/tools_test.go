package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/spear-go/spear/api/spearlet"
)

// toolTimeout bounds one run of an external tool.
const toolTimeout = 60 * time.Second

// TestTools drives a node the way people and scripts do: grpcurl with only
// the hand-written .proto, curl with Connect JSON and the status endpoint,
// and the spear CLI.
func TestTools(t *testing.T) {
	n := startNode(t, "", nodeOpts{})
	t.Run("grpcurl", func(t *testing.T) { testGrpcurl(t, n) })
	t.Run("curl", func(t *testing.T) { testCurl(t, n) })
	t.Run("cli", func(t *testing.T) { testCLI(t, n) })
}

// findTool looks name up on PATH and in $(go env GOPATH)/bin. A missing
// tool skips the test, except under CI=true, where it fails it.
func findTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", name)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return p
			}
		}
	}
	msg := fmt.Sprintf("%s not found on PATH or in $(go env GOPATH)/bin", name)
	if name == "grpcurl" {
		msg += "; install it with: go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3"
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// runTool runs a command with stdin and returns its stdout, failing the test
// on a non-zero exit.
func runTool(t *testing.T, stdin string, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx(t, toolTimeout), name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", filepath.Base(name), strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

// decodeJSONStream splits a stream of JSON values (as grpcurl prints them)
// into its values.
func decodeJSONStream(t *testing.T, b []byte) []json.RawMessage {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	var out []json.RawMessage
	for {
		var m json.RawMessage
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("output is not a stream of JSON values: %v\n%s", err, b)
		}
		out = append(out, m)
	}
}

func unmarshalJSON(t *testing.T, b []byte, m proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal(b, m); err != nil {
		t.Fatalf("parsing %T: %v\n%s", m, err, b)
	}
}

// bytesJSON is the JSON form of an Any(BytesValue) holding s.
func bytesJSON(s string) string {
	return fmt.Sprintf(`{"@type":"type.googleapis.com/google.protobuf.BytesValue","value":%q}`,
		base64.StdEncoding.EncodeToString([]byte(s)))
}

func testGrpcurl(t *testing.T, n *node) {
	bin := findTool(t, "grpcurl")
	call := func(t *testing.T, method, body string) []byte {
		t.Helper()
		return runTool(t, "", bin,
			"-plaintext",
			"-import-path", filepath.Join(moduleRoot(), "api", "spearlet"),
			"-proto", "spearlet.proto",
			"-max-msg-sz", "67108864",
			"-max-time", "60",
			"-d", body,
			n.addr, "spearlet.FunctionService/"+method)
	}
	path, _ := writeScript(t, t.TempDir(), "gc.sh", "printf 'gc:'\ncat\n")

	var reg pb.RegisterTaskResponse
	unmarshalJSON(t, call(t, "RegisterTask", fmt.Sprintf(
		`{"taskId":"e2e-grpcurl","artifactSpec":{"artifactType":"process","location":%q}}`, path)), &reg)
	if reg.GetTask().GetTaskId() != "e2e-grpcurl" {
		t.Fatalf("RegisterTask: %v", &reg)
	}

	t.Run("sync", func(t *testing.T) {
		var resp pb.InvokeFunctionResponse
		unmarshalJSON(t, call(t, "InvokeFunction", fmt.Sprintf(
			`{"invocationType":"INVOCATION_TYPE_EXISTING_TASK","taskId":"e2e-grpcurl","executionMode":"EXECUTION_MODE_SYNC","parameters":[{"name":"input","value":%s}]}`,
			bytesJSON("sync"))), &resp)
		if got := output(t, resp.GetResult().GetResult()); !resp.GetSuccess() || got != "gc:sync" {
			t.Errorf("sync: success=%v output %q (%s)", resp.GetSuccess(), got, resp.GetMessage())
		}
	})

	t.Run("new-task", func(t *testing.T) {
		var resp pb.InvokeFunctionResponse
		unmarshalJSON(t, call(t, "InvokeFunction", fmt.Sprintf(
			`{"invocationType":"INVOCATION_TYPE_NEW_TASK","taskName":"e2e-grpcurl-new","createIfNotExists":true,`+
				`"artifactSpec":{"artifactType":"process","location":%q},"executionMode":"EXECUTION_MODE_SYNC","parameters":[{"name":"input","value":%s}]}`,
			path, bytesJSON("new"))), &resp)
		if got := output(t, resp.GetResult().GetResult()); !resp.GetSuccess() || got != "gc:new" || resp.GetTaskId() == "" {
			t.Errorf("NEW_TASK: success=%v task %q output %q (%s)", resp.GetSuccess(), resp.GetTaskId(), got, resp.GetMessage())
		}
	})

	t.Run("async", func(t *testing.T) {
		var resp pb.InvokeFunctionResponse
		unmarshalJSON(t, call(t, "InvokeFunction", fmt.Sprintf(
			`{"taskId":"e2e-grpcurl","executionMode":"EXECUTION_MODE_ASYNC","parameters":[{"name":"input","value":%s}]}`,
			bytesJSON("async"))), &resp)
		id := resp.GetExecutionId()
		if !resp.GetSuccess() || id == "" || resp.GetStatusEndpoint() == "" {
			t.Fatalf("async: %v", &resp)
		}
		deadline := time.Now().Add(finishBound)
		for {
			var st pb.GetExecutionStatusResponse
			unmarshalJSON(t, call(t, "GetExecutionStatus", fmt.Sprintf(`{"executionId":%q,"includeResult":true}`, id)), &st)
			if s := st.GetResult().GetStatus(); s.Terminal() {
				if got := output(t, st.GetResult().GetResult()); s != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || got != "gc:async" {
					t.Errorf("async final: %v output %q", s, got)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("async execution %s not finished after %v", id, finishBound)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("stream", func(t *testing.T) {
		out := call(t, "StreamFunction", `{"taskId":"ticker","executionMode":"EXECUTION_MODE_STREAM","context":{"environment":{"TICKS":"3"}}}`)
		var data strings.Builder
		var last pb.StreamExecutionResult
		msgs := decodeJSONStream(t, out)
		for _, raw := range msgs {
			last.Reset()
			unmarshalJSON(t, raw, &last)
			data.WriteString(output(t, last.GetChunkData()))
		}
		if want := "tick 1\ntick 2\ntick 3\n"; data.String() != want {
			t.Errorf("stream output %q, want %q", data.String(), want)
		}
		if !last.GetIsFinal() || last.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
			t.Errorf("last of %d messages: is_final=%v status=%v", len(msgs), last.GetIsFinal(), last.GetStatus())
		}
	})
}

func testCurl(t *testing.T, n *node) {
	bin := findTool(t, "curl")
	post := func(t *testing.T, method, body string) []byte {
		t.Helper()
		return runTool(t, body, bin, "-sS", "--fail-with-body", "--max-time", "60",
			"-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@-",
			n.httpURL()+"/spearlet.FunctionService/"+method)
	}

	t.Run("sync", func(t *testing.T) {
		var resp pb.InvokeFunctionResponse
		unmarshalJSON(t, post(t, "InvokeFunction",
			`{"invocationType":"INVOCATION_TYPE_EXISTING_TASK","taskId":"upper","executionMode":"EXECUTION_MODE_SYNC",`+
				`"parameters":[{"name":"input","value":{"@type":"type.googleapis.com/google.protobuf.BytesValue","value":"aGVsbG8="}}]}`), &resp)
		if got := output(t, resp.GetResult().GetResult()); !resp.GetSuccess() || got != "HELLO" {
			t.Errorf("sync: success=%v output %q (%s)", resp.GetSuccess(), got, resp.GetMessage())
		}
	})

	t.Run("async", func(t *testing.T) {
		var resp pb.InvokeFunctionResponse
		unmarshalJSON(t, post(t, "InvokeFunction", fmt.Sprintf(
			`{"taskId":"echo","executionMode":"EXECUTION_MODE_ASYNC","parameters":[{"name":"input","value":%s}]}`,
			bytesJSON("via curl"))), &resp)
		if !resp.GetSuccess() || resp.GetStatusEndpoint() == "" {
			t.Fatalf("async: %v", &resp)
		}
		url := n.httpURL() + resp.GetStatusEndpoint()
		deadline := time.Now().Add(finishBound)
		for {
			var st pb.GetExecutionStatusResponse
			unmarshalJSON(t, runTool(t, "", bin, "-sS", "--fail-with-body", "--max-time", "60", url), &st)
			if s := st.GetResult().GetStatus(); s.Terminal() {
				if got := output(t, st.GetResult().GetResult()); !st.GetFound() || s != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || got != "via curl" {
					t.Errorf("async final: found=%v %v output %q", st.GetFound(), s, got)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not finished after %v", url, finishBound)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("unknown-task", func(t *testing.T) {
		// A Connect error: HTTP 404 with a JSON body naming the code.
		cmd := exec.CommandContext(ctx(t, toolTimeout), bin, "-sS", "--max-time", "60", "-w", "\n%{http_code}",
			"-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
			`{"taskId":"no-such-task","executionMode":"EXECUTION_MODE_SYNC"}`,
			n.httpURL()+"/spearlet.FunctionService/InvokeFunction")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		body, code, _ := strings.Cut(string(out), "\n")
		if code != "404" || !strings.Contains(body, `"not_found"`) || !strings.Contains(body, "TASK_NOT_FOUND") {
			t.Errorf("unknown task over Connect JSON: HTTP %s %s; want 404, not_found, TASK_NOT_FOUND", code, body)
		}
	})
}

func testCLI(t *testing.T, n *node) {
	bin := spearBin(t)
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string // exact, when set
		stderrHas  string
		stdoutHas  string
		stdoutNone bool
	}{
		{name: "upper", args: []string{"invoke", "upper", "--input", "hello"}, code: 0, stdout: "HELLO"},
		{name: "fail", args: []string{"invoke", "fail", "-i", "x"}, code: 1, stderrHas: "FUNCTION_FAILED", stdoutNone: true},
		{name: "stream", args: []string{"invoke", "ticker", "-m", "stream", "-e", "TICKS=2"}, code: 0, stdout: "tick 1\ntick 2\n"},
		{name: "async", args: []string{"invoke", "echo", "-m", "async", "-i", "later"}, code: 0}, // prints the id: TestCLITable
		{name: "unknown-task", args: []string{"invoke", "no-such-task", "-i", "x"}, code: 3, stderrHas: "(TASK_NOT_FOUND)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(ctx(t, toolTimeout), bin, append([]string{"--addr", n.addr}, tc.args...)...)
			cmd.Env = withoutSpearEnv(os.Environ())
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				code = exitErr.ExitCode()
			} else if err != nil {
				t.Fatalf("running spear: %v", err)
			}
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
			if tc.stdout != "" && stdout.String() != tc.stdout {
				t.Errorf("stdout %q, want %q", stdout.String(), tc.stdout)
			}
			if tc.stdoutHas != "" && !strings.Contains(stdout.String(), tc.stdoutHas) {
				t.Errorf("stdout %q lacks %q", stdout.String(), tc.stdoutHas)
			}
			if tc.stdoutNone && stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
			if tc.stderrHas != "" && !strings.Contains(stderr.String(), tc.stderrHas) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.stderrHas)
			}
		})
	}
}

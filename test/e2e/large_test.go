package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/spear-go/spear/api/spearlet"
)

// bigBody prints $SIZE bytes of text and counts its runs in $RUNS.
const bigBody = `echo run >> "$RUNS"
yes "spear output line" | head -c "$SIZE"
`

// bigOutput is what bigBody prints for size.
func bigOutput(size int) []byte {
	line := []byte("spear output line\n")
	return bytes.Repeat(line, size/len(line)+1)[:size]
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// startNATS starts a stock nats-server with JetStream and its default
// limits (1 MiB max payload) on a free loopback port, and returns its URL.
func startNATS(t *testing.T, extra ...string) string {
	t.Helper()
	bin := findTool(t, "nats-server")
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	args := append([]string{"-js", "-a", "127.0.0.1", "-p", port, "-sd", t.TempDir()}, extra...)
	cmd := exec.Command(bin, args...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nats-server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "nats://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not listen on %s: %v\n%s", addr, err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLargeOutputs: outputs of 5, 10 and 40 MB, sync and async, on the
// embedded JetStream and on a stock nats-server (1 MiB max payload): each
// record is found afterwards with the right size and sha256; a grpc-go
// client with default options, grpcurl with its default limits, curl and
// the CLI each read it; the downloaded output's sha256 matches; nothing
// runs twice.
func TestLargeOutputs(t *testing.T) {
	servers := []struct {
		name string
		args func(t *testing.T) []string
	}{
		{"embedded", func(*testing.T) []string { return nil }},
		{"nats-server", func(t *testing.T) []string { return []string{"--nats-url", startNATS(t)} }},
	}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			n := startNode(t, "", nodeOpts{noSamples: true, args: srv.args(t)})
			dir := t.TempDir()
			path, _ := writeScript(t, dir, "big.sh", bigBody)
			n.registerProcess(t, "big", path)
			runs := filepath.Join(dir, "runs")
			invocations := 0
			for _, size := range []int{5_000_000, 10_000_000, 40_000_000} {
				for _, mode := range []pb.ExecutionMode{pb.ExecutionMode_EXECUTION_MODE_SYNC, pb.ExecutionMode_EXECUTION_MODE_ASYNC} {
					t.Run(fmt.Sprintf("%dMB-%s", size/1_000_000, strings.ToLower(strings.TrimPrefix(mode.String(), "EXECUTION_MODE_"))), func(t *testing.T) {
						invocations++
						id := invokeBig(t, n, mode, size, runs)
						checkLargeOutput(t, n, id, bigOutput(size))
					})
				}
			}
			// Nothing re-runs: after more than the ack wait (2 s), every
			// invocation has run exactly once.
			time.Sleep(3 * time.Second)
			if got := countLines(t, runs); got != invocations {
				t.Fatalf("the function ran %d times for %d invocations", got, invocations)
			}
			t.Run("cli-invoke", func(t *testing.T) {
				want := bigOutput(10_000_000)
				out := runCLI(t, n, "invoke", "big", "--env", "SIZE=10000000", "--env", "RUNS="+runs)
				if len(out) != len(want) || sha256Hex(out) != sha256Hex(want) {
					t.Fatalf("spear invoke printed %d bytes (sha256 %s), want the whole %d-byte output", len(out), sha256Hex(out), len(want))
				}
			})
			t.Run("large-input", func(t *testing.T) { testLargeInput(t, n, dir) })
		})
	}
}

// invokeBig runs bigBody for size bytes with a grpc-go client with default
// options and returns the execution id once it is finished.
func invokeBig(t *testing.T, n *node, mode pb.ExecutionMode, size int, runs string) string {
	t.Helper()
	conn, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := invocation(t, "big", mode, nil)
	req.Context.Environment = map[string]string{"SIZE": strconv.Itoa(size), "RUNS": runs}
	resp, err := pb.NewFunctionServiceClient(conn).InvokeFunction(ctx(t, callTimeout), req)
	if err != nil {
		t.Fatalf("InvokeFunction with a default client: %v", err)
	}
	if mode == pb.ExecutionMode_EXECUTION_MODE_SYNC {
		res := resp.GetResult()
		// Up to 3 MiB of output comes whole in the answer; beyond, the first part.
		if !resp.GetSuccess() || res.GetOutputSize() != int64(size) || res.GetOutputPartial() != (size > 3<<20) {
			t.Fatalf("sync answer: success %v, status %v %s %s, output %d bytes of %d, partial %v",
				resp.GetSuccess(), res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage(), len(output(t, res.GetResult())), res.GetOutputSize(), res.GetOutputPartial())
		}
	}
	n.waitFinal(t, resp.GetExecutionId(), finishBound)
	return resp.GetExecutionId()
}

// checkLargeOutput reads a finished execution's output every way a user
// would and checks each against want.
func checkLargeOutput(t *testing.T, n *node, id string, want []byte) {
	t.Helper()
	wantSum := sha256Hex(want)
	st := n.status(t, id) // grpc-go, default options
	res := st.GetResult()
	head := output(t, res.GetResult())
	switch {
	case !st.GetFound() || res.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED:
		t.Fatalf("record: found %v, status %v %s %s", st.GetFound(), res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage())
	case res.GetOutputSize() != int64(len(want)) || res.GetOutputSha256() != wantSum:
		t.Fatalf("record: output size %d sha256 %s, want %d %s", res.GetOutputSize(), res.GetOutputSha256(), len(want), wantSum)
	case !res.GetOutputPartial() || len(head) == 0 || !bytes.HasPrefix(want, []byte(head)):
		t.Fatalf("record: %d bytes of output, partial %v: want the first part of the output", len(head), res.GetOutputPartial())
	case res.GetAttempts() != 1:
		t.Fatalf("record: %d attempts, want 1", res.GetAttempts())
	}
	if got := httpGet(t, n.httpURL()+"/api/v1/executions/"+id+"/output"); sha256Hex(got) != wantSum {
		t.Fatalf("download: %d bytes, sha256 %s; want %d bytes, %s", len(got), sha256Hex(got), len(want), wantSum)
	}
	if got := runCLI(t, n, "exec", "output", id); sha256Hex(got) != wantSum {
		t.Fatalf("spear exec output: %d bytes, want %d", len(got), len(want))
	}
	if got := runCLI(t, n, "exec", "get", id); bytes.Count(got, []byte("\n  spear output line")) < bytes.Count(want, []byte("\n"))-1 {
		t.Fatalf("spear exec get printed %d output lines, want all %d", bytes.Count(got, []byte("\n  spear")), bytes.Count(want, []byte("\n")))
	}
	grpcurl := findTool(t, "grpcurl")
	out := runTool(t, "", grpcurl, "-plaintext", "-import-path", filepath.Join(moduleRoot(), "api", "spearlet"), "-proto", "spearlet.proto",
		"-d", fmt.Sprintf(`{"execution_id":%q,"include_result":true}`, id), n.addr, "spearlet.FunctionService/GetExecutionStatus")
	var viaGrpcurl struct {
		Result struct {
			OutputSize    string `json:"outputSize"`
			OutputSha256  string `json:"outputSha256"`
			OutputPartial bool   `json:"outputPartial"`
		} `json:"result"`
	}
	if err := json.Unmarshal(out, &viaGrpcurl); err != nil || viaGrpcurl.Result.OutputSha256 != wantSum || !viaGrpcurl.Result.OutputPartial {
		t.Fatalf("grpcurl GetExecutionStatus: %v %+v", err, viaGrpcurl.Result)
	}
}

// testLargeInput: an async input larger than a NATS message, and one
// uploaded first and referenced by input_ref, reach the function whole.
func testLargeInput(t *testing.T, n *node, dir string) {
	path, _ := writeScript(t, dir, "cat.sh", "exec cat\n")
	n.registerProcess(t, "cat", path)
	in := bigOutput(3_000_000)
	resp := n.invoke(t, invocation(t, "cat", pb.ExecutionMode_EXECUTION_MODE_ASYNC, in))
	n.waitFinal(t, resp.GetExecutionId(), finishBound)
	if got := httpGet(t, n.httpURL()+"/api/v1/executions/"+resp.GetExecutionId()+"/output"); !bytes.Equal(got, in) {
		t.Fatalf("async input of %d bytes: the function printed %d bytes back", len(in), len(got))
	}
	up, err := n.client.UploadArtifact(ctx(t, callTimeout), &pb.UploadArtifactRequest{Name: "input.txt", Content: in})
	if err != nil {
		t.Fatal(err)
	}
	req := invocation(t, "cat", pb.ExecutionMode_EXECUTION_MODE_SYNC, nil)
	req.InputRef = up.GetLocation()
	res := n.invoke(t, req).GetResult()
	if res.GetOutputSize() != int64(len(in)) || res.GetOutputSha256() != sha256Hex(in) {
		t.Fatalf("input_ref: output of %d bytes, sha256 %s; want the uploaded input back", res.GetOutputSize(), res.GetOutputSha256())
	}
	req.InputRef = "artifact:sha256:" + strings.Repeat("0", 64)
	_, err = n.client.InvokeFunction(ctx(t, callTimeout), req)
	if e := asRPCError(t, err, nil); e.code != codes.NotFound || e.reason != "INPUT_NOT_FOUND" {
		t.Fatalf("input_ref to nothing: %v %s, want NOT_FOUND INPUT_NOT_FOUND", e.code, e.reason)
	}
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	out := runTool(t, "", findTool(t, "curl"), "-sS", "--fail", url)
	return out
}

// runCLI runs the spear CLI against n and returns its stdout, failing the
// test on a non-zero exit.
func runCLI(t *testing.T, n *node, args ...string) []byte {
	t.Helper()
	return runToolEnv(t, withoutSpearEnv(os.Environ()), spearBin(t), append([]string{"--addr", n.addr}, args...)...)
}

func runToolEnv(t *testing.T, env []string, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx(t, toolTimeout), name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstderr: %s", filepath.Base(name), strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes()
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

// TestLargeOutputMemory: 20 runs of a 40 MB output leave the node's RSS,
// after a GC, within 100 MB of where it started: output streams through
// bounded buffers.
func TestLargeOutputMemory(t *testing.T) {
	n := startNode(t, "", nodeOpts{noSamples: true, args: []string{"--pprof"}})
	dir := t.TempDir()
	path, _ := writeScript(t, dir, "big.sh", bigBody)
	n.registerProcess(t, "big", path)
	runs := filepath.Join(dir, "runs")
	invokeBig(t, n, pb.ExecutionMode_EXECUTION_MODE_SYNC, 1_000_000, runs) // warm up
	gc(t, n)
	start := rss(t, n)
	for range 20 {
		invokeBig(t, n, pb.ExecutionMode_EXECUTION_MODE_SYNC, 40_000_000, runs)
	}
	peak := rss(t, n)
	gc(t, n)
	deadline := time.Now().Add(30 * time.Second)
	for {
		now := rss(t, n)
		if now <= start+100<<20 {
			t.Logf("RSS: %d MiB at start, %d MiB after 20 x 40 MB, %d MiB after a GC", start>>20, peak>>20, now>>20)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("RSS %d MiB after a GC, start %d MiB (peak %d MiB): more than 100 MB kept", now>>20, start>>20, peak>>20)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// gc runs the node's garbage collector twice (through its profiler), so
// pooled buffers are freed too.
func gc(t *testing.T, n *node) {
	t.Helper()
	for range 2 {
		resp, err := http.Get(n.httpURL() + "/debug/pprof/heap?gc=1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
}

// rss is the node process's resident set size in bytes.
func rss(t *testing.T, n *node) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

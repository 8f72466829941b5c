package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/runtime/conformance"
)

// Image tags the tests build.
const (
	fixtureTag = "spear-conformance-fixture:test"
	probeTag   = "spear-docker-probe:test"
	sampleTag  = "spear-sample-upper:test"
)

// testNodeID is the node ID of every Runtime the tests create; TestMain
// checks that no container with it is left behind.
func testNodeID() string { return "docker-test-" + strconv.Itoa(os.Getpid()) }

// newRuntime returns a Runtime for the local engine, closed at the end of
// the test. When no engine answers the test is skipped, unless CI=true,
// where it fails.
func newRuntime(tb testing.TB, opts Options) *Runtime {
	tb.Helper()
	if opts.NodeID == "" {
		opts.NodeID = testNodeID()
	}
	rt, err := New(context.Background(), opts)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { _ = rt.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rt.Ping(ctx); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("CI=true but no Docker engine answers: %v", err)
		}
		tb.Skipf("skipping: no Docker engine answers (set CI=true to fail instead): %v", err)
	}
	return rt
}

// buildImage builds tag from a FROM scratch Dockerfile holding the static
// binary bin as /fn, with ENTRYPOINT ["/fn"], through the Engine API.
func buildImage(tb testing.TB, cli *client.Client, tag, bin string) {
	tb.Helper()
	data, err := os.ReadFile(bin)
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, mode int64, body []byte) {
		hdr := &tar.Header{Name: name, Mode: mode, Size: int64(len(body)), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			tb.Fatal(err)
		}
	}
	add("Dockerfile", 0o644, []byte("FROM scratch\nCOPY fn /fn\nENTRYPOINT [\"/fn\"]\n"))
	add("fn", 0o755, data)
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := cli.ImageBuild(ctx, &buf, client.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
	})
	if err != nil {
		tb.Fatalf("ImageBuild %s: %v", tag, err)
	}
	defer res.Body.Close()
	var log strings.Builder
	dec := json.NewDecoder(res.Body)
	for {
		var msg struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			tb.Fatalf("ImageBuild %s: reading progress: %v\n%s", tag, err, log.String())
		}
		log.WriteString(msg.Stream)
		if msg.Error != "" {
			tb.Fatalf("ImageBuild %s: %s\n%s", tag, msg.Error, log.String())
		}
		if msg.ErrorDetail != nil && msg.ErrorDetail.Message != "" {
			tb.Fatalf("ImageBuild %s: %s\n%s", tag, msg.ErrorDetail.Message, log.String())
		}
	}
	if _, err := cli.ImageInspect(ctx, tag); err != nil {
		tb.Fatalf("image %s not there after build: %v\n%s", tag, err, log.String())
	}
}

// fixtureImage builds the conformance fixture image and returns the
// fixtures that run in it.
func fixtureImage(tb testing.TB, rt *Runtime) conformance.Fixtures {
	tb.Helper()
	bin := conformance.BuildFixture(tb, tb.TempDir())
	buildImage(tb, rt.cli, fixtureTag, bin)
	fn := func(name string) conformance.Fn {
		return conformance.Fn{Artifact: imageArtifact(fixtureTag, nil), Function: name}
	}
	fx := conformance.FixtureFunctions(fn)
	fx.Invalid = map[string]runtime.Artifact{
		"MissingImage": imageArtifact("spear-no-such-image:nope", nil),
		"BadMetadata":  imageArtifact(fixtureTag, map[string]string{MetaPidsLimit: "many"}),
	}
	return fx
}

// probeImage builds the image of testdata/probe and returns its tag.
func probeImage(tb testing.TB, rt *Runtime) string {
	tb.Helper()
	return goImage(tb, rt, "./testdata/probe", probeTag)
}

// sampleImage builds the sample container function's image (as make
// sample-image does: samples/docker, FROM scratch) under a test tag and
// returns the tag.
func sampleImage(tb testing.TB, rt *Runtime) string {
	tb.Helper()
	return goImage(tb, rt, "../../../samples/docker/fn", sampleTag)
}

// goImage builds the Go command in pkg as a static binary, then an image of
// it tagged tag (see buildImage).
func goImage(tb testing.TB, rt *Runtime, pkg, tag string) string {
	tb.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("go tool not found: %v", err)
	}
	bin := filepath.Join(tb.TempDir(), "fn")
	cmd := exec.Command(gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building %s: %v\n%s", pkg, err, out)
	}
	buildImage(tb, rt.cli, tag, bin)
	return tag
}

func imageArtifact(tag string, md map[string]string) runtime.Artifact {
	return runtime.Artifact{TaskID: "task-" + tag, Type: runtime.TypeDocker, Location: tag, Metadata: md}
}

// run runs one function with input and returns its output.
func run(ctx context.Context, rt *Runtime, a runtime.Artifact, fn, execID, input string) (stdout, stderr string, res runtime.Result, err error) {
	var out, errOut bytes.Buffer
	res, err = rt.Run(ctx, &runtime.Invocation{
		ExecutionID: execID,
		Artifact:    a,
		Function:    fn,
		Input:       strings.NewReader(input),
		Env:         map[string]string{},
		Stdout:      &out,
		Stderr:      &errOut,
	})
	return out.String(), errOut.String(), res, err
}

// containersOf lists the containers (running or not) labelled with
// io.spear.managed=true and the given extra label selectors (key=value).
func containersOf(ctx context.Context, cli *client.Client, selectors ...string) ([]string, error) {
	f := make(client.Filters).Add("label", LabelManaged+"=true")
	for _, s := range selectors {
		f.Add("label", s)
	}
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(list.Items))
	for _, c := range list.Items {
		ids = append(ids, fmt.Sprintf("%.12s %v %s", c.ID, c.Labels, c.State))
	}
	return ids, nil
}

// waitRemoved waits for the container of execution execID to be gone: Run
// removes it in the background once it has its result.
func waitRemoved(tb testing.TB, rt *Runtime, execID string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		left, err := containersOf(context.Background(), rt.cli, LabelExecution+"="+execID)
		if err == nil && len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("container of %s not removed: %v, err %v", execID, left, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStats waits until the engine has answered n stats requests, with a
// memory usage, for the running container of execution execID (bounded:
// it gives up after 30 s).
func waitStats(tb testing.TB, rt *Runtime, execID string, n int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := make(client.Filters).Add("label", LabelExecution+"="+execID)
	for served := 0; served < n && ctx.Err() == nil; {
		list, err := rt.cli.ContainerList(ctx, client.ContainerListOptions{Filters: f})
		if err != nil || len(list.Items) == 0 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		res, err := rt.cli.ContainerStats(ctx, list.Items[0].ID, client.ContainerStatsOptions{})
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		var st container.StatsResponse
		if json.NewDecoder(res.Body).Decode(&st) == nil && st.MemoryStats.Usage > 0 {
			served++
		}
		_ = res.Body.Close()
	}
	if ctx.Err() != nil {
		tb.Logf("the engine served no %d stats of %s within 30 s", n, execID)
	}
}

// notifyWriter discards what is written and closes notify at the first
// non-empty Write.
type notifyWriter struct {
	once   sync.Once
	notify chan struct{}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	if len(p) > 0 {
		w.once.Do(func() { close(w.notify) })
	}
	return len(p), nil
}

// checkHardened fails the test unless a container's configuration carries
// every hardening setting: no network, a read-only root with a tmpfs on
// /tmp, every capability dropped, no privileges, no new privileges, the
// default seccomp profile (none named), a PID limit, no swap beyond the
// memory limit, a non-root user, and no host paths.
func checkHardened(t *testing.T, cfg *container.Config, hc *container.HostConfig) {
	t.Helper()
	if hc.NetworkMode != "none" {
		t.Errorf("network mode %q, want none", hc.NetworkMode)
	}
	if !hc.ReadonlyRootfs {
		t.Error("root file system writable")
	}
	if opts, ok := hc.Tmpfs["/tmp"]; !ok || !strings.Contains(opts, "noexec") || !strings.Contains(opts, "size=") {
		t.Errorf("tmpfs %v: want /tmp, noexec and sized", hc.Tmpfs)
	}
	if !slices.Equal(hc.CapDrop, []string{"ALL"}) || len(hc.CapAdd) != 0 {
		t.Errorf("capabilities: drop %q add %q, want drop ALL, add none", hc.CapDrop, hc.CapAdd)
	}
	if hc.Privileged {
		t.Error("privileged")
	}
	if !slices.Contains(hc.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("security options %q lack no-new-privileges:true", hc.SecurityOpt)
	}
	for _, o := range hc.SecurityOpt {
		if strings.HasPrefix(o, "seccomp") {
			t.Errorf("security option %q: the default seccomp profile must apply", o)
		}
	}
	if hc.PidsLimit == nil || *hc.PidsLimit <= 0 {
		t.Errorf("pids limit %v, want one", hc.PidsLimit)
	}
	if hc.MemorySwap != hc.Memory {
		t.Errorf("memory %d, memory+swap %d: want them equal (no swap)", hc.Memory, hc.MemorySwap)
	}
	if cfg.User != DefaultUser {
		t.Errorf("user %q, want %s", cfg.User, DefaultUser)
	}
	if len(hc.Binds) != 0 || len(hc.Mounts) != 0 || len(hc.VolumesFrom) != 0 {
		t.Errorf("host paths: binds %q mounts %v volumes from %q", hc.Binds, hc.Mounts, hc.VolumesFrom)
	}
}

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/tlsconfig"
	"github.com/spear-go/spear/internal/tlsconfig/tlstest"
)

// TestSafeDefault: on a non-loopback address a node without
// authentication refuses to start, saying what to do; with --insecure it
// starts and warns; a token file or mutual TLS is authentication enough.
func TestSafeDefault(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"all interfaces", []string{"--listen", "0.0.0.0:" + port(freeAddr(t))}},
		{"IPv6 any", []string{"--listen", "[::]:" + port(freeAddr(t))}},
		{"no host", []string{"--listen", ":" + port(freeAddr(t))}},
		{"embedded NATS exposed", []string{"--listen", freeAddr(t), "--nats-listen", "0.0.0.0:" + port(freeAddr(t)), "--token-file", "/nonexistent"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, cancel := context.WithTimeout(t.Context(), readyTimeout)
			defer cancel()
			cmd := exec.CommandContext(c, spearBin(t), append([]string{"serve", "--data-dir", filepath.Join(dir, tt.name), "--docker", "off"}, tt.args...)...)
			cmd.Env = withoutSpearEnv(os.Environ())
			out, err := cmd.CombinedOutput()
			if c.Err() != nil {
				t.Fatalf("still serving after %v:\n%s", readyTimeout, out)
			}
			if err == nil || cmd.ProcessState.ExitCode() == 0 {
				t.Fatalf("exited 0:\n%s", out)
			}
			if !strings.Contains(string(out), "refusing") || !strings.Contains(string(out), "--insecure") ||
				(tt.name != "embedded NATS exposed" && !strings.Contains(string(out), "--token-file")) {
				t.Fatalf("the message does not say what to do:\n%s", out)
			}
		})
	}
	t.Run("insecure", func(t *testing.T) {
		n := startNode(t, "", nodeOpts{listenHost: "0.0.0.0", args: []string{"--insecure"}})
		if _, err := n.client.ListTasks(ctx(t, callTimeout), &pb.ListTasksRequest{}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(n.log.String(), "level=WARN msg=\"INSECURE: serving on a non-loopback address without authentication") {
			t.Fatalf("no warning in the log:\n%s", tail(n.log.String(), 20))
		}
	})
	t.Run("token file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "tokens")
		tok := createToken(t, file, "read", "ops")
		n := startNode(t, "", nodeOpts{listenHost: "0.0.0.0", args: []string{"--token-file", file, "--metrics-public"}})
		if _, err := n.client.ListTasks(withToken(ctx(t, callTimeout), tok), &pb.ListTasksRequest{}); err != nil {
			t.Fatal(err)
		}
		var md metadata.MD
		_, err := n.client.ListTasks(ctx(t, callTimeout), &pb.ListTasksRequest{}, grpc.Trailer(&md))
		wantAuthError(t, "ListTasks without a token", err, md, errdefs.AuthRequired)
		// --metrics-public: /metrics without a token.
		if out := httpGet(t, n.httpURL()+"/metrics"); !strings.Contains(string(out), "spear_running_executions") {
			t.Fatalf("/metrics: %.200s", out)
		}
	})
}

func port(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }

// tlsDial is the test client's TLS: the CA, and a client certificate when
// given.
func tlsDial(t *testing.T, ca string, cert *tlstest.Files) []grpc.DialOption {
	t.Helper()
	var certFile, keyFile string
	if cert != nil {
		certFile, keyFile = cert.CertFile, cert.KeyFile
	}
	cfg, err := tlsconfig.Client(ca, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
}

// tryTool runs a command and reports its output and whether it exited 0.
func tryTool(t *testing.T, env []string, name string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.CommandContext(ctx(t, toolTimeout), name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

// TestTLS: a node serving TLS on its one port, with a CA made here: gRPC
// (grpcurl, the CLI), Connect and REST (curl) all work with the CA, and
// not without it.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	srv := ca.Server("node")
	n := startNode(t, "", nodeOpts{args: []string{"--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile}, dial: tlsDial(t, ca.CertFile, nil)})
	env := withoutSpearEnv(os.Environ())
	grpcurl, curl := findTool(t, "grpcurl"), findTool(t, "curl")
	proto := []string{"-import-path", filepath.Join(moduleRoot(), "api", "spearlet"), "-proto", "spearlet.proto", "-max-time", "60", "-d", "{}"}

	tests := []struct {
		name string
		env  []string
		bin  string
		args []string
		ok   bool
		want string
	}{
		{"grpcurl with the CA", nil, grpcurl, append([]string{"-cacert", ca.CertFile}, append(proto, n.addr, "spearlet.FunctionService/ListTasks")...), true, `"upper"`},
		{"grpcurl without the CA", nil, grpcurl, append(proto, n.addr, "spearlet.FunctionService/ListTasks"), false, ""},
		{"grpcurl plaintext", nil, grpcurl, append([]string{"-plaintext"}, append(proto, n.addr, "spearlet.FunctionService/ListTasks")...), false, ""},
		{"cli --tls-ca", nil, spearBin(t), []string{"--addr", n.addr, "--tls-ca", ca.CertFile, "invoke", "upper", "--input", "tls"}, true, "TLS"},
		{"cli SPEAR_TLS_CA", []string{"SPEAR_TLS_CA=" + ca.CertFile}, spearBin(t), []string{"--addr", n.addr, "task", "list"}, true, "upper"},
		{"cli plaintext", nil, spearBin(t), []string{"--addr", n.addr, "task", "list"}, false, ""},
		{"curl healthz", nil, curl, []string{"-sS", "--fail", "--cacert", ca.CertFile, "https://" + n.addr + "/healthz"}, true, `"status":"healthy"`},
		{"curl status", nil, curl, []string{"-sS", "--cacert", ca.CertFile, "https://" + n.addr + "/api/v1/executions/none/status"}, true, `not found`},
		{"curl connect", nil, curl, []string{"-sS", "--fail", "--cacert", ca.CertFile, "-H", "Content-Type: application/json", "-d", `{"taskId":"upper"}`,
			"https://" + n.addr + "/spearlet.FunctionService/GetTask"}, true, `"taskId":"upper"`},
		{"curl without the CA", nil, curl, []string{"-sS", "--fail", "https://" + n.addr + "/healthz"}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ok := tryTool(t, append(env, tt.env...), tt.bin, tt.args...)
			if ok != tt.ok || !strings.Contains(out, tt.want) {
				t.Fatalf("succeeded %v, want %v; output:\n%s", ok, tt.ok, out)
			}
		})
	}
}

// TestMutualTLS: with --client-ca a client without a certificate (or with
// one of another CA) is refused at the handshake, one with a certificate
// of the CA gets in. Mutual TLS is authentication: the node serves on all
// interfaces without tokens and without --insecure.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	other := tlstest.NewCA(t, dir, "other")
	srv, cli, stranger := ca.Server("node"), ca.Client("client"), other.Client("stranger")
	n := startNode(t, "", nodeOpts{listenHost: "0.0.0.0",
		args: []string{"--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--client-ca", ca.CertFile},
		dial: tlsDial(t, ca.CertFile, &cli)})
	if _, err := n.client.ListTasks(ctx(t, callTimeout), &pb.ListTasksRequest{}); err != nil {
		t.Fatal(err)
	}
	env := withoutSpearEnv(os.Environ())
	grpcurl, curl := findTool(t, "grpcurl"), findTool(t, "curl")
	proto := []string{"-cacert", ca.CertFile, "-import-path", filepath.Join(moduleRoot(), "api", "spearlet"), "-proto", "spearlet.proto", "-max-time", "60", "-d", "{}"}
	spear := []string{"--addr", n.addr, "--tls-ca", ca.CertFile}
	tests := []struct {
		name string
		bin  string
		args []string
		ok   bool
		want string
	}{
		{"cli without a certificate", spearBin(t), append(spear, "task", "list"), false, ""},
		{"cli with another CA's certificate", spearBin(t), append(spear, "--tls-cert", stranger.CertFile, "--tls-key", stranger.KeyFile, "task", "list"), false, ""},
		{"cli with a certificate", spearBin(t), append(spear, "--tls-cert", cli.CertFile, "--tls-key", cli.KeyFile, "invoke", "upper", "--input", "mtls"), true, "MTLS"},
		{"grpcurl without a certificate", grpcurl, append(proto, n.addr, "spearlet.FunctionService/ListTasks"), false, ""},
		{"grpcurl with a certificate", grpcurl, append([]string{"-cert", cli.CertFile, "-key", cli.KeyFile}, append(proto, n.addr, "spearlet.FunctionService/ListTasks")...), true, `"upper"`},
		{"curl without a certificate", curl, []string{"-sS", "--fail", "--cacert", ca.CertFile, "https://" + n.addr + "/healthz"}, false, ""},
		{"curl with a certificate", curl, []string{"-sS", "--fail", "--cacert", ca.CertFile, "--cert", cli.CertFile, "--key", cli.KeyFile, "https://" + n.addr + "/healthz"}, true, "healthy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ok := tryTool(t, env, tt.bin, tt.args...)
			if ok != tt.ok || !strings.Contains(out, tt.want) {
				t.Fatalf("succeeded %v, want %v; output:\n%s", ok, tt.ok, out)
			}
		})
	}
	// A plain Go client without a certificate: refused too.
	conn, err := tls.Dial("tcp", n.addr, &tls.Config{RootCAs: mustPool(t, ca.CertFile), NextProtos: []string{"h2"}})
	if err == nil {
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatal("a TLS client without a certificate was let in")
	}
}

func mustPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	cfg, err := tlsconfig.Client(file, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return cfg.RootCAs
}

package node

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/spear-go/spear/internal/errdefs"
)

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:50052": true, "127.1.2.3:1": true, "[::1]:50052": true, "localhost:50052": true,
		"0.0.0.0:50052": false, "[::]:50052": false, ":50052": false, "192.168.1.10:50052": false,
		"example.com:50052": false, "127.0.0.1": false, "": false,
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestSecurityCheck(t *testing.T) {
	tests := []struct {
		name                  string
		s                     Security
		listen, nats, cluster string
		refused               bool
	}{
		{"loopback, no auth", Security{}, "127.0.0.1:1", "", "", false},
		{"exposed, no auth", Security{}, "0.0.0.0:1", "", "", true},
		{"exposed, TLS but no auth", Security{TLSCert: "c", TLSKey: "k"}, "0.0.0.0:1", "", "", true},
		{"exposed, tokens", Security{TokenFile: "f"}, "0.0.0.0:1", "", "", false},
		{"exposed, mutual TLS", Security{TLSCert: "c", TLSKey: "k", ClientCA: "ca"}, "0.0.0.0:1", "", "", false},
		{"exposed, insecure", Security{Insecure: true}, "0.0.0.0:1", "", "", false},
		{"client CA without TLS", Security{ClientCA: "ca"}, "127.0.0.1:1", "", "", true},
		{"cert without key", Security{TLSCert: "c"}, "127.0.0.1:1", "", "", true},
		{"NATS exposed", Security{TokenFile: "f"}, "0.0.0.0:1", "0.0.0.0:4222", "", true},
		{"NATS exposed, insecure", Security{Insecure: true}, "127.0.0.1:1", "0.0.0.0:4222", "", false},
		{"NATS on loopback", Security{}, "127.0.0.1:1", "127.0.0.1:4222", "", false},
		{"routes exposed", Security{TokenFile: "f"}, "0.0.0.0:1", "", "0.0.0.0:6222", true},
		{"routes exposed, insecure", Security{Insecure: true}, "127.0.0.1:1", "", "10.0.0.1:6222", false},
		{"routes on loopback", Security{}, "127.0.0.1:1", "", "127.0.0.1:6222", false},
	}
	for _, tt := range tests {
		err := tt.s.check(tt.listen, tt.nats, tt.cluster)
		if (err != nil) != tt.refused {
			t.Errorf("%s: %v, want refused %v", tt.name, err, tt.refused)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("%s: error class of %v", tt.name, err)
		}
	}
}

func TestSecurityWarn(t *testing.T) {
	tests := []struct {
		name    string
		s       Security
		listen  string
		cluster string
		want    string
	}{
		{"insecure exposed", Security{Insecure: true}, "0.0.0.0:1", "", "INSECURE: serving on a non-loopback address"},
		{"insecure on loopback", Security{Insecure: true}, "127.0.0.1:1", "", "--insecure is set"},
		{"tokens in clear", Security{TokenFile: "f"}, "0.0.0.0:1", "", "tokens travel in clear text"},
		{"nothing to say", Security{TokenFile: "f", TLSCert: "c"}, "0.0.0.0:1", "", ""},
		{"routes exposed", Security{Insecure: true}, "127.0.0.1:1", "10.0.0.1:6222", "accepts cluster routes on a non-loopback address"},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		tt.s.warn(slog.New(slog.NewTextHandler(&buf, nil)), tt.listen, "", tt.cluster)
		if tt.want == "" && buf.Len() != 0 || !strings.Contains(buf.String(), tt.want) {
			t.Errorf("%s: logged %q, want %q", tt.name, buf.String(), tt.want)
		}
	}
}

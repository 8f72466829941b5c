package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/spear-go/spear/internal/errdefs"
)

// TestOneHTTPStatusPerClass: an error of one class gets the same HTTP
// status from a REST route as from a Connect call, and README's class table
// says so (and which gRPC code it is).
func TestOneHTTPStatusPerClass(t *testing.T) {
	readme := readmeClasses(t)
	for _, code := range errdefs.ClassCodes() {
		t.Run(code.String(), func(t *testing.T) {
			err := code.New("an error of class %s", code)
			rest := httptest.NewRecorder()
			writeError(rest, httptest.NewRequest(http.MethodGet, "/api/v1/executions/x/status", nil), err)
			viaConnect := connectStatus(t, err)
			if rest.Code != viaConnect {
				t.Fatalf("REST answers %d, Connect %d", rest.Code, viaConnect)
			}
			if got := rest.Header().Get(ErrorCodeTrailer); got != code.String() {
				t.Fatalf("REST error code header %q", got)
			}
			row, ok := readme[code.String()]
			if !ok {
				t.Fatalf("README's class table lacks %s", code)
			}
			if strings.ReplaceAll(strings.ToLower(row.grpc), "_", "") != strings.ToLower(grpcCode(err).String()) {
				t.Errorf("README says gRPC %s, the server answers %s", row.grpc, grpcCode(err))
			}
			if row.http != rest.Code {
				t.Errorf("README says HTTP %d, the server answers %d", row.http, rest.Code)
			}
		})
	}
}

// connectStatus is the HTTP status a Connect handler answers err with.
func connectStatus(t *testing.T, err error) int {
	t.Helper()
	h := connect.NewUnaryHandler("/t.S/M", func(context.Context, *connect.Request[emptypb.Empty]) (*connect.Response[emptypb.Empty], error) {
		return nil, toConnect(err)
	})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/t.S/M", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	return rec.Code
}

type classRow struct {
	grpc string
	http int
}

// readmeClasses parses README's class table, keyed by the class's code.
func readmeClasses(t *testing.T) map[string]classRow {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]classRow{}
	re := regexp.MustCompile(`(?m)^\| ([a-z ]+) \| ([A-Z_]+) \| (\d{3}) \|`)
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		status, _ := strconv.Atoi(m[3])
		key := strings.ToUpper(strings.ReplaceAll(m[1], " ", "_"))
		if key == "CANCELLED" || key == "DEADLINE_EXCEEDED" || strings.HasPrefix(m[2], key) {
			out[key] = classRow{grpc: m[2], http: status}
		}
	}
	return out
}

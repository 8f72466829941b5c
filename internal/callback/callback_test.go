package callback

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestDeliver(t *testing.T) {
	tests := []struct {
		name         string
		answers      []int // status per attempt; the last repeats
		wantState    string
		wantAttempts int32
	}{
		{"first try", []int{200}, StateDelivered, 1},
		{"retried after 5xx", []int{503, 500, 204}, StateDelivered, 3},
		{"retried after 429", []int{429, 200}, StateDelivered, 2},
		{"refused for good", []int{404}, StateFailed, 1},
		{"attempts run out", []int{500}, StateFailed, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			var gotBody atomic.Value
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				i := int(n.Add(1)) - 1
				b, _ := io.ReadAll(r.Body)
				gotBody.Store(string(b) + "|" + r.Header.Get("Spear-Execution-Id") + "|" + r.Header.Get("Content-Type"))
				w.WriteHeader(tc.answers[min(i, len(tc.answers)-1)])
			}))
			defer srv.Close()
			d := New(Options{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 4 * time.Millisecond})
			out := d.Deliver(context.Background(), srv.URL, "ex1", []byte(`{"found":true}`))
			if out.State != tc.wantState || out.Attempts != tc.wantAttempts {
				t.Fatalf("got %+v, want state %s after %d attempts", out, tc.wantState, tc.wantAttempts)
			}
			if n.Load() != tc.wantAttempts {
				t.Fatalf("server saw %d requests, want %d", n.Load(), tc.wantAttempts)
			}
			if got := gotBody.Load().(string); got != `{"found":true}|ex1|application/json` {
				t.Fatalf("request body|id|type = %q", got)
			}
			if tc.wantState == StateDelivered && out.DeliveredAt.IsZero() {
				t.Fatal("delivered without a time")
			}
		})
	}
}

func TestDeliverUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close() // nothing listens there any more
	d := New(Options{MaxAttempts: 2, BaseDelay: time.Millisecond})
	out := d.Deliver(context.Background(), addr, "ex", nil)
	if out.State != StateFailed || out.Attempts != 2 || out.LastError == "" {
		t.Fatalf("got %+v", out)
	}
}

func TestDeliverStopsWithContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	d := New(Options{MaxAttempts: 100, BaseDelay: time.Hour})
	done := make(chan Outcome)
	go func() { done <- d.Deliver(ctx, srv.URL, "ex", nil) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case out := <-done:
		if out.State != StateFailed || out.Attempts != 1 {
			t.Fatalf("got %+v", out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Deliver did not stop when its context ended")
	}
}

func TestValidateURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8080/hook", true},
		{"https://example.com/x?y=1", true},
		{"ftp://example.com", false},
		{"/relative", false},
		{"http://", false},
		{"::", false},
	} {
		if err := ValidateURL(tc.url); (err == nil) != tc.ok {
			t.Errorf("ValidateURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

package store

import (
	"context"
	"testing"
	"time"
)

// TestCallbackOutbox: a due callback is stored once per execution attempt,
// comes back after the ack wait until acked, and is gone once acked.
func TestCallbackOutbox(t *testing.T) {
	s := openStore(t, t.TempDir(), 500*time.Millisecond)
	ctx := testCtx(t)
	dues := []DueCallback{
		{ExecutionID: "e1", Attempts: 1, URL: "http://127.0.0.1:1/cb", Body: []byte(`{"a":1}`)},
		{ExecutionID: "e1", Attempts: 1, URL: "http://127.0.0.1:1/cb", Body: []byte(`{"a":1}`)}, // the same: deduplicated
		{ExecutionID: "e1", Attempts: 2, URL: "http://127.0.0.1:1/cb", Body: []byte(`{"a":2}`)}, // a rerun owes its own
	}
	for _, d := range dues {
		if err := s.Callbacks.Queue(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := s.Callbacks.Due(8)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Stop()
	next := func(wait time.Duration) *CallbackDelivery {
		t.Helper()
		nctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		d, err := cs.Next(nctx)
		if err != nil {
			return nil
		}
		return d
	}
	first, second := next(5*time.Second), next(5*time.Second)
	if first == nil || second == nil || first.Attempts != 1 || second.Attempts != 2 || string(second.Body) != `{"a":2}` {
		t.Fatalf("deliveries %+v, %+v; want attempts 1 then 2", first, second)
	}
	if extra := next(200 * time.Millisecond); extra != nil {
		t.Fatalf("a third delivery %+v: the duplicate was stored", extra.DueCallback)
	}
	if err := second.Ack(); err != nil {
		t.Fatal(err)
	}
	// Not acked: back after the ack wait.
	again := next(5 * time.Second)
	if again == nil || again.ExecutionID != "e1" || again.Attempts != 1 {
		t.Fatalf("unacked callback came back as %+v, want attempt 1 of e1", again)
	}
	if err := again.Ack(); err != nil {
		t.Fatal(err)
	}
	if gone := next(time.Second); gone != nil {
		t.Fatalf("acked callbacks came back: %+v", gone.DueCallback)
	}
}

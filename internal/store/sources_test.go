package store

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/testwait"
)

// TestSourcesByRuntime: work is taken only from the sources of the
// runtimes asked for, up to the number asked; a take that finds fewer
// clears the source's mark; queueing announces the source.
func TestSourcesByRuntime(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), time.Minute)
	announced := make(chan string, 16)
	stop, err := s.Workers.Announcements(func(rt string, band int) { announced <- fmt.Sprintf("%s/%d", rt, band) })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for i, rt := range []string{"process", "docker", "process", "process"} {
		sp := spec(fmt.Sprintf("e%d", i))
		sp.Runtime = rt
		if _, err := s.Queue.Enqueue(ctx, sp); err != nil {
			t.Fatal(err)
		}
		if got := <-announced; got != rt+"/2" {
			t.Fatalf("announced %s, want %s/2", got, rt)
		}
	}
	src := s.Workers.opened()[Bands-1-Band(0)]
	if src.Runtime != "process" || src.Band != 2 {
		t.Fatalf("source %s/%d, want process/2", src.Runtime, src.Band)
	}
	var got []string
	take := func(n int) int {
		k, err := s.Workers.Take(src, n, func(d *Delivery) { got = append(got, d.Spec.ExecutionID); _ = d.Ack(ctx) })
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	if k := take(2); k != 2 || !src.Maybe() {
		t.Fatalf("took %d (maybe more: %v), want 2 and more", k, src.Maybe())
	}
	if k := take(5); k != 1 || src.Maybe() {
		t.Fatalf("took %d (maybe more: %v), want the last 1 and the mark cleared", k, src.Maybe())
	}
	if fmt.Sprint(got) != "[e0 e2 e3]" {
		t.Fatalf("took %v, want the process executions e0 e2 e3 in order", got)
	}
	// Acks are not waited for: the count settles.
	testwait.Until(t, "the docker execution alone left for a node with docker", func() bool {
		n, err := s.Queue.OfTask(ctx, "t")
		return err == nil && n == 1
	})
}

// TestConsumeMovesFormat1Queue: executions queued by store format 1
// (subjects without a runtime) are moved to their runtime's source when a
// node opens the sources, and format 1's consumers are dropped.
func TestConsumeMovesFormat1Queue(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), time.Minute)
	if _, err := ensureConsumer(ctx, s.queue, jetstream.ConsumerConfig{
		Durable: legacyBandConsumer(2), AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubject: queueSubjectBase + "p2.>",
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"old1", "old2"} {
		sp := spec(id)
		sp.Runtime = ""
		b, _ := json.Marshal(sp)
		if _, err := s.js.Publish(ctx, queueSubjectBase+"p2.t."+id, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Workers.Open(ctx, []string{"process", "wasm"}, func(task string) string { return "wasm" }); err != nil {
		t.Fatal(err)
	}
	var got []string
	testwait.Until(t, "the moved executions to be taken", func() bool {
		if err := s.Workers.Fetch(10, func(d *Delivery) {
			got = append(got, d.Spec.ExecutionID+"/"+d.Spec.Runtime)
			_ = d.Ack(ctx)
		}); err != nil {
			t.Fatal(err)
		}
		return len(got) >= 2
	})
	if fmt.Sprint(got) != "[old1/wasm old2/wasm]" {
		t.Fatalf("took %v, want old1 and old2 moved to wasm", got)
	}
	if _, err := s.queue.Consumer(ctx, legacyBandConsumer(2)); err == nil {
		t.Fatal("format 1's consumer is still there")
	}
}

package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/testwait"
)

// fakeChunks records what an outputSink stores.
type fakeChunks struct {
	mu     sync.Mutex
	seqs   []int64
	data   strings.Builder
	closed int64
	err    error
}

func (f *fakeChunks) Write(_ context.Context, seq int64, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seqs = append(f.seqs, seq)
	f.data.Write(data)
}

func (f *fakeChunks) Close(_ context.Context, count int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = count
	return f.err
}

func (f *fakeChunks) stored() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.data.String()
}

// TestOutputSinkStoreAfter: an output that fits the head is stored once it
// has been written to for storeAfter — the chunks so far, then each new
// one, in order — and not at all when the run ends before.
func TestOutputSinkStoreAfter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after time.Duration
		want  string
	}{
		{"a longer run is stored", time.Millisecond, "abcd"},
		{"a short run is not", time.Hour, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &fakeChunks{}
			o := newOutputSink(sinkConfig{ctx: context.Background(), headLimit: 8, block: 4, limit: 100, storeAfter: tc.after,
				newWriter: func() chunkWriter { return store }, overflow: func() {}})
			o.Write([]byte("ab"))
			if tc.after < time.Hour {
				testwait.Until(t, "the first chunk to be stored", func() bool { return store.stored() == "ab" })
			}
			o.Write([]byte("cd"))
			sum := o.finish(context.Background())
			if store.stored() != tc.want || sum.stored != (tc.want != "") || string(sum.head) != "abcd" {
				t.Fatalf("stored %q (summary says %v), head %q; want %q stored", store.stored(), sum.stored, sum.head, tc.want)
			}
			if tc.want != "" && (store.closed != 2 || store.seqs[0] != 0 || store.seqs[1] != 1) {
				t.Fatalf("stored seqs %v, end mark after %d; want 0, 1 and 2", store.seqs, store.closed)
			}
		})
	}
}

func sinkWith(limit int64, storeAll bool, store *fakeChunks, onChunk func(Chunk), overflow func()) *outputSink {
	return newOutputSink(sinkConfig{
		ctx: context.Background(), headLimit: 8, block: 4, limit: limit, storeAll: storeAll,
		newWriter: func() chunkWriter { return store }, onChunk: onChunk, overflow: overflow,
	})
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestOutputSink(t *testing.T) {
	tests := []struct {
		name       string
		limit      int64
		storeAll   bool
		writes     []string
		wantChunks string // what onChunk saw, chunks joined by |
		wantHead   string
		wantStored string // what went to the store; "" nothing
		wantSeqs   int    // chunks stored
		overflows  int
	}{
		{"small sync output stays in memory", 100, false, []string{"ab", "cd"}, "ab|cd", "abcd", "", 0, 0},
		{"writes cut into blocks", 100, false, []string{"abcdef"}, "abcd|ef", "abcdef", "", 0, 0},
		{"sync output spills once past the head", 100, false, []string{"abc", "def", "ghi"}, "abc|def|ghi", "abcdefgh", "abcdefghi", 3, 0},
		{"stream output stored from the first chunk", 100, true, []string{"ab", "cd"}, "ab|cd", "abcd", "abcd", 2, 0},
		{"limit: overflow once, nothing past it", 6, true, []string{"abcd", "ef", "g", "more"}, "abcd|ef", "abcdef", "abcdef", 2, 1},
		{"exactly the limit is fine", 4, true, []string{"abcd"}, "abcd", "abcd", "abcd", 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var chunks []string
			overflows := 0
			store := &fakeChunks{}
			o := sinkWith(tc.limit, tc.storeAll, store, func(c Chunk) { chunks = append(chunks, string(c.Data)) }, func() { overflows++ })
			for _, w := range tc.writes {
				if n, err := o.Write([]byte(w)); err != nil || n != len(w) {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			sum := o.finish(context.Background())
			all := strings.ReplaceAll(tc.wantChunks, "|", "")
			switch {
			case strings.Join(chunks, "|") != tc.wantChunks:
				t.Fatalf("chunks = %q, want %q", chunks, tc.wantChunks)
			case string(sum.head) != tc.wantHead:
				t.Fatalf("head = %q, want %q", sum.head, tc.wantHead)
			case sum.size != int64(len(all)) || sum.sha256 != sha(all):
				t.Fatalf("size %d sha %s, want %d and the sha256 of %q", sum.size, sum.sha256, len(all), all)
			case store.data.String() != tc.wantStored || len(store.seqs) != tc.wantSeqs:
				t.Fatalf("stored %q in %d chunks, want %q in %d", store.data.String(), len(store.seqs), tc.wantStored, tc.wantSeqs)
			case sum.stored != (tc.wantSeqs > 0) || (tc.wantSeqs > 0 && store.closed != int64(tc.wantSeqs)):
				t.Fatalf("stored = %v, end mark after %d chunks", sum.stored, store.closed)
			case overflows != tc.overflows:
				t.Fatalf("overflow called %d times, want %d", overflows, tc.overflows)
			}
			for i, s := range store.seqs {
				if s != int64(i) {
					t.Fatalf("stored sequence %v: not 0, 1, 2, ...", store.seqs)
				}
			}
		})
	}
}

// TestOutputSinkWatch: a watcher gets the chunks so far from memory, then
// the new ones; once the output outgrew memory it is sent to the store.
func TestOutputSinkWatch(t *testing.T) {
	o := sinkWith(100, false, &fakeChunks{}, nil, func() {})
	o.Write([]byte("ab"))
	past, more, ok := o.watch()
	if !ok || len(past) != 1 || string(past[0].Data) != "ab" {
		t.Fatalf("watch = %v, %v", past, ok)
	}
	o.Write([]byte("cd"))
	if c := <-more; c.Seq != 1 || string(c.Data) != "cd" {
		t.Fatalf("live chunk = %+v", c)
	}
	o.Write([]byte("efghij")) // past the 8-byte head
	if _, _, ok := o.watch(); ok {
		t.Fatal("watch from memory after the output outgrew it")
	}
	o.finish(context.Background())
	n := 0
	for range more {
		n++
	}
	if n != 2 {
		t.Fatalf("the first watcher got %d more chunks, want 2 (efgh, ij)", n)
	}
}

// TestOutputSinkStoreFails: a store that fails says so; the head is kept.
func TestOutputSinkStoreFails(t *testing.T) {
	store := &fakeChunks{err: errors.New("insufficient resources")}
	o := sinkWith(100, false, store, nil, func() {})
	o.Write([]byte("0123456789"))
	sum := o.finish(context.Background())
	if sum.stored || sum.storeErr == nil || string(sum.head) != "01234567" || sum.size != 10 {
		t.Fatalf("summary = %+v", sum)
	}
}

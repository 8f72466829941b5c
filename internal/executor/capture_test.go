package executor

import (
	"strings"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/testwait"
)

func lineTexts(lines []execution.LogLine) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Line
	}
	return out
}

func TestLogSink(t *testing.T) {
	tests := []struct {
		name    string
		limit   int
		writes  []string
		want    []string
		dropped int
	}{
		{"lines", 100, []string{"a\nb\n"}, []string{"a", "b"}, 0},
		{"split across writes", 100, []string{"he", "llo\nwor", "ld\n"}, []string{"hello", "world"}, 0},
		{"partial last line", 100, []string{"a\nno newline"}, []string{"a", "no newline"}, 0},
		{"empty lines kept", 100, []string{"\n\nx\n"}, []string{"", "", "x"}, 0},
		{"budget drops oldest", 10, []string{"aaaa\nbbbb\ncccc\n"}, []string{"bbbb", "cccc"}, 1},
		{"one line over budget is kept", 4, []string{"ab\nabcdef\n"}, []string{"abcdef"}, 1},
		{"endless line flushed", 8, []string{"0123", "456789ab"}, []string{"0123456789ab"}, 0},
		{"invalid utf-8 replaced", 100, []string{"ok\xff\n"}, []string{"ok\uFFFD"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			at := time.Unix(1700000000, 0)
			l := &logSink{now: func() time.Time { return at }, limit: tc.limit}
			for _, w := range tc.writes {
				if n, err := l.Write([]byte(w)); err != nil || n != len(w) {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			got := l.result()
			if strings.Join(lineTexts(got), "|") != strings.Join(tc.want, "|") {
				t.Fatalf("lines = %q, want %q", lineTexts(got), tc.want)
			}
			if l.dropped != tc.dropped {
				t.Fatalf("dropped = %d, want %d", l.dropped, tc.dropped)
			}
			for _, line := range got {
				if !line.Time.Equal(at) {
					t.Fatalf("line %q stamped %v, want %v", line.Line, line.Time, at)
				}
			}
			// result is repeatable and returns a copy.
			if again := l.result(); len(again) != len(got) {
				t.Fatalf("second result has %d lines, want %d", len(again), len(got))
			}
		})
	}
}

func TestTail(t *testing.T) {
	lines := func(s ...string) []execution.LogLine {
		out := make([]execution.LogLine, len(s))
		for i, x := range s {
			out[i] = execution.LogLine{Line: x}
		}
		return out
	}
	tests := []struct {
		name  string
		lines []execution.LogLine
		n     int
		want  string
	}{
		{"none", nil, 10, ""},
		{"all fit", lines("a", "bb", "ccc"), 100, "a\nbb\nccc"},
		{"last lines that fit", lines("a", "bb", "ccc"), 8, "bb\nccc"},
		{"last line cut", lines("a", "bb", "abcdef"), 3, "def"},
		{"last line exactly", lines("x", "abc"), 4, "abc"},
		{"cut inside a rune", lines("ééé"), 3, "é"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tail(tc.lines, tc.n); got != tc.want {
				t.Fatalf("tail(%d) = %q, want %q", tc.n, got, tc.want)
			}
		})
	}
}

// TestAttachNeverCutsStoredOutput: an attachment to an execution whose
// record says its output is stored whole never ends with a part of it as
// if it were all; when the chunks cannot be read (here: purged behind the
// record's back) it fails UNAVAILABLE after the stall bound.
func TestAttachNeverCutsStoredOutput(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	h.m.attachStall = time.Second
	spec := newSpec("echo", execution.ModeStream, strings.Repeat("x", 1000)) // stored from the first chunk
	if _, err := h.m.Runs.Run(testCtx(t), spec, func(Chunk) {}); err != nil {
		t.Fatal(err)
	}
	rec := h.stored(spec.ExecutionID)
	testwait.Until(t, "the run to leave the live table", func() bool { return h.m.views.liveOf(spec.ExecutionID) == nil })
	if !rec.OutputStored {
		t.Fatalf("record: output stored %v, want true", rec.OutputStored)
	}
	var got []byte
	send := func(c Chunk) error { got = append(got, c.Data...); return nil }
	if _, err := h.m.Views.Attach(testCtx(t), spec.ExecutionID, send); err != nil || len(got) != 1000 {
		t.Fatalf("Attach: %d bytes, %v; want the 1000 bytes", len(got), err)
	}
	if err := h.st.Outputs.Delete(testCtx(t), spec.ExecutionID); err != nil {
		t.Fatal(err)
	}
	got = nil
	_, err := h.m.Views.Attach(testCtx(t), spec.ExecutionID, send)
	if !errdefs.Unavailable.Is(err) {
		t.Fatalf("Attach with the chunks gone: %d bytes, error %v; want UNAVAILABLE", len(got), err)
	}
}

package process_test

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/spear-go/spear/internal/runtime/process"
)

func TestSmallInput(t *testing.T) {
	big := strings.Repeat("x", process.SmallInputMax+1)
	partly := bytes.NewReader([]byte("skip-rest"))
	_, _ = partly.Read(make([]byte, 5))
	for _, tc := range []struct {
		name   string
		in     io.Reader
		want   string
		inline bool
	}{
		{"bytes", bytes.NewReader([]byte("hello")), "hello", true},
		{"string", strings.NewReader("hi"), "hi", true},
		{"buffer", bytes.NewBufferString("buf"), "buf", true},
		{"empty", bytes.NewReader(nil), "", true},
		{"what is left", partly, "rest", true},
		{"page", strings.NewReader(big[:process.SmallInputMax]), big[:process.SmallInputMax], true},
		{"over a page", strings.NewReader(big), "", false},
		{"other reader", io.LimitReader(strings.NewReader("hi"), 2), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, ok := process.SmallInput(tc.in)
			if ok != tc.inline || string(b) != tc.want {
				t.Fatalf("smallInput = %q, %v; want %q, %v", b, ok, tc.want, tc.inline)
			}
		})
	}
}

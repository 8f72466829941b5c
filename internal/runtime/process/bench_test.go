package process_test

import (
	"context"
	"os"
	"testing"

	"github.com/spear-go/spear/internal/runtime/process"
	"github.com/spear-go/spear/internal/sandbox"
)

// BenchmarkRun runs a shell script that echoes its input, with the
// sandbox off and on (what the bench's sandbox row measures end to end).
func BenchmarkRun(b *testing.B) {
	for _, mode := range []sandbox.Mode{sandbox.ModeOff, sandbox.ModeAuto} {
		b.Run(string(mode), func(b *testing.B) {
			rt := process.New(process.Options{Sandbox: mode, ReadRoots: []string{os.TempDir()}})
			defer func() { _ = rt.Close(context.Background()) }()
			path := script(b, "read line\necho \"$line\"\n")
			for b.Loop() {
				in, _, _ := inv(path, "", []byte("hello\n"))
				if res, err := rt.Run(context.Background(), in); err != nil || res.ExitCode != 0 {
					b.Fatalf("Run: %+v, %v", res, err)
				}
			}
		})
	}
}

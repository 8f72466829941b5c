package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spf13/pflag"
)

// TestResolveList: a list flag (--artifact-root) comes, in order of
// precedence, from repeated flags, a comma-separated SPEAR_* variable, or a
// YAML list in the file.
func TestResolveList(t *testing.T) {
	file := filepath.Join(t.TempDir(), "spear.yaml")
	if err := os.WriteFile(file, []byte("artifact-root:\n  - /file/a\n  - /file/b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		path string
		want []string
	}{
		{"default", nil, nil, "", nil},
		{"file", nil, nil, file, []string{"/file/a", "/file/b"}},
		{"env beats file", nil, map[string]string{"SPEAR_ARTIFACT_ROOT": "/env/a,/env/b"}, file, []string{"/env/a", "/env/b"}},
		{"flags beat env", []string{"--artifact-root=/flag/a", "--artifact-root", "/flag/b,/flag/c"},
			map[string]string{"SPEAR_ARTIFACT_ROOT": "/env/a"}, file, []string{"/flag/a", "/flag/b", "/flag/c"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
			roots := fs.StringSlice("artifact-root", nil, "")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if err := Resolve(fs, func(k string) string { return tc.env[k] }, tc.path); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(*roots, tc.want) {
				t.Fatalf("artifact-root = %q, want %q", *roots, tc.want)
			}
		})
	}
}

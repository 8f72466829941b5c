package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

func TestResolvePrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "spear.yaml")
	if err := os.WriteFile(file, []byte("listen: 0.0.0.0:1\nworkers: 3\ndata_dir: /from/file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		path    string
		listen  string
		workers int
		dataDir string
	}{
		{"defaults", nil, nil, "", "127.0.0.1:50052", 0, "d"},
		{"file", nil, nil, file, "0.0.0.0:1", 3, "/from/file"},
		{"env beats file", nil, map[string]string{"SPEAR_WORKERS": "7"}, file, "0.0.0.0:1", 7, "/from/file"},
		{"flag beats env", []string{"--workers=9"}, map[string]string{"SPEAR_WORKERS": "7"}, file, "0.0.0.0:1", 9, "/from/file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
			listen := fs.String("listen", "127.0.0.1:50052", "")
			workers := fs.Int("workers", 0, "")
			dataDir := fs.String("data-dir", "d", "")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if err := Resolve(fs, func(k string) string { return tc.env[k] }, tc.path); err != nil {
				t.Fatal(err)
			}
			if *listen != tc.listen || *workers != tc.workers || *dataDir != tc.dataDir {
				t.Fatalf("got listen=%q workers=%d data-dir=%q", *listen, *workers, *dataDir)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("lisen: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		path string
	}{
		{"unknown key", nil, bad},
		{"missing file", nil, filepath.Join(dir, "nope.yaml")},
		{"bad env value", map[string]string{"SPEAR_WORKERS": "many"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
			fs.String("listen", "", "")
			fs.Int("workers", 0, "")
			if err := Resolve(fs, func(k string) string { return tc.env[k] }, tc.path); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

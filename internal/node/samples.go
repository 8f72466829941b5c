package node

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spear-go/spear/internal/registry"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/task"
)

// SampleImage is the sample container function's image, built by
// `make sample-image`.
const SampleImage = "spear-sample-upper:latest"

// registerSamples registers the sample functions found in dir:
// dir/process/NAME.sh as task NAME, dir/wasm/NAME.wasm as task wasm-NAME,
// and, with a Docker engine that has SampleImage, docker-upper.
func registerSamples(ctx context.Context, reg *registry.Registry, dir string, rts map[spearrt.Type]spearrt.Runtime, log *slog.Logger) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		log.Warn("samples", "err", err)
		return
	}
	kinds := []struct {
		sub, ext, prefix string
		typ              spearrt.Type
	}{
		{"process", ".sh", "", spearrt.TypeProcess},
		{"wasm", ".wasm", "wasm-", spearrt.TypeWasm},
	}
	if rts[spearrt.TypeDocker] != nil {
		if _, _, err := reg.Register(ctx, registry.Registration{
			ID: "docker-upper", Name: "docker-upper", Description: "sample container function: upper-cases its input",
			Artifact: task.Artifact{Type: spearrt.TypeDocker, Location: SampleImage},
		}); err != nil {
			log.Info("sample container function not registered (run `make sample-image`)", "err", err)
		}
	}
	for _, k := range kinds {
		if rts[k.typ] == nil {
			continue
		}
		files, _ := filepath.Glob(filepath.Join(abs, k.sub, "*"+k.ext))
		for _, f := range files {
			if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() {
				continue
			}
			id := k.prefix + strings.TrimSuffix(filepath.Base(f), k.ext)
			t, created, err := reg.Register(ctx, registry.Registration{
				ID: id, Name: id, Description: "sample " + string(k.typ) + " function " + filepath.Base(f),
				Artifact: task.Artifact{Type: k.typ, Location: f},
			})
			if err != nil {
				log.Warn("registering sample", "task", id, "err", err)
				continue
			}
			if created {
				log.Info("registered sample", "task", t.ID, "type", string(k.typ), "location", f)
			}
		}
	}
}

// Command wasmhttp is the benchmark's bare WASM baseline: an HTTP server that
// compiles one WASI module once and, per request, runs a fresh instance of
// it with the request body on standard input and standard output as the
// response. It does only the irreducible work of a WASM invocation.
//
// It listens on 127.0.0.1:0 (or -listen) and prints its address on the first
// line of standard output. GET /stream is not supported; POST / runs.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

func main() {
	module := flag.String("module", "", "WASI module to run per request")
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	flag.Parse()
	if err := run(*module, *listen); err != nil {
		log.Fatal(err)
	}
}

func run(module, listen string) error {
	ctx := context.Background()
	bin, err := os.ReadFile(module)
	if err != nil {
		return err
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(true))
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	cm, err := rt.CompileModule(ctx, bin)
	if err != nil {
		return fmt.Errorf("compile %s: %w", module, err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in := &bytes.Buffer{}
		if _, err := in.ReadFrom(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var out bytes.Buffer
		cfg := wazero.NewModuleConfig().WithName("").WithStdin(in).WithStdout(&out).WithArgs("fn")
		mod, err := rt.InstantiateModule(r.Context(), cm, cfg)
		if mod != nil {
			_ = mod.Close(context.Background())
		}
		if err != nil && !isExit0(err) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(out.Bytes())
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	return http.Serve(ln, h)
}

// isExit0 reports whether err is a WASI proc_exit(0).
func isExit0(err error) bool {
	type exitCoder interface{ ExitCode() uint32 }
	if e, ok := err.(exitCoder); ok {
		return e.ExitCode() == 0
	}
	return false
}

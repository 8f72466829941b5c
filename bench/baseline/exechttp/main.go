// Command exechttp is the benchmark's bare process baseline: an HTTP server
// that, per request, fork/execs one native binary with the request body on
// standard input and answers its standard output. It does only the
// irreducible work of a process invocation.
//
// POST / buffers the output; POST /stream flushes every read of the child's
// output to the client as it arrives (the streaming baseline).
//
// It listens on 127.0.0.1:0 (or -listen) and prints its address on the first
// line of standard output.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os/exec"
)

func main() {
	binary := flag.String("binary", "", "executable to run per request")
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	flag.Parse()
	if err := run(*binary, *listen); err != nil {
		log.Fatal(err)
	}
}

func run(binary, listen string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		cmd := exec.CommandContext(r.Context(), binary)
		cmd.Stdin = r.Body
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Run(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(out.Bytes())
	})
	mux.HandleFunc("POST /stream", func(w http.ResponseWriter, r *http.Request) {
		in, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		cmd := exec.CommandContext(r.Context(), binary)
		cmd.Stdin = bytes.NewReader(in)
		pipe, err := cmd.StdoutPipe()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err := cmd.Start(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fl := http.NewResponseController(w)
		buf := make([]byte, 32<<10)
		for {
			n, err := pipe.Read(buf)
			if n > 0 {
				_, _ = w.Write(buf[:n])
				_ = fl.Flush()
			}
			if err != nil {
				break
			}
		}
		_ = cmd.Wait()
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	return http.Serve(ln, mux)
}

// Command proxyhttp is the benchmark's warm-upstream baseline, the shape of
// OpenFaaS of-watchdog's http mode: a long-running Go HTTP function server
// (it echoes the request body) behind a net/http/httputil reverse proxy
// (the watchdog), both in this process, talking over loopback TCP. No
// process or instance is started per request: it is the floor of a
// platform that keeps functions warm behind a proxy.
//
// It listens on 127.0.0.1:0 (or -listen) and prints the proxy's address on
// the first line of standard output.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "the proxy's listen address")
	flag.Parse()
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		log.Fatal(http.Serve(up, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			_, _ = w.Write(b)
		})))
	}()
	target, err := url.Parse("http://" + up.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr().String())
	log.Fatal(http.Serve(ln, proxy))
}

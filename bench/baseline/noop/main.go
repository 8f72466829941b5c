// Command noop is the benchmark's bare RPC baseline: a grpc-go server (the
// RPC stack Spear uses) serving only the standard health service, whose
// Check is the no-op unary RPC that async acceptance is compared with.
//
// It listens on 127.0.0.1:0 (or -listen) and prints its address on the first
// line of standard output.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	fmt.Println(ln.Addr().String())
	log.Fatal(srv.Serve(ln))
}

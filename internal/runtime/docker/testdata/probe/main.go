// Command probe reports on the sandbox it runs in, for the docker runtime's
// tests. It is built as a static binary and run as a container's entry
// point with one argument:
//
//	cat     copies standard input to standard output
//	net     prints the names of the network interfaces, one a line
//	rootfs  tries to create /probe-write and prints "writable" or
//	        "read-only: <error>"
//	ignoreterm
//	        ignores SIGTERM, prints "ready" and sleeps forever
//	sandbox prints its uid and gid ("uid=U gid=G"), the CapEff, NoNewPrivs
//	        and Seccomp lines of /proc/self/status, and whether /tmp is
//	        writable ("tmp: writable" or "tmp: <error>")
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe cat|net|rootfs|ignoreterm")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "cat":
		if _, err := io.Copy(os.Stdout, os.Stdin); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "net":
		ifs, err := net.Interfaces()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, i := range ifs {
			fmt.Println(i.Name)
		}
	case "rootfs":
		if err := os.WriteFile("/probe-write", []byte("x"), 0o644); err != nil {
			fmt.Printf("read-only: %v\n", err)
			return
		}
		fmt.Println("writable")
	case "sandbox":
		sandbox()
	case "ignoreterm":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		for {
			time.Sleep(time.Hour)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown probe %q\n", os.Args[1])
		os.Exit(2)
	}
}

func sandbox() {
	fmt.Printf("uid=%d gid=%d\n", os.Getuid(), os.Getgid())
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, line := range strings.Split(string(status), "\n") {
		for _, key := range []string{"CapEff:", "NoNewPrivs:", "Seccomp:"} {
			if strings.HasPrefix(line, key) {
				fmt.Println(strings.Join(strings.Fields(line), " "))
			}
		}
	}
	if err := os.WriteFile("/tmp/probe", []byte("x"), 0o600); err != nil {
		fmt.Printf("tmp: %v\n", err)
		return
	}
	fmt.Println("tmp: writable")
}

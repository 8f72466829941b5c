// Command probe reports on the sandbox a WASI module runs in, for the wasm
// runtime's tests. It is built with GOOS=wasip1 GOARCH=wasm; $PROBE picks
// the report:
//
//	random  16 bytes of WASI random_get, in hex (what crypto/rand reads)
//	clock   the wall clock, in Unix nanoseconds
//	files   one line per attempt to reach a host file or leave the
//	        scratch directory ($SECRET is a host file's path), and
//	        whether /tmp is writable
package main

import (
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// randomGet is WASI's random source, imported directly (crypto/rand
// reads it too, at the cost of a much larger module).
//
//go:wasmimport wasi_snapshot_preview1 random_get
func randomGet(buf unsafe.Pointer, n uint32) uint32

func say(parts ...string) { os.Stdout.WriteString(strings.Join(parts, "") + "\n") }

func main() {
	switch os.Getenv("PROBE") {
	case "random":
		b := make([]byte, 16)
		if errno := randomGet(unsafe.Pointer(&b[0]), uint32(len(b))); errno != 0 {
			os.Exit(1)
		}
		say(hex.EncodeToString(b))
	case "clock":
		say(strconv.FormatInt(time.Now().UnixNano(), 10))
	case "files":
		files(os.Getenv("SECRET"))
	default:
		os.Stderr.WriteString("PROBE: random, clock or files\n")
		os.Exit(2)
	}
}

func files(secret string) {
	read := func(name, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			say(name, ": refused: ", err.Error())
			return
		}
		say(name, ": READ ", strconv.Quote(string(b)))
	}
	read("secret", secret)
	read("secret-relative", strings.Repeat("../", 16)+strings.TrimPrefix(secret, "/"))
	read("passwd", "/etc/passwd")
	up := strings.Repeat("../", 16) + strings.TrimPrefix(secret, "/")
	if err := os.Symlink(up, "/escape"); err != nil {
		say("symlink: refused: ", err.Error())
	} else {
		read("symlink", "/escape")
	}
	if err := os.Symlink("tmp", "/tmp-link"); err != nil {
		say("symlink-inside: refused: ", err.Error())
	} else {
		say("symlink-inside: MADE")
	}
	if err := os.Link("/tmp", "/tmp-hard"); err != nil {
		say("link: refused: ", err.Error())
	} else {
		say("link: MADE")
	}
	entries, _ := os.ReadDir("/")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	say("root: ", strings.Join(names, ","))
	if err := os.WriteFile("/tmp/scratch", []byte("mine"), 0o600); err != nil {
		say("tmp: ", err.Error())
		return
	}
	b, err := os.ReadFile("/tmp/scratch")
	if err != nil {
		say("tmp: ", err.Error())
		return
	}
	say("tmp: ", string(b))
}

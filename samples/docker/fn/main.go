// Command fn is the sample container function: it upper-cases its input
// ("upper", the default) or echoes it ("echo"), chosen by its first
// argument (the invocation's function_name).
package main

import (
	"bytes"
	"io"
	"os"
)

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		os.Stderr.WriteString("reading input: " + err.Error() + "\n")
		os.Exit(1)
	}
	if len(os.Args) > 1 && os.Args[1] == "echo" {
		os.Stdout.Write(in)
		return
	}
	os.Stdout.Write(bytes.ToUpper(in))
}

package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"

	"github.com/spf13/cobra"

	"github.com/spear-go/spear/api/spearlet"
)

// fetchOutput writes an execution's whole output to w by attaching to it
// (StreamFunction with its id): the output arrives in chunks well under a
// client's default message limit, whatever its size. It follows a running
// execution to its end and checks the bytes against want (the sha256 the
// node reported) when given. It returns the final message.
func (a *app) fetchOutput(ctx context.Context, id, want string, w io.Writer) (*spearlet.StreamExecutionResult, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	stream, err := c.StreamFunction(ctx, &spearlet.InvokeFunctionRequest{Context: &spearlet.ExecutionContext{ExecutionId: id}})
	if err != nil {
		return nil, newRPCError(err, nil)
	}
	sum := sha256.New()
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, failf("the output of %s ended without a final status", id)
		}
		if err != nil {
			return nil, newRPCError(err, stream.Trailer())
		}
		data, err := spearlet.AnyBytes(msg.GetChunkData())
		if err != nil {
			return nil, err
		}
		sum.Write(data)
		if err := writeFlush(w, data); err != nil {
			return nil, err
		}
		if !msg.GetIsFinal() {
			continue
		}
		if got := hex.EncodeToString(sum.Sum(nil)); want != "" && got != want {
			return nil, failf("the output of %s has sha256 %s, the node reported %s: fetch it again", id, got, want)
		}
		return msg, nil
	}
}

// writeOutput writes a finished execution's output: the result's bytes,
// or, when they are only the first part, the whole output fetched.
func (a *app) writeOutput(ctx context.Context, id string, res *spearlet.ExecutionResult, w io.Writer) error {
	if res.GetOutputPartial() {
		_, err := a.fetchOutput(ctx, id, res.GetOutputSha256(), w)
		return err
	}
	out, err := spearlet.AnyBytes(res.GetResult())
	if err != nil {
		return err
	}
	return writeFlush(w, out)
}

func (a *execCommands) newExecOutputCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "output ID",
		Short: "Write an execution's whole output to stdout",
		Long: `Write an execution's whole output, raw, to stdout, whatever its size
(spear exec output ID > file). A running execution is followed to its end.

` + exitCodesHelp(),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			// An unknown id would read as a new invocation to attach to.
			st, err := call(cmd.Context(), a.timeout, c.GetExecutionStatus, &spearlet.GetExecutionStatusRequest{ExecutionId: args[0]})
			if err != nil {
				return err
			}
			if !st.GetFound() {
				return executionNotFound(args[0], st.GetMessage())
			}
			var final *spearlet.StreamExecutionResult
			err = a.writeRaw(func(w io.Writer) (err error) {
				final, err = a.fetchOutput(cmd.Context(), args[0], "", w)
				return err
			})
			if err != nil {
				return err
			}
			return a.ended(args[0], final.GetStatus(), final.GetErrorCode(), final.GetErrorMessage())
		},
	}
}

// indentWriter prefixes every line written through it with two spaces. It
// buffers (a line is two small writes); writeFlush flushes it after each
// piece of output, and end at the end.
type indentWriter struct {
	w       *bufio.Writer
	midLine bool
}

func newIndentWriter(w io.Writer) *indentWriter {
	return &indentWriter{w: bufio.NewWriterSize(w, 64<<10)}
}

func (iw *indentWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if !iw.midLine {
			if _, err := iw.w.WriteString("  "); err != nil {
				return n, err
			}
			iw.midLine = true
		}
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, iw.midLine = p[:i+1], false
		}
		if _, err := iw.w.Write(line); err != nil {
			return n, err
		}
		n += len(line)
		p = p[len(line):]
	}
	return n, nil
}

// Flush writes what is buffered.
func (iw *indentWriter) Flush() error { return iw.w.Flush() }

// end finishes an unterminated last line and flushes.
func (iw *indentWriter) end() error {
	if iw.midLine {
		_, _ = iw.w.WriteString("\n")
		iw.midLine = false
	}
	return iw.w.Flush()
}

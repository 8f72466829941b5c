package process

// The child's standard streams: pipes whose child ends are handed to the
// child, output read in readBufSize reads and passed on as they come, input
// written at once when small or copied by a goroutine.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/spear-go/spear/internal/errdefs"
)

// pipes are the standard streams of a run. The child's ends are closed in
// this process once the child has started; ours are closed when the output
// is drained.
type pipes struct {
	child      []*os.File
	outR, errR *os.File
	// inW is our end of stdin while input is left to give; nil without
	// input, or once it was written whole (see feed).
	inW *os.File
}

// openPipes creates the pipes of cmd's standard streams, stdin's too when
// stdin is set (our end is kept for feed); otherwise os/exec connects stdin
// to /dev/null. Errors wrap errdefs.ErrInternal.
func openPipes(cmd *exec.Cmd, stdin bool) (*pipes, error) {
	p := &pipes{}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, pipeError("stdout", err)
	}
	p.outR, p.child = outR, append(p.child, outW)
	errR, errW, err := os.Pipe()
	if err != nil {
		p.closeAll()
		return nil, pipeError("stderr", err)
	}
	p.errR, p.child = errR, append(p.child, errW)
	cmd.Stdout, cmd.Stderr = outW, errW
	if !stdin {
		return p, nil
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		p.closeAll()
		return nil, pipeError("stdin", err)
	}
	p.child = append(p.child, inR)
	cmd.Stdin, p.inW = inR, inW
	return p, nil
}

// feed gives the child its input: none (stdin closed at once), or input
// that fits in an empty pipe written now, whole, and the pipe closed (no
// copier goroutine for the usual small input); any other input is left in
// p.inW for copyInput.
func (p *pipes) feed(input io.Reader) error {
	var b []byte
	if input != nil {
		var small bool
		if b, small = smallInput(input); !small {
			return nil
		}
	}
	_, err := p.inW.Write(b)
	_ = p.inW.Close()
	p.inW = nil
	if err != nil {
		return fmt.Errorf("process: writing stdin: %w: %w", errdefs.ErrInternal, err)
	}
	return nil
}

func pipeError(stream string, err error) error {
	return fmt.Errorf("process: %s pipe: %w: %w", stream, errdefs.ErrInternal, err)
}

// closeChildEnds closes the child's ends, once it has them.
func (p *pipes) closeChildEnds() {
	for _, f := range p.child {
		_ = f.Close()
	}
}

// closeOurEnds closes our ends of every pipe.
func (p *pipes) closeOurEnds() {
	p.closeOutput()
	p.closeInput()
}

func (p *pipes) closeAll() {
	p.closeChildEnds()
	p.closeOurEnds()
}

// closeOutput closes our ends of stdout and stderr, which ends their
// readers.
func (p *pipes) closeOutput() {
	_ = p.outR.Close()
	if p.errR != nil {
		_ = p.errR.Close()
	}
}

// closeInput closes our end of stdin, if input is copied.
func (p *pipes) closeInput() {
	if p.inW != nil {
		_ = p.inW.Close()
	}
}

// copyInput copies in to the child's stdin and closes it. It returns only
// the errors that say more than that the child did not read all of it.
func (p *pipes) copyInput(in io.Reader) error {
	defer p.closeInput()
	if _, err := io.Copy(p.inW, in); err != nil && !ignorableStdinError(err) {
		return err
	}
	return nil
}

// smallInput returns the bytes of an in-memory input that can be written
// at once.
func smallInput(r io.Reader) ([]byte, bool) {
	switch r.(type) {
	case *bytes.Reader, *strings.Reader, *bytes.Buffer:
	default:
		return nil, false
	}
	n := r.(interface{ Len() int }).Len()
	if n > smallInputMax {
		return nil, false
	}
	b := make([]byte, n)
	n, _ = io.ReadFull(r, b)
	return b[:n], true
}

// pump copies r to w, one Write per read, until EOF or until r is closed.
// After a Write fails it keeps reading (so the child never blocks on a full
// pipe) but discards, and returns the first write error.
func pump(bufs *sync.Pool, r *os.File, w io.Writer) error {
	bp, _ := bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, readBufSize)
		bp = &b
	}
	defer bufs.Put(bp)
	buf := *bp
	var werr error
	for {
		n, err := r.Read(buf)
		if n > 0 && werr == nil {
			if _, e := w.Write(buf[:n]); e != nil {
				werr = e
			}
		}
		if err != nil {
			// io.EOF, or os.ErrClosed after a drain timeout.
			return werr
		}
	}
}

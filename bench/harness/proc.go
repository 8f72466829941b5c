package harness

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
)

// child is a process the benchmark started: a baseline server or a node.
// It runs in its own process group, killed as a whole.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	tail bytes.Buffer // last output, for error messages
}

// procs tracks every child so that cleanup kills all of them.
type procs struct {
	mu   sync.Mutex
	live map[*child]bool
}

// start runs bin with args and waits until a line of its output (stdout or
// stderr) matches ready; it returns the child and the first submatch.
func (p *procs) start(ctx context.Context, name string, ready *regexp.Regexp, bin string, args ...string) (*child, string, error) {
	c := &child{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.cmd.Env = os.Environ()
	pr, pw := io.Pipe()
	c.cmd.Stdout, c.cmd.Stderr = pw, pw
	if err := c.cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s: %w: %w", name, errdefs.ErrUnavailable, err)
	}
	p.mu.Lock()
	if p.live == nil {
		p.live = map[*child]bool{}
	}
	p.live[c] = true
	p.mu.Unlock()
	go func() {
		_ = c.cmd.Wait()
		_ = pw.Close()
		close(c.done)
	}()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			if c.tail.Len() > 8<<10 {
				c.tail.Reset()
			}
			c.tail.WriteString(line + "\n")
			c.mu.Unlock()
			if !sent {
				if m := ready.FindStringSubmatch(line); m != nil {
					sent = true
					found <- m[len(m)-1]
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case v := <-found:
		return c, v, nil
	case <-c.done:
		return nil, "", fmt.Errorf("%s exited before it was ready: %w: %s", name, errdefs.ErrUnavailable, c.output())
	case <-time.After(60 * time.Second):
		p.kill(c)
		return nil, "", fmt.Errorf("%s not ready after 60s: %w: %s", name, errdefs.ErrUnavailable, c.output())
	case <-ctx.Done():
		p.kill(c)
		return nil, "", ctx.Err()
	}
}

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := strings.TrimSpace(c.tail.String())
	if len(s) > 600 {
		s = s[len(s)-600:]
	}
	return s
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// stop sends SIGTERM to the child's group and waits up to grace before
// killing it.
func (p *procs) stop(c *child, grace time.Duration) {
	if c == nil {
		return
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
	}
	p.kill(c)
}

// kill kills the child's group and waits for it.
func (p *procs) kill(c *child) {
	if c == nil {
		return
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.done
	p.mu.Lock()
	delete(p.live, c)
	p.mu.Unlock()
}

// killAll kills every child still running.
func (p *procs) killAll() {
	p.mu.Lock()
	var cs []*child
	for c := range p.live {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	for _, c := range cs {
		p.kill(c)
	}
}

// rssBytes is the resident set size of process pid (VmRSS).
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d: %w", pid, errdefs.ErrNotFound)
}

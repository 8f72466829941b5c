package executor

import (
	"bytes"
	"strings"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/execution"
)

// outputSink collects a function's standard output up to a limit, passes
// each chunk on as it arrives, and lets watchers attach: they get the
// chunks so far, then the new ones, each exactly once and in order.
type outputSink struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	ends     []int // end offset in buf of each chunk
	limit    int64
	onChunk  func([]byte) // may be nil
	overflow func()       // called once when the limit is passed
	over     bool
	closed   bool
	watchers map[chan Chunk]struct{}
}

// watcherBuffer is how far a watcher may fall behind before it is dropped.
const watcherBuffer = 1024

func (o *outputSink) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.over {
		return len(p), nil
	}
	if int64(o.buf.Len()+len(p)) > o.limit {
		o.over = true
		o.overflow()
		return len(p), nil
	}
	o.buf.Write(p)
	o.ends = append(o.ends, o.buf.Len())
	if o.onChunk != nil {
		o.onChunk(p)
	}
	if len(o.watchers) > 0 {
		c := Chunk{Seq: int64(len(o.ends) - 1), Data: bytes.Clone(p)}
		for w := range o.watchers {
			select {
			case w <- c:
			default: // too slow: drop it rather than stall the function
				delete(o.watchers, w)
				close(w)
			}
		}
	}
	return len(p), nil
}

// chunk returns chunk i.
func (o *outputSink) chunk(i int) []byte {
	start := 0
	if i > 0 {
		start = o.ends[i-1]
	}
	return bytes.Clone(o.buf.Bytes()[start:o.ends[i]])
}

// watch returns the chunks so far and, unless the output is complete, a
// channel of the following ones, closed at the end (or when the watcher
// falls too far behind: then fewer chunks than the total arrive).
func (o *outputSink) watch() ([]Chunk, chan Chunk) {
	o.mu.Lock()
	defer o.mu.Unlock()
	past := make([]Chunk, len(o.ends))
	for i := range o.ends {
		past[i] = Chunk{Seq: int64(i), Data: o.chunk(i)}
	}
	if o.closed {
		return past, nil
	}
	w := make(chan Chunk, watcherBuffer)
	if o.watchers == nil {
		o.watchers = map[chan Chunk]struct{}{}
	}
	o.watchers[w] = struct{}{}
	return past, w
}

func (o *outputSink) unwatch(w chan Chunk) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.watchers[w]; ok {
		delete(o.watchers, w)
		close(w)
	}
}

// close ends the output: watchers' channels are closed.
func (o *outputSink) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	for w := range o.watchers {
		close(w)
	}
	o.watchers = nil
}

func (o *outputSink) bytes() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return bytes.Clone(o.buf.Bytes())
}

func (o *outputSink) count() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return int64(len(o.ends))
}

// logSink splits standard error into timestamped lines, keeping the last
// ones within a byte budget.
type logSink struct {
	mu      sync.Mutex
	now     func() time.Time
	partial []byte
	lines   []execution.LogLine
	size    int
	limit   int
	dropped int
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.add(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	if len(l.partial) > l.limit { // one endless line
		l.add(string(l.partial))
		l.partial = nil
	}
	return len(p), nil
}

func (l *logSink) add(line string) {
	line = strings.ToValidUTF8(line, "\uFFFD")
	l.lines = append(l.lines, execution.LogLine{Time: l.now(), Line: line})
	l.size += len(line)
	for l.size > l.limit && len(l.lines) > 1 {
		l.size -= len(l.lines[0].Line)
		l.lines = l.lines[1:]
		l.dropped++
	}
}

// result returns the kept lines, flushing an unterminated last line.
func (l *logSink) result() []execution.LogLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.add(string(l.partial))
		l.partial = nil
	}
	return append([]execution.LogLine(nil), l.lines...)
}

// tail returns the end of the kept log, at most n bytes, for error
// messages.
func tail(lines []execution.LogLine, n int) string {
	start, size := len(lines), 0
	for start > 0 && size+len(lines[start-1].Line)+1 <= n {
		start--
		size += len(lines[start].Line) + 1
	}
	if start == len(lines) && start > 0 { // the last line alone is too long
		s := lines[start-1].Line
		return strings.ToValidUTF8(s[len(s)-n:], "")
	}
	parts := make([]string, 0, len(lines)-start)
	for _, l := range lines[start:] {
		parts = append(parts, l.Line)
	}
	return strings.Join(parts, "\n")
}

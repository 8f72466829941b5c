package executor

import (
	"bytes"
	"strings"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/execution"
)

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

// Package procstat reads resource use from the operating system (Linux
// /proc): the node's resident memory and CPU time, the machine's memory, and
// a process's peak memory and parent. It is the one reader of /proc status
// files in Spear.
package procstat

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RSS returns the process's resident set size in bytes.
func RSS() (int64, error) { return statusField("/proc/self/status", "VmRSS:") }

// RecentRSS reads RSS at most once per MaxAge and answers the last
// reading in between: reading /proc/self/status costs tens of
// microseconds, more than a health probe should. The zero value reads on
// every call.
type RecentRSS struct {
	MaxAge time.Duration

	mu  sync.Mutex
	at  time.Time
	rss int64
}

// Get returns the resident set size in bytes, at most MaxAge old.
func (r *RecentRSS) Get() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.at.IsZero() || time.Since(r.at) >= r.MaxAge {
		if rss, err := RSS(); err == nil {
			r.rss, r.at = rss, time.Now()
		}
	}
	return r.rss
}

// MemTotal returns the machine's memory in bytes.
func MemTotal() (int64, error) { return statusField("/proc/meminfo", "MemTotal:") }

// PeakRSS returns the peak resident set size (VmHWM) of process pid in
// bytes. It fails once the process has exited.
func PeakRSS(pid int) (int64, error) {
	return statusField("/proc/"+strconv.Itoa(pid)+"/status", "VmHWM:")
}

// statusField reads the "key value kB" line of a /proc status-style file
// (status, meminfo) as bytes.
func statusField(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, key); ok {
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				break
			}
			kb, err := strconv.ParseInt(fields[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, key)
}

// OpenFDs counts the process's open file descriptors.
func OpenFDs() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

// statFields returns the fields of a /proc/<pid>/stat file after the
// command name (which is in parentheses and may hold anything): the
// state is f[0], the parent pid f[1].
func statFields(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("%s: unexpected format", path)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// ParentPID returns the parent of process pid (0 for a process without
// one, such as init).
func ParentPID(pid int) (int, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	f, err := statFields(path)
	if err != nil {
		return 0, err
	}
	if len(f) < 2 {
		return 0, fmt.Errorf("%s: too few fields", path)
	}
	return strconv.Atoi(f[1])
}

// cpuTime returns the process's user+system CPU time.
func cpuTime() (time.Duration, error) {
	f, err := statFields("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/self/stat: too few fields")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/self/stat: bad cpu times")
	}
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clkTck, nil
}

// CPU measures the process's CPU use between successive calls.
type CPU struct {
	mu       sync.Mutex
	lastAt   time.Time
	lastUsed time.Duration
	cores    int
}

// NewCPU starts measuring; cores is the number of CPUs the percentage is
// relative to (100% = all cores busy).
func NewCPU(cores int) *CPU {
	used, _ := cpuTime()
	return &CPU{lastAt: time.Now(), lastUsed: used, cores: max(cores, 1)}
}

// Percent returns the CPU use since the previous call (or since NewCPU), in
// percent of all cores. Calls closer than 100 ms apart return the previous
// window's figure over a longer window.
func (c *CPU) Percent() (float64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	used, err := cpuTime()
	if err != nil {
		return 0, err
	}
	now := time.Now()
	elapsed := now.Sub(c.lastAt)
	if elapsed <= 0 {
		return 0, nil
	}
	pct := float64(used-c.lastUsed) / float64(elapsed) / float64(c.cores) * 100
	if elapsed >= 100*time.Millisecond {
		c.lastAt, c.lastUsed = now, used
	}
	return pct, nil
}

package process

import (
	"os"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/procstat"
)

// peakSampler samples a child's peak RSS (VmHWM) every memSampleInterval,
// from the first interval on: most functions end before it and cost
// nothing. It stands in for a memory cgroup's exact peak (see Run). A nil
// *peakSampler samples nothing.
type peakSampler struct {
	pid int
	// mu is held while sampling, so that stop waits for a sample under
	// way.
	mu      sync.Mutex
	stopped bool
	timer   *time.Timer
	peak    int64
}

// samplePeak starts sampling process pid.
func samplePeak(pid int) *peakSampler {
	s := &peakSampler{pid: pid}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer = time.AfterFunc(memSampleInterval, s.sample)
	return s
}

func (s *peakSampler) sample() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if v, err := procstat.PeakRSS(s.pid); err == nil && v > s.peak {
		s.peak = v
	}
	s.timer.Reset(memSampleInterval)
}

// stop ends the sampling; no sample is taken once it returns.
func (s *peakSampler) stop() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	s.timer.Stop()
}

// max returns the largest sample, 0 when none was taken.
func (s *peakSampler) max() int64 {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// nodePeak returns the node's own peak RSS (VmHWM), refreshed at most once
// a second (it only grows), or at once when the cached value is below
// floor (it may be stale: the node grew since it was read).
func (r *Runtime) nodePeak(floor int64) int64 {
	r.peakMu.Lock()
	defer r.peakMu.Unlock()
	if time.Since(r.peakReadAt) > time.Second || r.peak < floor {
		r.peak, _ = procstat.PeakRSS(os.Getpid())
		r.peakReadAt = time.Now()
	}
	return r.peak
}

package harness

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// round is what one burst of load measured.
type round struct {
	lat      []time.Duration // of successful requests
	errs     int
	firstErr error
	elapsed  time.Duration
}

func (r round) p(q float64) time.Duration { return quantile(r.lat, q) }

func (r round) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(len(r.lat)) / r.elapsed.Seconds()
}

// quantile returns the q-quantile (nearest rank) of ds; it sorts ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// call is one request of a load generator; worker numbers the goroutine.
type call func(ctx context.Context, worker int) error

type latencyKey struct{}

// reportLatency tells drive the latency to record for the call running
// with ctx, when it is not the call's duration (a stream's first chunk).
func reportLatency(ctx context.Context, d time.Duration) {
	if p, ok := ctx.Value(latencyKey{}).(*time.Duration); ok {
		*p = d
	}
}

// drive runs conc goroutines calling fn back to back until dur has passed
// or count requests were issued (whichever is set; count wins when both
// are), and records each request's latency.
func drive(ctx context.Context, conc int, dur time.Duration, count int, fn call) round {
	var (
		mu     sync.Mutex
		out    round
		issued atomic.Int64
		wg     sync.WaitGroup
	)
	deadline := time.Now().Add(dur)
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			var errs int
			var firstErr error
			for ctx.Err() == nil {
				if count > 0 {
					if issued.Add(1) > int64(count) {
						break
					}
				} else if time.Now().After(deadline) {
					break
				}
				var own time.Duration
				t0 := time.Now()
				err := fn(context.WithValue(ctx, latencyKey{}, &own), w)
				d := time.Since(t0)
				if own > 0 { // the call measured what the row is about
					d = own
				}
				if err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
					if errs > 50 && len(lat) == 0 {
						break // it is not going to work
					}
					continue
				}
				lat = append(lat, d)
			}
			mu.Lock()
			out.lat = append(out.lat, lat...)
			out.errs += errs
			if out.firstErr == nil {
				out.firstErr = firstErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	return out
}

// side is one of the things compared in interleaved rounds.
type side struct {
	name string
	run  func(ctx context.Context) round
}

// interleave runs the sides in turn (A B A B ...) for rounds rounds and
// returns each side's rounds.
func interleave(ctx context.Context, rounds int, sides ...side) [][]round {
	out := make([][]round, len(sides))
	for range rounds {
		for i, s := range sides {
			if ctx.Err() != nil {
				return out
			}
			out[i] = append(out[i], s.run(ctx))
		}
	}
	return out
}

// summarize returns the medians over rounds of the per-round p50, p99 and
// throughput, the total error count and the first error.
func summarize(rs []round) (*Stat, int, error) {
	var p50, p99 []time.Duration
	var rates []float64
	errs, n := 0, 0
	var first error
	for _, r := range rs {
		errs += r.errs
		if first == nil {
			first = r.firstErr
		}
		if len(r.lat) == 0 {
			continue
		}
		n += len(r.lat)
		p50 = append(p50, r.p(0.50))
		p99 = append(p99, r.p(0.99))
		rates = append(rates, r.rate())
	}
	if len(p50) == 0 {
		return nil, errs, first
	}
	return &Stat{
		P50ms:   ms(quantile(p50, 0.5)),
		P99ms:   ms(quantile(p99, 0.5)),
		PerSec:  medianF(rates),
		Samples: n,
	}, errs, first
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func medianF(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

package loadgen

import (
	"math"
	"slices"
	"time"
)

// recorder collects what one worker saw: the latency of every step of its
// flows, and its errors by kind. Each worker has its own, merged at the end,
// so recording takes no lock.
type recorder struct {
	steps   map[string][]time.Duration
	errors  map[string]int
	example map[string]string // the first error message of each kind
}

func newRecorder() *recorder {
	return &recorder{steps: map[string][]time.Duration{}, errors: map[string]int{}, example: map[string]string{}}
}

func (r *recorder) add(step string, d time.Duration) { r.steps[step] = append(r.steps[step], d) }

func (r *recorder) fail(e *flowError) {
	r.errors[e.Kind]++
	if _, ok := r.example[e.Kind]; !ok {
		r.example[e.Kind] = e.Error()
	}
}

func (r *recorder) merge(o *recorder) {
	for k, v := range o.steps {
		r.steps[k] = append(r.steps[k], v...)
	}
	for k, n := range o.errors {
		r.errors[k] += n
	}
	for k, v := range o.example {
		if _, ok := r.example[k]; !ok {
			r.example[k] = v
		}
	}
}

// Latency summarises one step's durations, in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// summarize computes the nearest-rank percentiles of ds (sorted in place).
func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	return Latency{Count: len(ds), P50: ms(percentile(ds, 50)), P90: ms(percentile(ds, 90)),
		P99: ms(percentile(ds, 99)), Max: ms(ds[len(ds)-1])}
}

// percentile is the nearest-rank p-th percentile of sorted ds: the smallest
// value with at least p % of the values at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }

func (r *recorder) latencies() map[string]Latency {
	out := make(map[string]Latency, len(r.steps))
	for k, ds := range r.steps {
		out[k] = summarize(ds)
	}
	return out
}

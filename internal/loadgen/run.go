package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of a run.
const (
	DefaultTimeout   = 5 * time.Minute
	DefaultStatsWait = 11 * time.Second
)

// errTimeout is the cause of a run cut short by Config.Timeout.
var errTimeout = errors.New("loadgen: timeout")

// Run runs cfg: the warm-up flows (discarded), a wait for PostgreSQL's
// counters to settle, the measured flows with the counters and the server's
// CPU time read around them, another wait, and the summary. It stops early
// when ctx ends (Ctrl-C) or cfg.Timeout passes, and then returns what it has
// with Summary.Stopped set. Its error is for a run that could not be made or
// measured.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.PingWait <= 0 {
		cfg.PingWait = DefaultPingWait
	}
	runCtx, cancel := context.WithTimeoutCause(ctx, cfg.Timeout, errTimeout)
	defer cancel()
	r := &runner{cfg: cfg, http: newHTTPClient(cfg.Concurrency)}
	defer r.http.CloseIdleConnections()

	s := &Summary{Scenario: cfg.Scenario, Concurrency: cfg.Concurrency, Agents: len(cfg.Agents), Users: len(cfg.Users),
		Warmup: cfg.Warmup, Errors: map[string]int{}, Endpoints: map[string]Latency{}, ErrorExamples: map[string]string{}}
	if cfg.Scenario == Human {
		s.Delivery = cfg.Delivery
	}

	warm, _ := r.phase(runCtx, "warm-up", 0, cfg.Warmup)
	s.WarmupErrors = warm.errors
	if s.Stopped = stopCause(runCtx); s.Stopped != "" {
		return s, nil
	}
	sleep(runCtx, cfg.StatsWait)
	if s.Stopped = stopCause(runCtx); s.Stopped != "" {
		return s, nil
	}

	var dbStart DBSample
	var cpuStart time.Duration
	var err error
	if cfg.DB != nil {
		if dbStart, err = cfg.DB.Sample(runCtx); err != nil {
			if s.Stopped = stopCause(runCtx); s.Stopped != "" {
				return s, nil
			}
			return nil, err
		}
	}
	if cfg.ServerPID != 0 {
		if cpuStart, err = ProcessCPU(cfg.ServerPID); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	rec, flows := r.phase(runCtx, "measure", cfg.Warmup, cfg.Flows)
	elapsed := time.Since(start)
	if cfg.ServerPID != 0 {
		cpuEnd, err := ProcessCPU(cfg.ServerPID)
		if err != nil {
			return nil, err
		}
		if flows > 0 {
			s.ServerCPUMsPerFlow = perFlow(float64(cpuEnd-cpuStart)/float64(time.Millisecond), flows)
		}
	}
	s.Stopped = stopCause(runCtx)
	if s.Stopped == "" {
		sleep(runCtx, cfg.StatsWait)
		// Stopped while waiting: the flows are all there, the counters
		// maybe not.
		s.Stopped = stopCause(runCtx)
	}
	if cfg.DB != nil {
		// Read even after Ctrl-C: what it has is printed.
		endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		dbEnd, err := cfg.DB.Sample(endCtx)
		cancel()
		if err != nil {
			return nil, err
		}
		s.DB = dbSummary(dbStart, dbEnd, flows, cfg.DB.StatementsUnavailable())
	}

	s.Flows = flows
	s.Seconds = math.Round(elapsed.Seconds()*1000) / 1000
	if elapsed > 0 {
		s.FlowsPerSecond = math.Round(float64(flows)/elapsed.Seconds()*10) / 10
	}
	s.Endpoints = rec.latencies()
	s.Errors, s.ErrorExamples = rec.errors, rec.example
	return s, nil
}

func (c *Config) check() error {
	if _, err := CheckURL(c.BaseURL); err != nil {
		return err
	}
	switch {
	case c.Concurrency < 1:
		return errors.New("loadgen: concurrency must be at least 1")
	case c.Flows < 1:
		return errors.New("loadgen: flows must be at least 1")
	case c.Warmup < 0:
		return errors.New("loadgen: warm-up must not be negative")
	case c.StatsWait < 0:
		return errors.New("loadgen: stats wait must not be negative")
	case len(c.Agents) == 0 || len(c.Users) == 0:
		return errors.New("loadgen: a run needs at least one agent and one user")
	case c.Audience == "":
		return errors.New("loadgen: a run needs the resource server's audience")
	case c.Scenario == AutoRedeem && c.RS.ID == "":
		return errors.New("loadgen: auto-redeem needs the resource server's credentials")
	case c.Scenario == Human && c.Review == nil:
		return errors.New("loadgen: the human scenario needs a reviewer")
	case c.Scenario == Human && c.Delivery == DeliveryPing && c.Pings == nil:
		return errors.New("loadgen: ping delivery needs a ping receiver")
	case c.Scenario == Human && c.Delivery != DeliveryPoll && c.Delivery != DeliveryPing:
		return fmt.Errorf("loadgen: delivery must be poll or ping, not %q", c.Delivery)
	}
	if _, err := ParseScenario(string(c.Scenario)); err != nil {
		return err
	}
	return nil
}

// phase runs n flows, numbered from first, cfg.Concurrency at a time, and
// returns what they recorded and how many succeeded. Flows cut off by ctx
// count neither way.
func (r *runner) phase(ctx context.Context, name string, first, n int) (*recorder, int) {
	var next, done, failed atomic.Int64
	recs := make([]*recorder, r.cfg.Concurrency)
	var wg sync.WaitGroup
	for w := range recs {
		recs[w] = newRecorder()
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				switch err := r.flow(ctx, first+i, recs[w]); {
				case err == nil:
					done.Add(1)
				case err == errStopped:
				default:
					recs[w].fail(err)
					failed.Add(1)
				}
			}
		})
	}
	if r.cfg.Progress != nil && n > 0 {
		start := time.Now()
		report := func() {
			r.cfg.Progress(Progress{Phase: name, Done: int(done.Load() + failed.Load()), Total: n,
				Errors: int(failed.Load()), Elapsed: time.Since(start)})
		}
		finished := make(chan struct{})
		ticking := make(chan struct{})
		go func() {
			defer close(ticking)
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-finished:
					report()
					return
				case <-t.C:
					report()
				}
			}
		}()
		wg.Wait()
		close(finished)
		<-ticking
	} else {
		wg.Wait()
	}
	all := newRecorder()
	for _, rec := range recs {
		all.merge(rec)
	}
	return all, int(done.Load())
}

// stopCause says why ctx ended: "timeout", "interrupted", or "" while it
// has not.
func stopCause(ctx context.Context) string {
	switch {
	case ctx.Err() == nil:
		return ""
	case errors.Is(context.Cause(ctx), errTimeout):
		return "timeout"
	}
	return "interrupted"
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

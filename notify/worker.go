package notify

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/approvals"
)

// Defaults of a Worker.
const (
	DefaultLease        = 30 * time.Second
	DefaultPollInterval = time.Second
	DefaultTimeout      = 10 * time.Second
	DefaultBackoffBase  = time.Second
	DefaultBackoffCap   = time.Minute
	DefaultConcurrency  = 32
	DefaultPerTarget    = 2
)

// Config configures a Worker.
type Config struct {
	DB *sqlx.DB
	// AuthReqID turns a request id into its auth_req_id for the ping body
	// (approvals.Service.AuthReqID).
	AuthReqID func(requestID string) (string, error)
	Policy    Policy
	Resolver  Resolver       // nil: net.DefaultResolver
	RootCAs   *x509.CertPool // nil: the system's roots
	// Lease is how long a claimed row is held before another worker may take
	// it; a send is cut off at half of it, so two workers never send one row
	// at the same time.
	Lease        time.Duration
	PollInterval time.Duration // how often to look for due rows
	Timeout      time.Duration // per attempt
	BackoffBase  time.Duration // the first retry waits up to this long
	BackoffCap   time.Duration // and no retry longer than this
	Concurrency  int           // rows sent at once
	PerTarget    int           // rows sent at once to one target (URL)
	Logger       *slog.Logger
	// Metrics, when set, receives delivery results and the outbox depth.
	Metrics prometheus.Registerer
	// VAPID and Subscriber sign Web Push messages (RFC 8292): the keys, and
	// the contact URI of the VAPID JWT's sub claim (the issuer URL, say).
	// Without VAPID, push rows are dropped.
	VAPID      VAPID
	Subscriber string
}

// Worker delivers outbox rows. Every replica runs one.
type Worker struct {
	db          *sqlx.DB
	authReqID   func(string) (string, error)
	policy      Policy
	client      *http.Client
	lease       time.Duration
	poll        time.Duration
	timeout     time.Duration
	base, cap   time.Duration
	concurrency int
	perTarget   int
	wake        chan struct{}
	logger      *slog.Logger
	vapid       VAPID
	subscriber  string
	rnd         func(n int64) int64 // [0, n): the jitter
	results     *prometheus.CounterVec
}

// NewWorker returns a worker; Run starts it.
func NewWorker(cfg Config) (*Worker, error) {
	if cfg.DB == nil || cfg.AuthReqID == nil {
		return nil, errors.New("notify: a worker needs a database and an auth_req_id function")
	}
	w := &Worker{db: cfg.DB, authReqID: cfg.AuthReqID, policy: cfg.Policy,
		lease: orDefault(cfg.Lease, DefaultLease), poll: orDefault(cfg.PollInterval, DefaultPollInterval),
		timeout: orDefault(cfg.Timeout, DefaultTimeout), base: orDefault(cfg.BackoffBase, DefaultBackoffBase),
		cap: orDefault(cfg.BackoffCap, DefaultBackoffCap), concurrency: cfg.Concurrency, perTarget: cfg.PerTarget,
		wake: make(chan struct{}, 1), logger: cfg.Logger, vapid: cfg.VAPID, subscriber: cfg.Subscriber, rnd: rand.Int64N}
	w.lease = leaseOverride(w.lease)
	if w.concurrency <= 0 {
		w.concurrency = DefaultConcurrency
	}
	if w.perTarget <= 0 {
		w.perTarget = min(DefaultPerTarget, w.concurrency)
	}
	if w.logger == nil {
		w.logger = slog.New(slog.DiscardHandler)
	}
	// A send must end well within the lease, or the row could be claimed
	// again while it is still being sent.
	w.timeout = min(w.timeout, w.lease/2)
	// CIBA §10.2: "The OP MUST NOT follow redirects." The client returns the
	// 3xx itself, which is not a success.
	w.client = cfg.Policy.Client(w.timeout, cfg.Resolver, cfg.RootCAs)
	if cfg.Metrics != nil {
		w.results = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_outbox_deliveries_total",
			Help: "Outbox delivery attempts, by kind and result (delivered, retry, or the drop reason).",
		}, []string{"kind", "result"})
		depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "countersign_outbox_open_rows", Help: "Outbox rows neither delivered nor dropped (all replicas).",
		}, w.openRows)
		cfg.Metrics.MustRegister(w.results, depth)
	}
	return w, nil
}

// openRows counts the open outbox rows, for a scrape.
func (w *Worker) openRows() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var n int64
	if err := w.db.GetContext(ctx, &n, `SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND dropped_at IS NULL`); err != nil {
		return math.NaN() // unknown, not zero
	}
	return float64(n)
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Run delivers due rows until ctx ends, keeping up to Concurrency sends in
// flight and no more than PerTarget to one target. It does not wait for a
// batch: each finished send frees its slot for the next due row, so one
// slow or unreachable target holds at most PerTarget slots and the others
// keep flowing. It looks for due rows every PollInterval, when a send
// ends, and when Wake is called. On the way out it lets the sends in
// flight finish (each is bounded by the timeout) and records their results.
func (w *Worker) Run(ctx context.Context) {
	type finished struct{ target string }
	done := make(chan finished, w.concurrency)
	inflight := map[string]int{}
	total := 0
	ended := func(f finished) {
		total--
		if inflight[f.target]--; inflight[f.target] == 0 {
			delete(inflight, f.target)
		}
	}
	defer func() {
		for ; total > 0; total-- {
			<-done
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastExpire time.Time
	for {
		more := false
		if free := w.concurrency - total; free > 0 && ctx.Err() == nil {
			if time.Since(lastExpire) >= w.poll {
				w.dropExpired(ctx)
				lastExpire = time.Now()
			}
			var busy []string
			for target, n := range inflight {
				if n >= w.perTarget {
					busy = append(busy, target)
				}
			}
			rows, err := claim(ctx, w.db, free, w.lease, []string{KindPing, KindPush}, busy)
			if err != nil && ctx.Err() == nil {
				w.logger.WarnContext(ctx, "outbox pass failed", "err", err)
			}
			for _, r := range rows {
				if inflight[r.Target] >= w.perTarget {
					// Claimed in one batch beyond the target's bound: give it
					// back at once, uncounted.
					release(ctx, w.db, r)
					continue
				}
				total++
				inflight[r.Target]++
				go func() {
					w.deliver(ctx, r)
					done <- finished{r.Target}
				}()
			}
			more = len(rows) == free // there may be more due right now
		}
		if more {
			continue
		}
		timer.Reset(w.poll)
		select {
		case <-ctx.Done():
			return
		case f := <-done:
			// Take every send that has ended since, so that the next claim
			// fills all the free slots in one statement: one claim per
			// ended send would bound the worker at one row per claim's
			// round trip.
			ended(f)
			for draining := true; draining; {
				select {
				case f := <-done:
					ended(f)
				default:
					draining = false
				}
			}
		case <-w.wake:
		case <-timer.C:
		}
	}
}

// Wake makes Run look for due rows now (a new row was written, say).
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Notice wakes the worker for the events that may have queued outbox rows
// (a request created, decided or otherwise changed, on any replica), and
// after the listener may have missed some: subscribe it to the process's
// approvals.Listener. It does not block.
func (w *Worker) Notice(n approvals.Notice) {
	if n.Resync || strings.HasPrefix(n.Kind, "request.") {
		w.Wake()
	}
}

// dropExpired drops the rows whose request expired, and logs them.
func (w *Worker) dropExpired(ctx context.Context) {
	gone, err := expire(ctx, w.db)
	if err != nil {
		if ctx.Err() == nil {
			w.logger.WarnContext(ctx, "outbox expiry pass failed", "err", err)
		}
		return
	}
	for _, e := range gone {
		w.logger.WarnContext(ctx, "outbox row dropped", "id", e.ID, "kind", e.Kind, "request", e.RequestID,
			"reason", DropExpired, "attempts", e.Attempts, "last_error", e.LastError)
	}
}

// RunOnce drops expired rows, then claims up to Concurrency due rows and sends
// them, waiting for all of them. It returns how many it claimed. (Run does
// not wait for a batch; RunOnce is one deterministic pass, for tests and
// tools.)
func (w *Worker) RunOnce(ctx context.Context) (int, error) {
	gone, err := expire(ctx, w.db)
	if err != nil {
		return 0, err
	}
	for _, e := range gone {
		w.logger.WarnContext(ctx, "outbox row dropped", "id", e.ID, "kind", e.Kind, "request", e.RequestID,
			"reason", DropExpired, "attempts", e.Attempts, "last_error", e.LastError)
	}
	rows, err := claim(ctx, w.db, w.concurrency, w.lease, []string{KindPing, KindPush}, nil)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	for _, r := range rows {
		wg.Go(func() { w.deliver(ctx, r) })
	}
	wg.Wait()
	return len(rows), nil
}

// deliver makes one attempt at r and records the outcome.
func (w *Worker) deliver(ctx context.Context, r row) {
	if r.Reclaimed {
		// At-least-once: the worker that held the row before stopped without
		// a result, maybe after the target had received it.
		w.logger.WarnContext(ctx, "outbox row claimed again after its lease ran out: possible duplicate delivery",
			"row", r, "duplicates", r.Duplicates)
	}
	if err := beforeSend(ctx, w.logger, r.ID); err != nil {
		return // stopping: the lease runs out and another claim sends it
	}
	var o outcome
	switch r.Kind {
	case KindPing:
		o = w.ping(ctx, r)
	case KindPush:
		o = w.push(ctx, r)
	default:
		o = outcome{drop: DropInvalid, err: "unknown kind " + r.Kind}
	}
	if !o.delivered && o.drop == "" {
		// The target's Retry-After, when it gave one, is the soonest.
		o.retryIn = max(o.retryIn, backoff(r.Attempts, w.base, w.cap, w.rnd))
	}
	// The result is recorded even when ctx has ended: the send happened.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	kept, err := record(rctx, w.db, r, o)
	if w.results != nil && err == nil && kept {
		result := "retry"
		switch {
		case o.delivered:
			result = "delivered"
		case o.drop != "":
			result = o.drop
		}
		w.results.WithLabelValues(r.Kind, result).Inc()
	}
	attrs := []any{"row", r, "status", o.status}
	switch {
	case err != nil:
		w.logger.ErrorContext(ctx, "outbox result not recorded: the row will be sent again", append(attrs, "err", err)...)
	case !kept:
		w.logger.WarnContext(ctx, "outbox lease lost before the result was recorded", attrs...)
	case o.delivered:
		w.logger.InfoContext(ctx, "outbox row delivered", attrs...)
	case o.drop != "":
		w.logger.WarnContext(ctx, "outbox row dropped", append(attrs, "reason", o.drop, "err", o.err)...)
	default:
		w.logger.InfoContext(ctx, "outbox delivery failed; will retry", append(attrs, "retry_in", o.retryIn, "err", o.err)...)
	}
}

// backoff is the wait before the retry that follows attempt (1 for the first
// try): exponential with full jitter, a random time between zero and
// min(cap, base·2^(attempt-1)), so that endpoints that fail together are not
// retried together.
func backoff(attempt int, base, cap time.Duration, rnd func(int64) int64) time.Duration {
	ceil := base
	for i := 1; i < attempt && ceil < cap; i++ {
		ceil *= 2
	}
	ceil = min(ceil, cap)
	return time.Duration(rnd(int64(ceil) + 1))
}

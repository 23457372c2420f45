package notify

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/internal/pgtest"
)

// TestEnqueue: deciding a ping agent's request writes one outbox row in the
// decide statement, for approval and denial alike; poll agents, requests
// without a client_notification_token and refused decisions write none.
func TestEnqueue(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ping := f.agent("https://agent.example.com/cb")
	poll := f.agent("")

	approved := f.decided(ping, "tok-a")
	if r := f.row(approved); r.Kind != KindPing || r.Target != "https://agent.example.com/cb" || r.Bearer == nil ||
		*r.Bearer != "tok-a" || r.Attempts != 0 || r.Delivered || r.Dropped || r.Leased {
		t.Errorf("approved: %+v", r)
	}
	denied := f.request(ping, "tok-d")
	f.decide(denied, false)
	if r := f.row(denied); r.Bearer == nil || *r.Bearer != "tok-d" {
		t.Errorf("denied: %+v", r)
	}
	// Deciding again is refused and enqueues nothing more.
	if err := f.review(approved, false); err == nil {
		t.Fatal("second decision accepted")
	}
	if n := len(f.rows(approved)); n != 1 {
		t.Errorf("after a refused second decision: %d rows", n)
	}
	if n := len(f.rows(f.decided(poll, ""))); n != 0 {
		t.Errorf("poll agent: %d outbox rows", n)
	}
	pending := f.request(ping, "tok-p")
	if n := len(f.rows(pending)); n != 0 {
		t.Errorf("undecided request: %d outbox rows", n)
	}
}

// TestPingDelivered: the callback is a POST with exactly the CIBA §10.2
// headers and body, and the row is then delivered and forgets the token.
func TestPingDelivered(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, approve := range []bool{true, false} {
		t.Run(fmt.Sprintf("approve=%v", approve), func(t *testing.T) {
			rc := newReceiver(t, true, nil)
			a := f.agent(rc.srv.URL + "/ciba/cb")
			id := f.request(a, "8d67dc78-7faa-4d41-aabd-67707b374255")
			f.decide(id, approve)
			w := f.worker(Policy{Allow: loopback}, rc.roots())
			if n := f.runOnce(w); n != 1 {
				t.Fatalf("claimed %d rows, want 1", n)
			}
			want := receipt{Method: http.MethodPost, Path: "/ciba/cb", Authorization: "Bearer 8d67dc78-7faa-4d41-aabd-67707b374255",
				ContentType: "application/json", Body: `{"auth_req_id":"` + f.handle(id) + `"}`}
			if got := rc.receipts(); len(got) != 1 || got[0] != want {
				t.Fatalf("received %+v\nwant [%+v]", got, want)
			}
			r := f.row(id)
			if !r.Delivered || r.Dropped || r.Bearer != nil || r.Attempts != 1 || r.Duplicates != 0 || r.Leased || r.LastError != "" {
				t.Fatalf("row after delivery: %+v", r)
			}
			if n := f.runOnce(w); n != 0 || len(rc.receipts()) != 1 {
				t.Fatalf("a delivered row was claimed again (%d) or re-sent (%d receipts)", n, len(rc.receipts()))
			}
			ns := f.wantNotifications(t, id, []string{"queued", "sent 204"}, "8d67dc78-7faa-4d41-aabd-67707b374255")
			if b := ns[1].Body; b["channel"] != "ping" || b["attempt"] != float64(1) || b["outbox_id"] != ns[0].Body["outbox_id"] {
				t.Errorf("notification.sent body %s", ns[1].raw)
			}
		})
	}
}

// TestPingClientError: 4xx (and 3xx) answers drop the row after one attempt.
func TestPingClientError(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, code := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusTooManyRequests} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			rc := newReceiver(t, true, func(int, http.ResponseWriter, *http.Request) int { return code })
			id := f.decided(f.agent(rc.srv.URL+"/cb"), "tok")
			w := f.worker(Policy{Allow: loopback}, rc.roots())
			f.runOnce(w)
			f.runOnce(w)
			if n := len(rc.receipts()); n != 1 {
				t.Fatalf("%d receipts, want 1", n)
			}
			r := f.row(id)
			if !r.Dropped || r.DropReason != DropRejected || r.Attempts != 1 || r.Bearer != nil || r.LastError != fmt.Sprintf("HTTP %d", code) {
				t.Fatalf("row: %+v", r)
			}
			ns := f.wantNotifications(t, id, []string{"queued", fmt.Sprintf("failed %d", code)}, "tok")
			if b := ns[1].Body; b["final"] != true || b["reason"] != DropRejected || b["error"] != DropRejected {
				t.Errorf("notification.failed body %s", ns[1].raw)
			}
		})
	}
}

// TestPingRetry: 5xx answers, timeouts and refused connections are retried;
// the row keeps its attempts and last error and is delivered in the end.
func TestPingRetry(t *testing.T) {
	t.Parallel()
	// The subtests share a database; each leaves its row delivered, except
	// the last.
	f := newFixture(t)
	t.Run("5xx", func(t *testing.T) {
		rc := newReceiver(t, true, func(n int, _ http.ResponseWriter, _ *http.Request) int {
			switch n {
			case 1:
				return http.StatusServiceUnavailable
			case 2:
				return http.StatusInternalServerError
			}
			return http.StatusNoContent
		})
		id := f.decided(f.agent(rc.srv.URL+"/cb"), "tok")
		w := f.worker(Policy{Allow: loopback}, rc.roots())
		f.runOnce(w)
		if r := f.row(id); r.Delivered || r.Dropped || r.Attempts != 1 || r.LastError != "HTTP 503" || r.Bearer == nil || r.Leased {
			t.Fatalf("after a 503: %+v", r)
		}
		f.runOnce(w)
		f.runOnce(w)
		if n := len(rc.receipts()); n != 3 {
			t.Fatalf("%d receipts, want 3", n)
		}
		if r := f.row(id); !r.Delivered || r.Attempts != 3 || r.LastError != "HTTP 500" || r.Bearer != nil {
			t.Fatalf("after 503, 500, 204: %+v", r)
		}
		ns := f.wantNotifications(t, id, []string{"queued", "failed 503", "failed 500", "sent 204"}, "tok")
		if b := ns[1].Body; b["final"] != false || b["error"] != "http_status" || b["retry_in_seconds"] == nil || b["attempt"] != float64(1) {
			t.Errorf("notification.failed body %s", ns[1].raw)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		stop := make(chan struct{})
		rc := newReceiver(t, true, func(n int, _ http.ResponseWriter, _ *http.Request) int {
			if n == 1 {
				// Answers only after the worker gave up (the request's
				// context is not a reliable signal of that), and then not
				// with success.
				select {
				case <-stop:
				case <-time.After(10 * time.Second):
				}
				return http.StatusServiceUnavailable
			}
			return 204
		})
		defer close(stop)
		id := f.decided(f.agent(rc.srv.URL+"/cb"), "tok")
		w := f.worker(Policy{Allow: loopback}, rc.roots(), func(c *Config) { c.Timeout = 300 * time.Millisecond })
		f.runOnce(w)
		if r := f.row(id); r.Delivered || r.Dropped || r.Attempts != 1 || !strings.HasPrefix(r.LastError, "timeout") {
			t.Fatalf("after a timeout: %+v", r)
		}
		f.runOnce(w)
		if r := f.row(id); !r.Delivered || r.Attempts != 2 {
			t.Fatalf("after the retry: %+v", r)
		}
		f.wantNotifications(t, id, []string{"queued", "failed timeout", "sent 204"}, "tok")
	})
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens there now
		id := f.decided(f.agent("https://"+addr+"/cb"), "tok")
		f.runOnce(f.worker(Policy{Allow: loopback}))
		if r := f.row(id); r.Delivered || r.Dropped || r.Attempts != 1 || !strings.Contains(r.LastError, "connection refused") {
			t.Fatalf("after a refused connection: %+v", r)
		}
		// The event names the class, not the address that refused.
		f.wantNotifications(t, id, []string{"queued", "failed connection"}, "tok", addr)
	})
}

// TestPingNoRedirect: a 3xx is not followed (CIBA §10.2): its target never
// hears from us, and the row is dropped.
func TestPingNoRedirect(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			target := newReceiver(t, true, nil)
			rc := newReceiver(t, true, func(_ int, w http.ResponseWriter, _ *http.Request) int {
				w.Header().Set("Location", target.srv.URL+"/elsewhere")
				return code
			})
			id := f.decided(f.agent(rc.srv.URL+"/cb"), "tok")
			w := f.worker(Policy{Allow: loopback}, func(c *Config) {
				rc.roots()(c)
				c.RootCAs.AddCert(target.srv.Certificate())
			})
			f.runOnce(w)
			f.runOnce(w)
			if n := len(rc.receipts()); n != 1 {
				t.Fatalf("endpoint got %d requests, want 1", n)
			}
			if n := len(target.receipts()); n != 0 {
				t.Fatalf("the redirect target got %d requests", n)
			}
			if r := f.row(id); !r.Dropped || r.DropReason != DropRedirected || r.Attempts != 1 || r.Bearer != nil {
				t.Fatalf("row: %+v", r)
			}
		})
	}
}

// TestPingForbiddenTargets: endpoints that are not https, or whose address is
// not public, are refused at connect time unless allowlisted; refused rows are
// dropped and no request leaves.
func TestPingForbiddenTargets(t *testing.T) {
	t.Parallel()
	tlsRC := newReceiver(t, true, nil)
	plainRC := newReceiver(t, false, nil)
	names := resolverMap{
		"internal.example.com": {mustAddr("10.0.0.1")},
		"mixed.example.com":    {mustAddr("93.184.216.34"), mustAddr("10.0.0.1")},
		"example.com":          {mustAddr("127.0.0.1")}, // the receiver's certificate names example.com
		"metadata.example.com": {mustAddr("169.254.169.254")},
	}
	tests := []struct {
		name   string
		url    string
		policy Policy
		rc     *receiver
		ok     bool
	}{
		{"loopback without allowlist", tlsRC.srv.URL + "/cb", Policy{}, tlsRC, false},
		{"loopback allowlisted", tlsRC.srv.URL + "/cb", Policy{Allow: loopback}, tlsRC, true},
		{"IPv4-mapped loopback", "https://[::ffff:127.0.0.1]:" + tlsRC.port() + "/cb", Policy{}, tlsRC, false},
		{"metadata address", "https://169.254.169.254/latest/meta-data", Policy{}, nil, false},
		{"name resolving to metadata", "https://metadata.example.com/", Policy{Allow: loopback}, nil, false},
		{"name resolving to 10.0.0.1", "https://internal.example.com/cb", Policy{}, nil, false},
		{"name with a public and a private address", "https://mixed.example.com/cb", Policy{}, nil, false},
		{"name resolving to loopback without allowlist", "https://example.com:" + tlsRC.port() + "/cb", Policy{}, tlsRC, false},
		{"name resolving to loopback, allowlisted", "https://example.com:" + tlsRC.port() + "/cb", Policy{Allow: loopback}, tlsRC, true},
		{"http outside dev, even allowlisted", plainRC.srv.URL + "/cb", Policy{Allow: loopback}, plainRC, false},
		{"http to loopback in dev", plainRC.srv.URL + "/cb", Policy{DevLoopback: true}, plainRC, true},
		{"http to a name in dev", "http://example.com:" + plainRC.port() + "/cb", Policy{DevLoopback: true}, plainRC, false},
		{"https to loopback in dev", tlsRC.srv.URL + "/cb", Policy{DevLoopback: true}, tlsRC, true},
		{"private address in dev", "https://internal.example.com/cb", Policy{DevLoopback: true}, nil, false},
	}
	f := newFixture(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := 0
			if tc.rc != nil {
				before = len(tc.rc.receipts())
			}
			id := f.decided(f.agent(tc.url), "tok")
			f.runOnce(f.worker(tc.policy, tlsRC.roots(), withResolver(names)))
			r := f.row(id)
			got := 0
			if tc.rc != nil {
				got = len(tc.rc.receipts()) - before
			}
			if tc.ok {
				if !r.Delivered || got != 1 {
					t.Fatalf("want delivered once: %d receipts, row %+v", got, r)
				}
				return
			}
			if !r.Dropped || r.DropReason != DropForbidden || r.Attempts != 1 || got != 0 || r.Bearer != nil {
				t.Fatalf("want refused: %d receipts, row %+v", got, r)
			}
		})
	}
}

// TestExpiredRowsDropped: a row not delivered by the request's expiry is
// dropped with its last error kept, and never sent again.
func TestExpiredRowsDropped(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rc := newReceiver(t, true, func(int, http.ResponseWriter, *http.Request) int { return 503 })
	a := f.agent(rc.srv.URL + "/cb")
	failing := f.decided(a, "tok1")
	w := f.worker(Policy{Allow: loopback}, rc.roots())
	f.runOnce(w)
	never := f.decided(a, "tok2")
	// The requests' time is up (the database clock decides, so move the rows).
	if _, err := f.db.Exec(`UPDATE outbox SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if n := f.runOnce(w); n != 0 {
		t.Fatalf("claimed %d expired rows", n)
	}
	if n := len(rc.receipts()); n != 1 {
		t.Fatalf("%d receipts, want 1 (the attempt before expiry)", n)
	}
	if r := f.row(failing); !r.Dropped || r.DropReason != DropExpired || r.Attempts != 1 || r.LastError != "HTTP 503" || r.Bearer != nil {
		t.Errorf("failing row: %+v", r)
	}
	if r := f.row(never); !r.Dropped || r.DropReason != DropExpired || r.Attempts != 0 || r.Bearer != nil {
		t.Errorf("never-sent row: %+v", r)
	}
	f.wantNotifications(t, failing, []string{"queued", "failed 503", "dropped expired"}, "tok1")
	if ns := f.wantNotifications(t, never, []string{"queued", "dropped expired"}, "tok2"); len(ns) == 2 && ns[1].Body["attempts"] != float64(0) {
		t.Errorf("notification.dropped body %s", ns[1].raw)
	}
}

// TestLeaseExpiry: a row claimed by a worker that then died is left alone
// while the lease holds, sent by another worker once it has run out (counted
// as a possible duplicate), and the dead worker's late result is ignored.
func TestLeaseExpiry(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rc := newReceiver(t, true, nil)
	id := f.decided(f.agent(rc.srv.URL+"/cb"), "tok")
	dead, err := claim(context.Background(), f.db, 10, time.Hour, []string{KindPing}, nil)
	if err != nil || len(dead) != 1 || dead[0].Reclaimed {
		t.Fatalf("claim: %v %+v", err, dead)
	}
	w := f.worker(Policy{Allow: loopback}, rc.roots())
	if n := f.runOnce(w); n != 0 || len(rc.receipts()) != 0 {
		t.Fatalf("a leased row was claimed (%d) or sent (%d)", n, len(rc.receipts()))
	}
	if _, err := f.db.Exec(`UPDATE outbox SET lease_until = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if n := f.runOnce(w); n != 1 || len(rc.receipts()) != 1 {
		t.Fatalf("after the lease ran out: claimed %d, %d receipts", n, len(rc.receipts()))
	}
	if r := f.row(id); !r.Delivered || r.Attempts != 2 || r.Duplicates != 1 {
		t.Fatalf("row: %+v", r)
	}
	kept, err := record(context.Background(), f.db, dead[0], outcome{drop: DropRejected, err: "late"})
	if err != nil || kept {
		t.Fatalf("the dead worker's late result: kept=%v err=%v", kept, err)
	}
	if r := f.row(id); !r.Delivered || r.Dropped || r.LastError != "" {
		t.Fatalf("row after the late result: %+v", r)
	}
	// Only the result that counted is on the record.
	f.wantNotifications(t, id, []string{"queued", "sent 204"}, "tok")
}

// TestWorkersDeliverOnce: two workers on their own pools (two replicas) share
// one database; each row is sent exactly once, and both stop when told.
func TestWorkersDeliverOnce(t *testing.T) {
	t.Parallel()
	conf := pgtest.NewConfig(t)
	open := func() *sqlx.DB {
		db, err := sqlx.Connect("postgres", conf.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	f := newFixtureOn(t, open())
	rc := newReceiver(t, true, nil)
	a := f.agent(rc.srv.URL + "/cb")
	const n = 40
	want := map[string]bool{}
	for range n {
		want[`{"auth_req_id":"`+f.handle(f.decided(a, "tok"))+`"}`] = true
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		f2 := &fixture{t: t, db: open(), svc: f.svc}
		w := f2.worker(Policy{Allow: loopback}, rc.roots(), func(c *Config) { c.Concurrency = 3 })
		wg.Go(func() { w.Run(ctx) })
	}
	deadline := time.After(15 * time.Second)
	for len(rc.receipts()) < n {
		select {
		case <-rc.notify:
		case <-deadline:
			cancel()
			t.Fatalf("%d of %d rows delivered in time", len(rc.receipts()), n)
		}
	}
	// Wait until every result is recorded: anything sent twice would show.
	for {
		var open int
		if err := f.db.Get(&open, `SELECT count(*) FROM outbox WHERE delivered_at IS NULL`); err != nil {
			t.Fatal(err)
		}
		if open == 0 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("%d rows not recorded as delivered", open)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("workers did not stop")
	}
	seen := map[string]int{}
	for _, r := range rc.receipts() {
		seen[r.Body]++
	}
	for body, c := range seen {
		if c != 1 || !want[body] {
			t.Errorf("%s received %d times (known: %v)", body, c, want[body])
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct pings, want %d", len(seen), n)
	}
	var bad int
	if err := f.db.Get(&bad, `SELECT count(*) FROM outbox WHERE attempts <> 1 OR duplicates <> 0 OR bearer IS NOT NULL`); err != nil || bad != 0 {
		t.Errorf("%d rows with more than one attempt, a duplicate or a kept token (err %v)", bad, err)
	}
}

// TestFailpointAbsent: without the failpoints build tag the failpoint's
// environment variable does nothing: the row is sent at once.
func TestFailpointAbsent(t *testing.T) {
	t.Setenv("COUNTERSIGN_FAILPOINT", "ping-before-send")
	t.Setenv("COUNTERSIGN_FAILPOINT_LEASE", "1ms")
	f := newFixture(t)
	rc := newReceiver(t, true, nil)
	id := f.decided(f.agent(rc.srv.URL+"/cb"), "tok")
	w := f.worker(Policy{Allow: loopback}, rc.roots())
	if w.lease != DefaultLease {
		t.Fatalf("lease %s, want %s", w.lease, DefaultLease)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if r := f.row(id); !r.Delivered || len(rc.receipts()) != 1 {
		t.Fatalf("not delivered: %+v, %d receipts", r, len(rc.receipts()))
	}
}

// TestBackoff: exponential ceilings, capped, with full jitter below them.
func TestBackoff(t *testing.T) {
	t.Parallel()
	top := func(n int64) int64 { return n - 1 }
	tests := []struct {
		attempt int
		want    time.Duration
	}{{0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {6, 32 * time.Second},
		{7, time.Minute}, {40, time.Minute}, {1 << 20, time.Minute}}
	for _, tc := range tests {
		if got := backoff(tc.attempt, time.Second, time.Minute, top); got != tc.want {
			t.Errorf("attempt %d: ceiling %s, want %s", tc.attempt, got, tc.want)
		}
		if got := backoff(tc.attempt, time.Second, time.Minute, func(int64) int64 { return 0 }); got != 0 {
			t.Errorf("attempt %d: floor %s, want 0", tc.attempt, got)
		}
	}
	w, err := NewWorker(Config{DB: &sqlx.DB{}, AuthReqID: func(string) (string, error) { return "", nil }})
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[time.Duration]bool{}
	for range 200 {
		d := backoff(5, time.Second, time.Minute, w.rnd)
		if d < 0 || d > 16*time.Second {
			t.Fatalf("jittered delay %s outside [0, 16s]", d)
		}
		distinct[d] = true
	}
	if len(distinct) < 100 {
		t.Errorf("only %d distinct delays in 200: not jittered", len(distinct))
	}
}

// TestSlowTargetDoesNotHoldOthers: a target that never answers takes at
// most PerTarget of the worker's slots; every row for a healthy target is
// delivered while the slow one still has not answered anything (the worker
// does not wait for a batch).
func TestSlowTargetDoesNotHoldOthers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	hold := make(chan struct{})
	var mu sync.Mutex
	slowAnswered, slowNow, slowMax := 0, 0, 0
	slow := newReceiver(t, true, func(_ int, _ http.ResponseWriter, r *http.Request) int {
		mu.Lock()
		slowNow++
		slowMax = max(slowMax, slowNow)
		mu.Unlock()
		select {
		case <-hold:
		case <-r.Context().Done():
		}
		mu.Lock()
		slowNow--
		slowAnswered++
		mu.Unlock()
		return http.StatusNoContent
	})
	healthy := newReceiver(t, true, nil)
	slowAgent, healthyAgent := f.agent(slow.srv.URL+"/cb"), f.agent(healthy.srv.URL+"/cb")
	for range 6 {
		f.decided(slowAgent, "tok")
		f.decided(healthyAgent, "tok")
	}
	pool := x509.NewCertPool()
	pool.AddCert(slow.srv.Certificate())
	pool.AddCert(healthy.srv.Certificate())
	w := f.worker(Policy{Allow: loopback}, func(c *Config) {
		c.RootCAs, c.Concurrency, c.PerTarget, c.Timeout, c.Lease = pool, 4, 2, time.Minute, 3*time.Minute
	})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { w.Run(ctx); close(stopped) }()
	defer func() { close(hold); cancel(); <-stopped }()

	deadline := time.After(30 * time.Second)
	for len(healthy.receipts()) < 6 {
		select {
		case <-healthy.notify:
		case <-deadline:
			t.Fatalf("healthy target got %d of 6 rows while the slow one held its sends", len(healthy.receipts()))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if slowAnswered != 0 {
		t.Errorf("the slow target answered %d requests before the healthy one had all its rows: the worker waited for it", slowAnswered)
	}
	if slowMax > 2 {
		t.Errorf("%d sends to the slow target at once, want at most PerTarget (2)", slowMax)
	}
}

// TestNoticeWakes: a worker that would look for due rows only once an hour
// sends a row as soon as it hears of a request event (the decision that
// queued it, on any replica), and not for events that queue nothing.
func TestNoticeWakes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rc := newReceiver(t, true, nil)
	a := f.agent(rc.srv.URL + "/cb")
	first := f.decided(a, "tok")
	w := f.worker(Policy{Allow: loopback}, rc.roots(), func(c *Config) { c.PollInterval = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { w.Run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()

	// The first pass sends the first row; then the worker waits.
	select {
	case <-rc.notify:
	case <-time.After(10 * time.Second):
		t.Fatal("the first pass sent nothing")
	}
	for deadline := time.Now().Add(10 * time.Second); !f.row(first).Delivered; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first row was not recorded as delivered")
		}
	}
	time.Sleep(500 * time.Millisecond) // the pass after that send found nothing

	f.decided(a, "tok")
	w.Notice(approvals.Notice{Kind: approvals.KindAgentCreated, AgentID: a.ID})
	select {
	case <-rc.notify:
		t.Fatal("an agent event woke the worker")
	case <-time.After(300 * time.Millisecond):
	}
	w.Notice(approvals.Notice{Kind: approvals.KindRequestApproved})
	select {
	case <-rc.notify:
	case <-time.After(10 * time.Second):
		t.Fatal("the row queued by a decision waited for the next pass: the decision's notice did not wake the worker")
	}
}

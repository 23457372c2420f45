package notify

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/internal/pgtest"
)

var testKEK = []byte("0123456789abcdef0123456789abcdef")

// fixture is a fresh database with one user, and the domain on top of it.
type fixture struct {
	t     testing.TB
	db    *sqlx.DB
	store *approvals.Store
	svc   *approvals.Service
	user  approvals.User
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	return newFixtureOn(t, pgtest.New(t))
}

func newFixtureOn(t testing.TB, db *sqlx.DB) *fixture {
	t.Helper()
	ctx := context.Background()
	store := approvals.NewStore(db)
	types := approvals.NewTypeStore(store)
	defs, err := demo.TypeDefinitions()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := types.Apply(ctx, defs); err != nil {
		t.Fatal(err)
	}
	if _, err := approvals.NewPolicyStore(store).Apply(ctx, "approve.yaml",
		[]byte("types:\n  payment_initiation: [{id: all, when: \"true\", outcome: approve, reason: Approval needed}]\n")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.CreateResourceServer(ctx, approvals.NewResourceServer{Name: "API", Audience: "https://api.example.com",
		Types: []string{"payment_initiation"}}); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, db: db, store: store, svc: approvals.NewService(store, types, nil, approvals.Config{KEK: testKEK, Fatigue: &approvals.Fatigue{}})}
	if f.user, err = store.CreateUser(ctx, approvals.NewUser{Email: "alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	return f
}

// agent registers an agent; notifyURL "" means poll delivery.
func (f *fixture) agent(notifyURL string) approvals.Agent {
	f.t.Helper()
	n := approvals.NewAgent{Name: "Agent", Domain: "agent.example.com", Types: []string{"payment_initiation"}}
	if notifyURL != "" {
		n.DeliveryMode, n.NotifyURL = approvals.DeliveryPing, "https://placeholder.example/cb"
	}
	a, _, err := f.store.CreateAgent(context.Background(), n)
	if err != nil {
		f.t.Fatal(err)
	}
	if notifyURL != "" {
		// Set the endpoint directly: the worker must refuse a bad target even
		// if registration (which refuses most) let one through.
		if _, err := f.db.Exec(`UPDATE agents SET notify_url = $2 WHERE id = $1`, a.ID, notifyURL); err != nil {
			f.t.Fatal(err)
		}
		a.NotifyURL = &notifyURL
	}
	return a
}

// request stores a pending request of agent a carrying token (none when "").
func (f *fixture) request(a approvals.Agent, token string) string {
	f.t.Helper()
	c, err := f.svc.Authorize(context.Background(), a, approvals.AuthRequest{Scope: "openid", LoginHint: f.user.Email,
		AuthorizationDetails:    []byte(`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"5.00"},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}]`),
		ClientNotificationToken: token})
	if err != nil {
		f.t.Fatal(err)
	}
	return c.Request.ID
}

// review records a verdict of the fixture's user on request id.
func (f *fixture) review(id string, approve bool) error {
	v := approvals.VerdictDeny
	if approve {
		v = approvals.VerdictApprove
	}
	_, err := f.svc.Review(context.Background(), id, approvals.Reviewer{UserID: f.user.ID, AMR: []string{"hwk", "user"}},
		approvals.ReviewInput{Verdict: v})
	return err
}

func (f *fixture) decide(id string, approve bool) {
	f.t.Helper()
	if err := f.review(id, approve); err != nil {
		f.t.Fatal(err)
	}
}

// decided is a ping agent's request, approved: an outbox row is due.
func (f *fixture) decided(a approvals.Agent, token string) string {
	f.t.Helper()
	id := f.request(a, token)
	f.decide(id, true)
	return id
}

func (f *fixture) handle(requestID string) string {
	f.t.Helper()
	h, err := f.svc.AuthReqID(requestID)
	if err != nil {
		f.t.Fatal(err)
	}
	return h
}

// outboxState is an outbox row as the tests look at it.
type outboxState struct {
	Kind       string  `db:"kind"`
	Target     string  `db:"target"`
	Bearer     *string `db:"bearer"`
	Attempts   int     `db:"attempts"`
	Duplicates int     `db:"duplicates"`
	Delivered  bool    `db:"delivered"`
	Dropped    bool    `db:"dropped"`
	DropReason string  `db:"drop_reason"`
	LastError  string  `db:"last_error"`
	Leased     bool    `db:"leased"`
}

// rows returns the outbox rows of request id.
func (f *fixture) rows(id string) []outboxState {
	f.t.Helper()
	var out []outboxState
	err := f.db.Select(&out, `SELECT kind, target, bearer, attempts, duplicates, delivered_at IS NOT NULL AS delivered,
		dropped_at IS NOT NULL AS dropped, drop_reason, last_error, lease_until IS NOT NULL AS leased
		FROM outbox WHERE request_id = $1 ORDER BY id`, id)
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// row returns the one outbox row of request id.
func (f *fixture) row(id string) outboxState {
	f.t.Helper()
	rs := f.rows(id)
	if len(rs) != 1 {
		f.t.Fatalf("request %s has %d outbox rows, want 1: %+v", id, len(rs), rs)
	}
	return rs[0]
}

// worker returns a worker on the fixture's database; retries are due at once
// (no jitter wait) unless the test changes rnd.
func (f *fixture) worker(p Policy, opts ...func(*Config)) *Worker {
	f.t.Helper()
	cfg := Config{DB: f.db, AuthReqID: f.svc.AuthReqID, Policy: p, Timeout: 2 * time.Second, PollInterval: 10 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	w, err := NewWorker(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	w.rnd = func(int64) int64 { return 0 }
	return w
}

// runOnce runs one pass and returns how many rows it claimed.
func (f *fixture) runOnce(w *Worker) int {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := w.RunOnce(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

// receipt is one request a receiver got.
type receipt struct {
	Method, Path, Authorization, ContentType string
	Body                                     string
}

// receiver is a callback endpoint that records what it receives and answers
// with status(n) for its n-th request (1-based).
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []receipt
	status func(n int, w http.ResponseWriter, r *http.Request) int
	notify chan struct{}
}

func newReceiver(t *testing.T, tls bool, status func(n int, w http.ResponseWriter, r *http.Request) int) *receiver {
	t.Helper()
	rc := &receiver{status: status, notify: make(chan struct{}, 1000)}
	if rc.status == nil {
		rc.status = func(int, http.ResponseWriter, *http.Request) int { return http.StatusNoContent }
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, receipt{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)})
		n := len(rc.got)
		rc.mu.Unlock()
		rc.notify <- struct{}{}
		if code := rc.status(n, w, r); code != 0 {
			w.WriteHeader(code)
		}
	})
	if tls {
		rc.srv = httptest.NewTLSServer(h)
	} else {
		rc.srv = httptest.NewServer(h)
	}
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) receipts() []receipt {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]receipt(nil), rc.got...)
}

// roots trusts the receiver's certificate.
func (rc *receiver) roots() func(*Config) {
	return func(c *Config) {
		pool := x509.NewCertPool()
		pool.AddCert(rc.srv.Certificate())
		c.RootCAs = pool
	}
}

// port is the receiver's port.
func (rc *receiver) port() string {
	return fmt.Sprint(netip.MustParseAddrPort(rc.srv.Listener.Addr().String()).Port())
}

// loopback is the allowlist that opens the loopback receivers.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// resolverMap is a test Resolver.
type resolverMap map[string][]netip.Addr

func (m resolverMap) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := m[host]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("no such host %s", host)
}

func withResolver(m resolverMap) func(*Config) { return func(c *Config) { c.Resolver = m } }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

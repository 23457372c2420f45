// Package testserver runs a whole Countersign server in a test: the HTTP
// surface of package web on an httptest server, the domain on a fresh
// migrated database (internal/pgtest), the demo request types, a test
// policy, one user and one resource server, and, when asked, the outbox
// worker that sends ping callbacks. The SDK's, the examples' and the MCP
// gate's tests drive it over HTTP as an agent would and decide its
// requests through the domain API as a person would.
package testserver

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/internal/pgtest"
	"github.com/countersign/countersign/notify"
	"github.com/countersign/countersign/web"
)

// KEK is the key-encryption key of test servers.
var KEK = []byte("0123456789abcdef0123456789abcdef")

// Audience is the resource server's audience: the default aud of every
// demo type's tokens.
const Audience = "https://api.example.com"

// UserEmail is the test user's email, the login_hint of the tests.
const UserEmail = "alice@example.com"

// Policy is the test risk policy: EUR payments up to 100 are allowed at
// once, payments to Mallory are denied, payments over 10,000 EUR need a
// step-up, everything else waits for the user.
const Policy = `types:
  payment_initiation:
    - {id: mallory, when: 'details.creditorName == "Mallory"', outcome: {deny: "Payments to Mallory are blocked"}}
    - {id: small, when: 'request.currency == "EUR" && request.amount <= 100', outcome: allow, reason: Small payment}
    - {id: large, when: 'request.currency != "EUR" || request.amount > 10000', outcome: step_up, reason: Large payment}
    - {id: other, when: "true", outcome: approve, reason: Approval needed}
  database_operation: [{id: all, when: "true", outcome: approve, reason: Approval needed}]
  code_merge: [{id: all, when: "true", outcome: approve, reason: Approval needed}]
  email_send: [{id: all, when: "true", outcome: approve, reason: Approval needed}]
`

// Options configure a Server.
type Options struct {
	// Interval is the poll interval handed to agents (default 1 s; the
	// server's own default is 5 s).
	Interval time.Duration
	// Ping runs the outbox worker, which delivers ping callbacks over plain
	// http to loopback, as in dev mode.
	Ping bool
}

// Server is a running Countersign.
type Server struct {
	URL     string // the issuer and base URL
	DB      *sqlx.DB
	Service *approvals.Service
	User    approvals.User
	// RS is the resource server registered for Audience.
	RS Credentials
}

// Credentials are a registered client's.
type Credentials struct {
	ID, Secret string
}

// New starts a server; it stops when the test ends.
func New(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	ctx := context.Background()
	db := pgtest.New(t)
	store := approvals.NewStore(db)
	keys, err := approvals.NewKeyStore(db, KEK, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	types := approvals.NewTypeStore(store)
	defs, err := demo.TypeDefinitions()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := types.Apply(ctx, defs); err != nil {
		t.Fatal(err)
	}
	if _, err := approvals.NewPolicyStore(store).Apply(ctx, "test-policy.yaml", []byte(Policy)); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	// The fatigue guards have tests of their own: here, identical requests
	// are separate ones.
	svc := approvals.NewService(store, types, keys, approvals.Config{Issuer: srv.URL, KEK: KEK,
		Interval: o.Interval, Fatigue: &approvals.Fatigue{}})
	mux.Handle("/", web.New(web.Options{DB: db, Service: svc}).Handler())
	s := &Server{URL: srv.URL, DB: db, Service: svc}
	if s.User, err = store.CreateUser(ctx, approvals.NewUser{Email: UserEmail, Name: "Alice"}); err != nil {
		t.Fatal(err)
	}
	rs, secret, err := store.CreateResourceServer(ctx, approvals.NewResourceServer{Name: "API", Audience: Audience,
		Types: []string{"payment_initiation", "database_operation", "code_merge", "email_send"}})
	if err != nil {
		t.Fatal(err)
	}
	s.RS = Credentials{ID: rs.ID, Secret: secret}
	if o.Ping {
		w, err := notify.NewWorker(notify.Config{DB: db, AuthReqID: svc.AuthReqID,
			Policy: notify.Policy{DevLoopback: true}, PollInterval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		wctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { w.Run(wctx) })
		t.Cleanup(func() { stop(); wg.Wait() })
	}
	return s
}

// Agent registers an agent for the payment_initiation type, with
// client_secret_basic and poll delivery unless a says otherwise (Name,
// Domain and Types default too).
func (s *Server) Agent(t testing.TB, a approvals.NewAgent) Credentials {
	t.Helper()
	if a.Name == "" {
		a.Name = "Test agent"
	}
	if a.Domain == "" {
		a.Domain = "agent.example.com"
	}
	if len(a.Types) == 0 {
		a.Types = []string{"payment_initiation"}
	}
	ag, secret, err := s.Service.Store().CreateAgent(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	return Credentials{ID: ag.ID, Secret: secret}
}

// RequestID returns the request id an approval_url names.
func RequestID(approvalURL string) string {
	return approvalURL[strings.LastIndex(approvalURL, "/")+1:]
}

// Approve records the user's approval of a request.
func (s *Server) Approve(t testing.TB, requestID string) {
	t.Helper()
	s.review(t, requestID, approvals.VerdictApprove, "")
}

// Deny records the user's denial of a request, with reason.
func (s *Server) Deny(t testing.TB, requestID, reason string) {
	t.Helper()
	s.review(t, requestID, approvals.VerdictDeny, reason)
}

func (s *Server) review(t testing.TB, requestID string, v approvals.Verdict, reason string) {
	t.Helper()
	if _, err := s.Service.Review(context.Background(), requestID, approvals.Reviewer{UserID: s.User.ID, AMR: []string{"user"}},
		approvals.ReviewInput{Verdict: v, Reason: reason}); err != nil {
		t.Fatalf("review %s: %v", requestID, err)
	}
}

// Request reads a request as the domain stores it.
func (s *Server) Request(t testing.TB, requestID string) approvals.Request {
	t.Helper()
	r, err := s.Service.Store().Request(context.Background(), requestID)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// AwaitRequest waits (up to 20 s) until the stored request satisfies cond.
func (s *Server) AwaitRequest(t testing.TB, requestID, what string, cond func(approvals.Request) bool) approvals.Request {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := s.Request(t, requestID)
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; request: state %s", what, r.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Build compiles the main package in the current directory (a test's own)
// into a temporary directory as name and returns its path; the error
// carries the compiler's output. Wrap it in sync.OnceValues to build once
// per test binary.
func Build(name string) (string, error) {
	dir, err := os.MkdirTemp("", "countersign-"+name)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

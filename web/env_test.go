package web

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/internal/pgtest"
	"github.com/countersign/countersign/rar"
)

// testKEK is the key-encryption key of test servers.
var testKEK = []byte("0123456789abcdef0123456789abcdef")

// Test fixtures every handler test can lean on.
const (
	testAudience = "https://api.example.com"
	paymentEUR   = `[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"500.00"},"creditorName":"Alice Smith","creditorAccount":{"iban":"DE89370400440532013000"}}]`
)

// approveAll is the risk policy of the handler tests: every request waits
// for the user. Tests of the thresholds themselves publish their own.
const approveAll = `types:
  payment_initiation: [{id: all, when: "true", outcome: approve, reason: Approval needed}]
  database_operation: [{id: all, when: "true", outcome: approve, reason: Approval needed}]
  code_merge: [{id: all, when: "true", outcome: approve, reason: Approval needed}]
  email_send: [{id: all, when: "true", outcome: approve, reason: Approval needed}]
`

// testEnv is a real Countersign HTTP server on a fresh database, with the demo
// types, one user, one agent (client_secret_basic), one agent using
// client_secret_post, and one resource server.
type testEnv struct {
	t      testing.TB
	db     *sqlx.DB
	svc    *approvals.Service
	srv    *httptest.Server
	base   string // the issuer: srv.URL, or http://localhost:PORT for browsers
	user   approvals.User
	agent  client // client_secret_basic, all demo types
	post   client // client_secret_post, payment_initiation only
	rs     client // resource server for testAudience
	rsInfo approvals.ResourceServer
	// metrics is what the server's /metrics would serve.
	metrics *prometheus.Registry
}

// client is a registered client's credentials and how it presents them.
type client struct {
	ID, Secret string
	Basic      bool
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	return newTestEnvWith(t, nil)
}

// newTestEnvWith is newTestEnv with a hook that adjusts the service's Config.
func newTestEnvWith(t testing.TB, configure func(*approvals.Config)) *testEnv {
	t.Helper()
	return newTestEnvOn(t, pgtest.New(t), configure, nil)
}

// newTestEnvOn is newTestEnvWith on a given (migrated) database, with the
// server logging to logger (nil: nowhere).
func newTestEnvOn(t testing.TB, db *sqlx.DB, configure func(*approvals.Config), logger *slog.Logger) *testEnv {
	t.Helper()
	return newTestEnvAt(t, db, configure, logger, false)
}

// newTestEnvAt is newTestEnvOn; with localhost the issuer, the relying
// party of passkeys and the pages' origin is http://localhost:PORT (WebAuthn
// refuses IP addresses) and the dev-only pages are served.
func newTestEnvAt(t testing.TB, db *sqlx.DB, configure func(*approvals.Config), logger *slog.Logger, localhost bool) *testEnv {
	return newTestEnvLive(t, db, configure, logger, localhost, nil)
}

// newTestEnvLive is newTestEnvAt with an event listener feeding the pages'
// live updates (nil: none).
func newTestEnvLive(t testing.TB, db *sqlx.DB, configure func(*approvals.Config), logger *slog.Logger, localhost bool, l *approvals.Listener) *testEnv {
	t.Helper()
	ctx := context.Background()
	store := approvals.NewStore(db)
	keys, err := approvals.NewKeyStore(db, testKEK, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	types := approvals.NewTypeStore(store)
	if _, err := types.Apply(ctx, demoTypes(t)); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, db: db}
	if _, err := approvals.NewPolicyStore(store).Apply(ctx, "approve-all.yaml", []byte(approveAll)); err != nil {
		t.Fatal(err)
	}
	handler := http.NewServeMux()
	e.srv = httptest.NewServer(handler)
	t.Cleanup(e.srv.Close)
	e.base = e.srv.URL
	if localhost {
		e.base = "http://localhost:" + e.srv.URL[strings.LastIndex(e.srv.URL, ":")+1:]
	}
	e.metrics = prometheus.NewRegistry()
	// The fatigue guards have tests of their own: here, many identical
	// requests are separate ones.
	cfg := approvals.Config{Issuer: e.base, KEK: testKEK, Metrics: approvals.NewMetrics(e.metrics), Fatigue: &approvals.Fatigue{}}
	if configure != nil {
		configure(&cfg)
	}
	e.svc = approvals.NewService(store, types, keys, cfg)
	handler.Handle("/", New(Options{DB: db, Service: e.svc, Logger: logger, Metrics: e.metrics, Dev: localhost, Listener: l}).Handler())

	if e.user, err = store.CreateUser(ctx, approvals.NewUser{Email: "alice@example.com", Name: "Alice"}); err != nil {
		t.Fatal(err)
	}
	all := []string{"payment_initiation", "database_operation", "code_merge", "email_send"}
	a, secret, err := store.CreateAgent(ctx, approvals.NewAgent{Name: "Test agent", Domain: "agent.example.com", Types: all})
	if err != nil {
		t.Fatal(err)
	}
	e.agent = client{ID: a.ID, Secret: secret, Basic: true}
	p, secret, err := store.CreateAgent(ctx, approvals.NewAgent{Name: "Post agent", Domain: "post.example.com",
		Types: []string{"payment_initiation"}, AuthMethod: approvals.AuthClientSecretPost})
	if err != nil {
		t.Fatal(err)
	}
	e.post = client{ID: p.ID, Secret: secret}
	rs, secret, err := store.CreateResourceServer(ctx, approvals.NewResourceServer{Name: "API", Audience: testAudience, Types: all})
	if err != nil {
		t.Fatal(err)
	}
	e.rs, e.rsInfo = client{ID: rs.ID, Secret: secret, Basic: true}, rs
	return e
}

func demoTypes(t testing.TB) []rar.Type {
	t.Helper()
	types, err := demo.TypeDefinitions()
	if err != nil {
		t.Fatal(err)
	}
	return types
}

// response is an HTTP answer with its body read.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a map.
func (r response) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v\n%s", err, r.Body)
	}
	return m
}

// postForm POSTs form to path as c (nil: no client authentication).
func (e *testEnv) postForm(path string, c *client, form url.Values) response {
	e.t.Helper()
	return e.do(e.formRequest(path, c, form))
}

// formRequest builds the POST of form to path as c (nil: no client
// authentication); the race tests send it later from other goroutines.
func (e *testEnv) formRequest(path string, c *client, form url.Values) *http.Request {
	e.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if c != nil && !c.Basic {
		form.Set("client_id", c.ID)
		form.Set("client_secret", c.Secret)
	}
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c != nil && c.Basic {
		req.Header.Set("Authorization", basicAuth(c.ID, c.Secret))
	}
	return req
}

func (e *testEnv) do(req *http.Request) response {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// authorize makes a backchannel request as c for details and returns the
// auth_req_id and the request id (from approval_url).
func (e *testEnv) authorize(c client, details string, extra url.Values) (authReqID, requestID string) {
	e.t.Helper()
	form := url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"}, "authorization_details": {details}}
	for k, v := range extra {
		form[k] = v
	}
	r := e.postForm("/bc-authorize", &c, form)
	if r.Status != http.StatusOK {
		e.t.Fatalf("bc-authorize: %d %s", r.Status, r.Body)
	}
	m := r.JSON(e.t)
	u := m["approval_url"].(string)
	return m["auth_req_id"].(string), u[strings.LastIndex(u, "/")+1:]
}

// decide records alice's decision through the domain API.
func (e *testEnv) decide(requestID string, approve bool) {
	e.t.Helper()
	if _, err := e.svc.Review(context.Background(), requestID, approvals.Reviewer{UserID: e.user.ID, AMR: []string{"user"}}, approvals.ReviewInput{Verdict: verdict(approve)}); err != nil {
		e.t.Fatalf("decide: %v", err)
	}
}

func verdict(approve bool) approvals.Verdict {
	if approve {
		return approvals.VerdictApprove
	}
	return approvals.VerdictDeny
}

// poll asks the token endpoint once as c.
func (e *testEnv) poll(c client, authReqID string) response {
	e.t.Helper()
	return e.postForm("/token", &c, url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {authReqID}})
}

// resetPoll forgets the last poll time, as if the interval had passed.
func (e *testEnv) resetPoll(requestID string) {
	e.t.Helper()
	if _, err := e.db.Exec(`UPDATE requests SET last_polled_at = NULL WHERE id = $1`, requestID); err != nil {
		e.t.Fatal(err)
	}
}

// token runs the flow to an access token for details.
func (e *testEnv) token(details string) (accessToken, requestID string) {
	e.t.Helper()
	id, reqID := e.authorize(e.agent, details, nil)
	e.decide(reqID, true)
	r := e.poll(e.agent, id)
	if r.Status != http.StatusOK {
		e.t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	return r.JSON(e.t)["access_token"].(string), reqID
}

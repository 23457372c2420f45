package client_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/client"
	"github.com/countersign/countersign/internal/testserver"
	"github.com/countersign/countersign/protocol"
)

// payment is one payment_initiation element of amount EUR to creditor.
func payment(amount, creditor string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":%q},"creditorName":%q,"creditorAccount":{"iban":"DE89370400440532013000"}}]`, amount, creditor))
}

// call is one answer of the token endpoint as the SDK saw it.
type call struct {
	at         time.Time // when it was sent
	status     int
	code       string // "" for 200
	retryAfter string
}

// recorder is the SDK's transport in the tests: it records what the token
// endpoint answered and when, and can rewrite answers.
type recorder struct {
	mu      sync.Mutex
	calls   []call
	jwks    int // GETs of the JWKS
	rewrite func(*http.Response)
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	sent := time.Now()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.URL.Path == "/jwks.json" {
		r.jwks++
	}
	if req.URL.Path != "/token" {
		return resp, nil
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	var e protocol.ErrorResponse
	_ = json.Unmarshal(b, &e)
	if r.rewrite != nil {
		r.rewrite(resp)
	}
	r.calls = append(r.calls, call{at: sent, status: resp.StatusCode, code: e.Error, retryAfter: resp.Header.Get("Retry-After")})
	return resp, nil
}

// sequence is the token endpoint's answers so far, "200" for a token.
func (r *recorder) sequence() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := make([]string, len(r.calls))
	for i, c := range r.calls {
		s[i] = c.code
		if c.status == http.StatusOK {
			s[i] = "200"
		}
	}
	return strings.Join(s, ",")
}

func (r *recorder) tokenCalls() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

func (r *recorder) jwksFetches() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.jwks
}

// agent registers an agent as na says and returns an SDK client for it,
// authenticated with client_secret_basic unless cfg says otherwise.
func agent(t *testing.T, srv *testserver.Server, na approvals.NewAgent, cfg client.Config) (*client.Client, *recorder) {
	t.Helper()
	cred := srv.Agent(t, na)
	rec := &recorder{}
	cfg.Issuer, cfg.ClientID = srv.URL, cred.ID
	if cfg.Key == nil {
		cfg.ClientSecret = cred.Secret
	}
	cfg.HTTPClient = &http.Client{Transport: rec, Timeout: 30 * time.Second}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, rec
}

// onPending returns an OnPending callback that hands the request to the
// test, and the channel it arrives on.
func onPending() (func(client.Pending), chan client.Pending) {
	ch := make(chan client.Pending, 1)
	return func(p client.Pending) { ch <- p }, ch
}

// jwtPayload returns the decoded payload of a compact JWS, unverified.
func jwtPayload(t *testing.T, token string) []byte {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forgeKid returns token with its header's kid replaced (the signature no
// longer matters: no key has that kid).
func forgeKid(t *testing.T, token, kid string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	var h map[string]any
	b, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(b, &h) != nil {
		t.Fatalf("header of %q", token)
	}
	h["kid"] = kid
	b, _ = json.Marshal(h)
	return base64.RawURLEncoding.EncodeToString(b) + "." + parts[1] + "." + parts[2]
}

package web

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/notify"
)

const hintIssuer = "https://idp.example.com"

// hintSigner signs login_hint_token JWTs as a trusted issuer whose JWKS is in
// a file.
type hintSigner struct {
	key  *ecdsa.PrivateKey
	file string
}

func newHintSigner(t *testing.T) hintSigner {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "idp1", Algorithm: "ES256", Use: "sig"}}})
	file := filepath.Join(t.TempDir(), "idp.jwks")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return hintSigner{key: key, file: file}
}

func (h hintSigner) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: h.key}, (&jose.SignerOptions{}).WithHeader("kid", "idp1"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHints(t *testing.T) {
	idp := newHintSigner(t)
	e := newTestEnvWith(t, func(c *approvals.Config) {
		c.LoginHintIssuers = []approvals.LoginHintIssuer{{Issuer: hintIssuer, JWKS: idp.file}}
	})
	// An ID token to use as a hint: from a completed flow.
	id, reqID := e.authorize(e.agent, paymentEUR, nil)
	e.decide(reqID, true)
	tok := e.poll(e.agent, id).JSON(t)
	idToken := tok["id_token"].(string)
	now := time.Now().Unix()
	byEmail := idp.sign(t, map[string]any{"iss": hintIssuer, "exp": now + 60, "aud": e.srv.URL, "jti": randomID(),
		"sub_id": map[string]any{"format": "email", "email": "alice@example.com"}})

	tests := []struct {
		name   string
		form   url.Values
		as     client
		status int
		code   string // "" for success
	}{
		{"id_token_hint", url.Values{"id_token_hint": {idToken}}, e.agent, http.StatusOK, ""},
		{"id_token_hint of another client", url.Values{"id_token_hint": {idToken}}, e.post, http.StatusBadRequest, "invalid_request"},
		{"id_token_hint garbage", url.Values{"id_token_hint": {"e30.e30.e30"}}, e.agent, http.StatusBadRequest, "invalid_request"},
		{"login_hint_token by email", url.Values{"login_hint_token": {byEmail}}, e.agent, http.StatusOK, ""},
		// RFC 7523 §3 as for client assertions: single use, for us, expiring.
		{"replayed login_hint_token", url.Values{"login_hint_token": {byEmail}}, e.agent, http.StatusBadRequest, "invalid_request"},
		{"login_hint_token by sub", url.Values{"login_hint_token": {idp.sign(t, map[string]any{
			"iss": hintIssuer, "exp": now + 60, "sub": e.user.ID, "aud": e.srv.URL, "jti": randomID()})}}, e.agent, http.StatusOK, ""},
		{"login_hint_token with aud a list", url.Values{"login_hint_token": {idp.sign(t, map[string]any{
			"iss": hintIssuer, "exp": now + 60, "sub": e.user.ID, "aud": []string{"https://rp.example.com", e.srv.URL}, "jti": randomID()})}},
			e.agent, http.StatusOK, ""},
		{"expired login_hint_token", url.Values{"login_hint_token": {idp.sign(t, map[string]any{
			"iss": hintIssuer, "exp": now - 300, "aud": e.srv.URL, "jti": randomID(), "email": "alice@example.com"})}}, e.agent, http.StatusBadRequest, "expired_login_hint_token"},
		{"login_hint_token without exp", url.Values{"login_hint_token": {idp.sign(t, map[string]any{
			"iss": hintIssuer, "aud": e.srv.URL, "jti": randomID(), "email": "alice@example.com"})}}, e.agent, http.StatusBadRequest, "invalid_request"},
		{"login_hint_token for another audience", url.Values{"login_hint_token": {idp.sign(t, map[string]any{
			"iss": hintIssuer, "exp": now + 60, "aud": "https://elsewhere.example.com", "jti": randomID(), "email": "alice@example.com"})}}, e.agent, http.StatusBadRequest, "invalid_request"},
		{"login_hint_token without aud", url.Values{"login_hint_token": {idp.sign(t, map[string]any{
			"iss": hintIssuer, "exp": now + 60, "jti": randomID(), "email": "alice@example.com"})}}, e.agent, http.StatusBadRequest, "invalid_request"},
		{"login_hint_token without jti", url.Values{"login_hint_token": {idp.sign(t, map[string]any{
			"iss": hintIssuer, "exp": now + 60, "aud": e.srv.URL, "email": "alice@example.com"})}}, e.agent, http.StatusBadRequest, "invalid_request"},
		{"login_hint_token from an untrusted issuer", url.Values{"login_hint_token": {idp.sign(t, map[string]any{
			"iss": "https://evil.example.com", "exp": now + 60, "email": "alice@example.com"})}}, e.agent, http.StatusBadRequest, "invalid_request"},
		{"login_hint_token for an unknown user", url.Values{"login_hint_token": {idp.sign(t, map[string]any{
			"iss": hintIssuer, "exp": now + 60, "aud": e.srv.URL, "jti": randomID(), "email": "mallory@example.com"})}}, e.agent, http.StatusBadRequest, "unknown_user_id"},
		{"two hints", url.Values{"login_hint": {"alice@example.com"}, "id_token_hint": {idToken}}, e.agent, http.StatusBadRequest, "invalid_request"},
		{"no hint", url.Values{}, e.agent, http.StatusBadRequest, "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form := url.Values{"scope": {"openid"}, "authorization_details": {paymentEUR}}
			for k, v := range tc.form {
				form[k] = v
			}
			r := e.postForm("/bc-authorize", &tc.as, form)
			if r.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.status, r.Body)
			}
			if tc.code != "" && r.JSON(t)["error"] != tc.code {
				t.Fatalf("error %v, want %s: %s", r.JSON(t)["error"], tc.code, r.Body)
			}
			if tc.code == "" {
				// The request is for alice.
				u := r.JSON(t)["approval_url"].(string)
				req, err := e.svc.Store().Request(context.Background(), u[len(e.srv.URL)+len("/approve/"):])
				if err != nil || req.UserID != e.user.ID {
					t.Fatalf("request user %q (err %v), want alice", req.UserID, err)
				}
			}
		})
	}
}

// TestSuspendedUserWhilePending: a user suspended while a request is pending
// never yields a token, even once it is approved; likewise a suspended agent.
func TestSuspendedWhilePending(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()

	// Suspended while the request is pending: a suspended user cannot
	// review it, and once approved by them before, gets no token.
	id, reqID := e.authorize(e.agent, paymentEUR, nil)
	if err := e.svc.Store().SetUserStatus(ctx, e.user.ID, "suspended"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Review(ctx, reqID, approvals.Reviewer{UserID: e.user.ID}, approvals.ReviewInput{Verdict: approvals.VerdictApprove}); !errors.Is(err, approvals.ErrNotFound) {
		t.Fatalf("review by a suspended user: %v, want ErrNotFound", err)
	}
	if err := e.svc.Store().SetUserStatus(ctx, e.user.ID, "active"); err != nil {
		t.Fatal(err)
	}
	e.decide(reqID, true)
	if err := e.svc.Store().SetUserStatus(ctx, e.user.ID, "suspended"); err != nil {
		t.Fatal(err)
	}
	r := e.poll(e.agent, id)
	if r.Status != http.StatusBadRequest || r.JSON(t)["error"] != "access_denied" { // CIBA §11: 400 at the token endpoint
		t.Fatalf("poll for a suspended user: %d %s", r.Status, r.Body)
	}
	if err := e.svc.Store().SetUserStatus(ctx, e.user.ID, "active"); err != nil {
		t.Fatal(err)
	}

	id, reqID = e.authorize(e.agent, paymentEUR, nil)
	e.decide(reqID, true)
	if err := e.svc.Store().SetAgentStatus(ctx, e.agent.ID, "suspended"); err != nil {
		t.Fatal(err)
	}
	e.resetPoll(reqID)
	// The suspended agent can still authenticate, but gets no token.
	r = e.poll(e.agent, id)
	if r.Status == http.StatusOK {
		t.Fatalf("a suspended agent got a token: %s", r.Body)
	}
	if err := e.svc.Store().SetAgentStatus(ctx, e.agent.ID, "active"); err != nil {
		t.Fatal(err)
	}
	e.resetPoll(reqID)
	r = e.poll(e.agent, id)
	if r.Status != http.StatusOK {
		t.Fatalf("after resume: %d %s", r.Status, r.Body)
	}

	// Suspending revokes the tokens already issued: none can be redeemed.
	tok := r.JSON(t)["access_token"].(string)
	if err := e.svc.Store().SetAgentStatus(ctx, e.agent.ID, "suspended"); err != nil {
		t.Fatal(err)
	}
	red := e.postForm("/redeem", &e.rs, url.Values{"token": {tok}, "authorization_details": {paymentEUR}})
	if red.JSON(t)["active"] != false || red.JSON(t)["reason"] != "revoked" {
		t.Fatalf("redeem of a suspended agent's token: %s", red.Body)
	}
	if err := e.svc.Store().SetAgentStatus(ctx, e.agent.ID, "active"); err != nil {
		t.Fatal(err)
	}
	userTok, _ := e.token(paymentEUR)
	if err := e.svc.Store().SetUserStatus(ctx, "alice@example.com", "suspended"); err != nil {
		t.Fatal(err)
	}
	red = e.postForm("/redeem", &e.rs, url.Values{"token": {userTok}, "authorization_details": {paymentEUR}})
	if red.JSON(t)["active"] != false || red.JSON(t)["reason"] != "revoked" {
		t.Fatalf("redeem of a suspended user's token: %s", red.Body)
	}
}

// TestPrivateKeyJWTOverHTTP: an agent registered with private_key_jwt makes a
// request and collects its token authenticating with client assertions.
func TestPrivateKeyJWTOverHTTP(t *testing.T) {
	e := newTestEnv(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "a1", Algorithm: "ES256", Use: "sig"}}})
	a, _, err := e.svc.Store().CreateAgent(context.Background(), approvals.NewAgent{Name: "JWT agent", Domain: "jwt.example.com",
		Types: []string{"payment_initiation"}, AuthMethod: approvals.AuthPrivateKeyJWT, JWKS: jwks})
	if err != nil {
		t.Fatal(err)
	}
	assertion := func(aud string) string {
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "a1"))
		s, err := jwt.Signed(signer).Claims(jwt.Claims{Issuer: a.ID, Subject: a.ID, Audience: jwt.Audience{aud},
			Expiry: jwt.NewNumericDate(time.Now().Add(time.Minute)), IssuedAt: jwt.NewNumericDate(time.Now()), ID: randomID()}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	post := func(path string, form url.Values, assertion string) response {
		form.Set("client_assertion_type", approvals.ClientAssertionType)
		form.Set("client_assertion", assertion)
		return e.postForm(path, nil, form)
	}
	r := post("/bc-authorize", url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"}, "authorization_details": {paymentEUR}},
		assertion(e.srv.URL+"/token"))
	if r.Status != http.StatusOK {
		t.Fatalf("bc-authorize: %d %s", r.Status, r.Body)
	}
	authReqID := r.JSON(t)["auth_req_id"].(string)
	u := r.JSON(t)["approval_url"].(string)
	e.decide(u[len(e.srv.URL)+len("/approve/"):], true)

	replayed := assertion(e.srv.URL)
	if r := post("/token", url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {authReqID}}, replayed); r.Status != http.StatusOK {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	r = post("/token", url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {authReqID}}, replayed)
	if r.Status != http.StatusUnauthorized || r.JSON(t)["error"] != "invalid_client" {
		t.Fatalf("replayed assertion: %d %s", r.Status, r.Body)
	}
	r = post("/token", url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {authReqID}}, assertion("https://other.example.com"))
	if r.Status != http.StatusUnauthorized || r.JSON(t)["error"] != "invalid_client" {
		t.Fatalf("wrong audience: %d %s", r.Status, r.Body)
	}
	r = e.postForm("/token", nil, url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {authReqID},
		"client_assertion_type": {"urn:example:other"}, "client_assertion": {replayed}})
	if r.Status != http.StatusBadRequest || r.JSON(t)["error"] != "invalid_request" {
		t.Fatalf("wrong assertion type: %d %s", r.Status, r.Body)
	}
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return url.QueryEscape(string(b))
}

// TestJWKSURLNoSSRF: a private_key_jwt agent whose jwks_uri points at an
// internal address, or a login_hint_token issuer whose JWKS URL does, cannot
// make the server fetch it: with the default client (a nil HTTPClient) as
// with the production one, the fetch is refused before any connection, the
// agent is refused as invalid_client and the login_hint_token as
// invalid_request.
func TestJWKSURLNoSSRF(t *testing.T) {
	var fetched atomic.Int32
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched.Add(1)
		_, _ = w.Write([]byte(`{"keys":[]}`))
	}))
	defer internal.Close()
	internalTLS := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched.Add(1)
		_, _ = w.Write([]byte(`{"keys":[]}`))
	}))
	defer internalTLS.Close()
	jwksURLs := []string{internal.URL + "/jwks", internalTLS.URL + "/jwks", "https://169.254.169.254/jwks"}
	for _, tc := range []struct {
		name   string
		client *http.Client
	}{
		{"default client", nil},
		{"production client", notify.Policy{}.Client(2*time.Second, nil, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fetched.Store(0)
			var hintIssuers []approvals.LoginHintIssuer
			for i, u := range jwksURLs {
				hintIssuers = append(hintIssuers, approvals.LoginHintIssuer{Issuer: fmt.Sprintf("https://idp%d.example.com", i), JWKS: u})
			}
			e := newTestEnvWith(t, func(c *approvals.Config) {
				c.HTTPClient = tc.client
				c.LoginHintIssuers = hintIssuers
			})
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "k"))
			for i, jwksURL := range jwksURLs {
				a, _, err := e.svc.Store().CreateAgent(context.Background(), approvals.NewAgent{Name: "SSRF agent", Domain: "ssrf.example.com",
					Types: []string{"payment_initiation"}, AuthMethod: approvals.AuthPrivateKeyJWT, JWKSURL: jwksURL})
				if err != nil {
					t.Fatal(err)
				}
				assertion, err := jwt.Signed(signer).Claims(jwt.Claims{Issuer: a.ID, Subject: a.ID, Audience: jwt.Audience{e.srv.URL},
					Expiry: jwt.NewNumericDate(time.Now().Add(time.Minute)), ID: randomID()}).Serialize()
				if err != nil {
					t.Fatal(err)
				}
				r := e.postForm("/bc-authorize", nil, url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"},
					"authorization_details": {paymentEUR}, "client_assertion_type": {approvals.ClientAssertionType}, "client_assertion": {assertion}})
				if r.Status != http.StatusUnauthorized || r.JSON(t)["error"] != "invalid_client" {
					t.Fatalf("agent with jwks_uri %s: %d %s", jwksURL, r.Status, r.Body)
				}

				hint, err := jwt.Signed(signer).Claims(map[string]any{"iss": hintIssuers[i].Issuer, "aud": e.srv.URL,
					"exp": time.Now().Add(time.Minute).Unix(), "jti": randomID(), "email": "alice@example.com"}).Serialize()
				if err != nil {
					t.Fatal(err)
				}
				r = e.postForm("/bc-authorize", &e.agent, url.Values{"scope": {"openid"}, "login_hint_token": {hint},
					"authorization_details": {paymentEUR}})
				if r.Status != http.StatusBadRequest || r.JSON(t)["error"] != "invalid_request" {
					t.Fatalf("login_hint_token issuer with JWKS %s: %d %s", jwksURL, r.Status, r.Body)
				}
			}
			if n := fetched.Load(); n != 0 {
				t.Fatalf("the internal JWKS servers were fetched %d times", n)
			}
		})
	}
}

// TestRedeemAfterTypeChange: a token stays redeemable for exactly the
// approved details after its type's schema is tightened.
func TestRedeemAfterTypeChange(t *testing.T) {
	e := newTestEnv(t)
	tok, _ := e.token(paymentEUR)
	types := demoTypes(t)
	for i := range types {
		if types[i].Name == "payment_initiation" {
			types[i].Schema = []byte(`{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","required":["type","nothing_like_before"]}`)
		}
	}
	if _, err := e.svc.Types().Apply(context.Background(), types); err != nil {
		t.Fatal(err)
	}
	r := e.postForm("/redeem", &e.rs, url.Values{"token": {tok}, "authorization_details": {paymentEUR}})
	if r.JSON(t)["active"] != true {
		t.Fatalf("redeem after the type changed: %s", r.Body)
	}
}

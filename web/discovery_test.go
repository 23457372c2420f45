package web

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/internal/pgtest"
)

func TestDiscovery(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	oidc := e.send(http.MethodGet, "/.well-known/openid-configuration", "", "", "")
	oauth := e.send(http.MethodGet, "/.well-known/oauth-authorization-server", "", "", "")
	for _, r := range []response{oidc, oauth} {
		if r.Status != http.StatusOK {
			t.Fatalf("status = %d; body %s", r.Status, r.Body)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
	}
	if string(oidc.Body) != string(oauth.Body) {
		t.Errorf("the two documents differ:\n%s\n%s", oidc.Body, oauth.Body)
	}
	m := oidc.JSON(t)
	iss := e.srv.URL
	want := map[string]any{
		"issuer":                              iss,
		"token_endpoint":                      iss + "/token",
		"backchannel_authentication_endpoint": iss + "/bc-authorize",
		"jwks_uri":                            iss + "/jwks.json",
		"introspection_endpoint":              iss + "/introspect",
		"revocation_endpoint":                 iss + "/revoke",
		"backchannel_user_code_parameter_supported": true,
		"authorization_details_types_supported":     []any{"code_merge", "database_operation", "email_send", "payment_initiation"},
		"grant_types_supported":                     []any{GrantTypeCIBA},
	}
	for k, v := range want {
		if !reflect.DeepEqual(m[k], v) {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	// RFC 8414 §2: the signing algorithms must be listed wherever
	// private_key_jwt is.
	for _, ep := range []string{"token_endpoint", "revocation_endpoint", "introspection_endpoint"} {
		methods, _ := m[ep+"_auth_methods_supported"].([]any)
		algs, _ := m[ep+"_auth_signing_alg_values_supported"].([]any)
		if slices.Contains(methods, any("private_key_jwt")) && (len(algs) == 0 || slices.Contains(algs, any("none"))) {
			t.Errorf("%s_auth_signing_alg_values_supported = %v with private_key_jwt offered", ep, algs)
		}
	}
	// SPEC §3: poll, and ping once it lands; never push.
	modes, _ := m["backchannel_token_delivery_modes_supported"].([]any)
	if !slices.Contains(modes, any("poll")) || slices.ContainsFunc(modes, func(v any) bool { return v != "poll" && v != "ping" }) {
		t.Errorf("backchannel_token_delivery_modes_supported = %v, want poll (and ping)", modes)
	}
	// Every advertised endpoint answers its method (an OAuth error without
	// credentials, not 404).
	for _, k := range []string{"token_endpoint", "backchannel_authentication_endpoint", "introspection_endpoint",
		"revocation_endpoint", "redeem_endpoint", "backchannel_cancel_endpoint"} {
		u, _ := m[k].(string)
		p, err := url.Parse(u)
		if err != nil || u == "" {
			t.Errorf("%s = %q", k, u)
			continue
		}
		wantOAuthError(t, e.postForm(p.Path, nil, url.Values{}), 401, "invalid_client")
	}
	if u, _ := m["jwks_uri"].(string); u != "" {
		p, _ := url.Parse(u)
		if r := e.send(http.MethodGet, p.Path, "", "", ""); r.Status != http.StatusOK {
			t.Errorf("jwks_uri: %d", r.Status)
		}
	}
}

func TestJWKS(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	r := e.send(http.MethodGet, "/jwks.json", "", "", "")
	if r.Status != http.StatusOK {
		t.Fatalf("status = %d; body %s", r.Status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/jwk-set+json" {
		t.Errorf("Content-Type = %q, want application/jwk-set+json (RFC 7517 §8.5.1)", ct)
	}
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(r.Body, &raw); err != nil {
		t.Fatal(err)
	}
	var ktys []string
	for _, k := range raw.Keys {
		ktys = append(ktys, k["kty"].(string))
		// RFC 7518 §6.2.2 (EC) and §6.3.2 (RSA): the private members.
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
			if _, ok := k[private]; ok {
				t.Errorf("key %v has the private member %q", k["kid"], private)
			}
		}
		if k["kid"] == "" || k["kid"] == nil || k["use"] != "sig" || k["alg"] == nil {
			t.Errorf("key without kid, use sig or alg: %v", k)
		}
		switch k["kty"] {
		case "EC":
			if k["alg"] != "ES256" || k["crv"] != "P-256" {
				t.Errorf("EC key: %v", k)
			}
		case "RSA":
			if k["alg"] != "RS256" {
				t.Errorf("RSA key: %v", k)
			}
		}
	}
	slices.Sort(ktys)
	if !slices.Contains(ktys, "EC") || !slices.Contains(ktys, "RSA") {
		t.Errorf("key types = %v, want EC and RSA", ktys)
	}
	set := e.jwks()
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Errorf("key %s is not public", k.KeyID)
		}
	}
}

// TestOAuthWrongMethod: a method an OAuth endpoint does not accept is
// answered 405 in OAuth JSON with the Allow header, not net/http's text.
func TestOAuthWrongMethod(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	wrong := map[string][]string{
		http.MethodGet:  {http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions},
		http.MethodPost: {http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodPatch},
	}
	allow := map[string]string{http.MethodGet: "GET, HEAD", http.MethodPost: "POST"}
	for accepted, paths := range oauthEndpoints {
		for _, path := range paths {
			for _, m := range wrong[accepted] {
				t.Run(m+" "+path, func(t *testing.T) {
					r := e.send(m, path, "", "", "")
					if got := r.Header.Get("Allow"); got != allow[accepted] {
						t.Errorf("Allow = %q, want %q", got, allow[accepted])
					}
					if m == http.MethodHead {
						// A HEAD answer has no body to check.
						if r.Status != http.StatusMethodNotAllowed {
							t.Fatalf("status %d, want 405", r.Status)
						}
						return
					}
					wantOAuthError(t, r, http.StatusMethodNotAllowed, "invalid_request")
				})
			}
		}
	}
}

// TestOAuthDatabaseDown checks SPEC §10: while PostgreSQL cannot be reached,
// the OAuth endpoints answer 503 temporarily_unavailable, never 500.
func TestOAuthDatabaseDown(t *testing.T) {
	t.Parallel()
	conf := pgtest.NewConfig(t)
	network, address := pgtest.Addr(conf)
	proxy := newFlakyProxy(t, network, address)
	_, port, _ := net.SplitHostPort(proxy.ln.Addr().String())
	conf.Host, conf.Port, conf.Options = "127.0.0.1", port, "sslmode=disable"
	db, err := sqlx.Open("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	e := newTestEnvOn(t, db, nil, slog.New(slog.NewTextHandler(tLogWriter{t}, nil)))
	tok, _ := e.token(paymentEUR)
	pending, _ := e.authorize(e.agent, paymentEUR, nil)

	calls := []struct {
		name, path string
		c          client
		form       url.Values
	}{
		{"bc-authorize", "/bc-authorize", e.agent, url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"}, "authorization_details": {paymentEUR}}},
		{"token", "/token", e.agent, url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {pending}}},
		{"bc-cancel", "/bc-cancel", e.agent, url.Values{"auth_req_id": {pending}}},
		{"introspect", "/introspect", e.rs, url.Values{"token": {tok}}},
		{"redeem", "/redeem", e.rs, url.Values{"token": {tok}, "authorization_details": {paymentEUR}}},
		{"revoke by an agent", "/revoke", e.agent, url.Values{"token": {tok}}},
		{"revoke by a resource server", "/revoke", e.rs, url.Values{"token": {tok}}},
	}
	proxy.setDown(true)
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			r := e.postForm(tc.path, &tc.c, tc.form)
			wantOAuthError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
			if got := r.Header.Get("Retry-After"); got == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
	proxy.setDown(false)
	t.Run("back up", func(t *testing.T) {
		wantActive(t, e, e.introspect(e.rs, tok), claimsOf(t, tok)["txn"].(string))
	})
}

// tLogWriter sends a server's log to the test log.
type tLogWriter struct{ t *testing.T }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestDiscoveryNoTypes: before any type is registered the list of types is
// an empty JSON array (RFC 9396 §10), not null.
func TestDiscoveryNoTypes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	if _, err := e.db.Exec(`DELETE FROM request_type_versions; DELETE FROM request_types`); err != nil {
		t.Fatal(err)
	}
	r := e.send(http.MethodGet, "/.well-known/openid-configuration", "", "", "")
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"authorization_details_types_supported":[]`) {
		t.Fatalf("status %d body %s; want an empty types array", r.Status, r.Body)
	}
}

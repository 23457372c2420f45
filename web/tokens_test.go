package web

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/countersign/countersign/approvals"
)

// otherAudience is the audience of a second resource server.
const otherAudience = "https://other.example.com"

// newResourceServer registers another resource server for audience.
func (e *testEnv) newResourceServer(audience string) client {
	e.t.Helper()
	rs, secret, err := e.svc.Store().CreateResourceServer(context.Background(), approvals.NewResourceServer{
		Name: "Other API", Audience: audience, Types: []string{"code_merge"}})
	if err != nil {
		e.t.Fatal(err)
	}
	return client{ID: rs.ID, Secret: secret, Basic: true}
}

// wantInactive checks an inactive answer byte for byte.
func wantInactive(t *testing.T, r response, reason string) {
	t.Helper()
	want := `{"active":false}` + "\n"
	if reason != "" {
		want = `{"active":false,"reason":"` + reason + `"}` + "\n"
	}
	if r.Status != http.StatusOK || string(r.Body) != want {
		t.Errorf("got %d %s, want 200 %s", r.Status, r.Body, want)
	}
	wantNoStoreJSON(t, r)
}

// wantActive checks an active answer: the token's claims with active and
// token_type.
func wantActive(t *testing.T, e *testEnv, r response, reqID string) map[string]any {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("status = %d; body %s", r.Status, r.Body)
	}
	wantNoStoreJSON(t, r)
	m := r.JSON(t)
	wantKeys(t, m, "active", "token_type", "iss", "sub", "aud", "client_id", "act", "iat", "exp", "jti", "txn", "scope",
		"authorization_details", "authorization_details_hash", "acr", "amr", "auth_time")
	if m["active"] != true || m["token_type"] != "Bearer" || m["txn"] != reqID || m["sub"] != e.user.ID ||
		m["client_id"] != e.agent.ID || m["aud"] != testAudience || m["iss"] != e.srv.URL {
		t.Errorf("active answer: %s", r.Body)
	}
	return m
}

// redeem asks /redeem as the resource server with details (JSON) or a hash.
func (e *testEnv) redeem(rs client, token, details, hash string) response {
	e.t.Helper()
	f := url.Values{"token": {token}}
	if details != "" {
		f.Set("authorization_details", details)
	}
	if hash != "" {
		f.Set("authorization_details_hash", hash)
	}
	return e.postForm("/redeem", &rs, f)
}

func (e *testEnv) introspect(rs client, token string) response {
	e.t.Helper()
	return e.postForm("/introspect", &rs, url.Values{"token": {token}})
}

func TestIntrospect(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	other := e.newResourceServer(otherAudience)

	t.Run("active", func(t *testing.T) {
		tok, reqID := e.token(paymentEUR)
		m := wantActive(t, e, e.introspect(e.rs, tok), reqID)
		var claims map[string]any
		payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
		if err := json.Unmarshal(payload, &claims); err != nil {
			t.Fatal(err)
		}
		for k, v := range claims {
			if b1, b2 := jsonText(t, v), jsonText(t, m[k]); b1 != b2 {
				t.Errorf("%s = %s, the token says %s", k, b2, b1)
			}
		}
	})
	t.Run("never consumes", func(t *testing.T) {
		tok, reqID := e.token(paymentEUR)
		wantActive(t, e, e.introspect(e.rs, tok), reqID)
		wantActive(t, e, e.introspect(e.rs, tok), reqID)
		wantActive(t, e, e.redeem(e.rs, tok, paymentEUR, ""), reqID)
	})
	t.Run("client_secret_post", func(t *testing.T) {
		tok, reqID := e.token(paymentEUR)
		rs := client{ID: e.rs.ID, Secret: e.rs.Secret}
		wantActive(t, e, e.introspect(rs, tok), reqID)
	})
	inactive := []struct {
		name  string
		token func(t *testing.T) string
		rs    client
	}{
		{"redeemed", func(t *testing.T) string {
			tok, _ := e.token(paymentEUR)
			if r := e.redeem(e.rs, tok, paymentEUR, ""); r.JSON(t)["active"] != true {
				t.Fatalf("redeem: %s", r.Body)
			}
			return tok
		}, e.rs},
		{"revoked", func(t *testing.T) string {
			tok, _ := e.token(paymentEUR)
			if r := e.postForm("/revoke", &e.agent, url.Values{"token": {tok}}); r.Status != http.StatusOK {
				t.Fatalf("revoke: %d %s", r.Status, r.Body)
			}
			return tok
		}, e.rs},
		{"expired", func(t *testing.T) string {
			tok, reqID := e.token(paymentEUR)
			e.exec(`UPDATE requests SET token_expires_at = now() - interval '1 second' WHERE id = $1`, reqID)
			return tok
		}, e.rs},
		{"garbage", func(t *testing.T) string { return "garbage" }, e.rs},
		{"another audience", func(t *testing.T) string {
			tok, _ := e.token(paymentEUR)
			return tok
		}, other},
		{"an ID token", func(t *testing.T) string {
			id, reqID := e.authorize(e.agent, paymentEUR, nil)
			e.decide(reqID, true)
			return e.poll(e.agent, id).JSON(t)["id_token"].(string)
		}, e.rs},
	}
	for _, tc := range inactive {
		t.Run("inactive "+tc.name, func(t *testing.T) {
			wantInactive(t, e.introspect(tc.rs, tc.token(t)), "")
		})
	}
	t.Run("agent credentials", func(t *testing.T) {
		tok, _ := e.token(paymentEUR)
		r := e.introspect(e.agent, tok)
		wantOAuthError(t, r, 401, "invalid_client")
		if got := r.Header.Get("WWW-Authenticate"); got != `Basic realm="countersign"` {
			t.Errorf("WWW-Authenticate = %q", got)
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		bad := client{ID: e.rs.ID, Secret: "wrong", Basic: true}
		wantOAuthError(t, e.introspect(bad, "x"), 401, "invalid_client")
	})
	t.Run("no credentials", func(t *testing.T) {
		wantOAuthError(t, e.postForm("/introspect", nil, url.Values{"token": {"x"}}), 401, "invalid_client")
	})
	t.Run("missing token", func(t *testing.T) {
		wantOAuthError(t, e.postForm("/introspect", &e.rs, nil), 400, "invalid_request")
	})
}

func jsonText(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// foreignToken signs claims as at+jwt with a P-256 key that is not ours.
func foreignToken(t *testing.T, kid string, claims any) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claimsOf decodes a JWT's payload without verifying it.
func claimsOf(t *testing.T, token string) map[string]any {
	t.Helper()
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// withPayload replaces a JWT's payload and keeps its header and signature.
func withPayload(t *testing.T, token string, claims map[string]any) string {
	t.Helper()
	parts := strings.Split(token, ".")
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func TestRedeem(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	other := e.newResourceServer(otherAudience)

	t.Run("once", func(t *testing.T) {
		tok, reqID := e.token(paymentEUR)
		m := wantActive(t, e, e.redeem(e.rs, tok, paymentEUR, ""), reqID)
		if m["authorization_details_hash"] != claimsOf(t, tok)["authorization_details_hash"] {
			t.Errorf("hash = %v", m["authorization_details_hash"])
		}
		wantInactive(t, e.redeem(e.rs, tok, paymentEUR, ""), "already_redeemed")
		wantInactive(t, e.redeem(e.rs, tok, "", claimsOf(t, tok)["authorization_details_hash"].(string)), "already_redeemed")
		var state, by string
		if err := e.db.QueryRow(`SELECT state, redeemed_by FROM requests WHERE id = $1`, reqID).Scan(&state, &by); err != nil {
			t.Fatal(err)
		}
		if state != "redeemed" || by != e.rs.ID {
			t.Errorf("stored: %s by %s", state, by)
		}
	})
	t.Run("transaction_mismatch does not spend the token", func(t *testing.T) {
		tok, reqID := e.token(paymentEUR)
		wantInactive(t, e.redeem(e.rs, tok, strings.Replace(paymentEUR, "500.00", "500.01", 1), ""), "transaction_mismatch")
		wantInactive(t, e.redeem(e.rs, tok, strings.Replace(paymentEUR, "DE89370400440532013000", "GB82WEST12345698765432", 1), ""), "transaction_mismatch")
		wantInactive(t, e.redeem(e.rs, tok, paymentEUR[:len(paymentEUR)-1]+`,`+paymentEUR[1:], ""), "transaction_mismatch")
		wantInactive(t, e.redeem(e.rs, tok, `not json`, ""), "transaction_mismatch")
		wantActive(t, e, e.redeem(e.rs, tok, paymentEUR, ""), reqID)
	})
	t.Run("transaction_mismatch by hash", func(t *testing.T) {
		tok, reqID := e.token(paymentEUR)
		wantInactive(t, e.redeem(e.rs, tok, "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "transaction_mismatch")
		wantActive(t, e, e.redeem(e.rs, tok, "", claimsOf(t, tok)["authorization_details_hash"].(string)), reqID)
	})
	t.Run("audience_mismatch", func(t *testing.T) {
		tok, reqID := e.token(paymentEUR)
		wantInactive(t, e.redeem(other, tok, paymentEUR, ""), "audience_mismatch")
		// Not spent either.
		wantActive(t, e, e.redeem(e.rs, tok, paymentEUR, ""), reqID)
	})
	t.Run("expired", func(t *testing.T) {
		tok, reqID := e.token(paymentEUR)
		e.exec(`UPDATE requests SET token_expires_at = now() - interval '1 second' WHERE id = $1`, reqID)
		wantInactive(t, e.redeem(e.rs, tok, paymentEUR, ""), "expired")
	})
	t.Run("revoked", func(t *testing.T) {
		tok, _ := e.token(paymentEUR)
		if r := e.postForm("/revoke", &e.agent, url.Values{"token": {tok}}); r.Status != http.StatusOK {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
		wantInactive(t, e.redeem(e.rs, tok, paymentEUR, ""), "revoked")
	})

	tok, _ := e.token(paymentEUR)
	claims := claimsOf(t, tok)
	ring, err := e.svc.Keys().Keyring(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ourKID := ring.JWKS().Keys[0].KeyID
	tampered := func(k string, v any) string {
		c := claimsOf(t, tok)
		c[k] = v
		return withPayload(t, tok, c)
	}
	idToken := func() string {
		id, reqID := e.authorize(e.agent, paymentEUR, nil)
		e.decide(reqID, true)
		return e.poll(e.agent, id).JSON(t)["id_token"].(string)
	}()
	parts := strings.Split(tok, ".")
	invalid := []struct{ name, token string }{
		{"garbage", "garbage"},
		{"empty segments", ".."},
		{"five segments", "a.b.c.d.e"},
		{"signed by a key not ours", foreignToken(t, "foreign", claims)},
		{"signed by a key not ours under our kid", foreignToken(t, ourKID, claims)},
		{"tampered audience", tampered("aud", otherAudience)},
		{"tampered subject", tampered("sub", "usr_mallory")},
		{"tampered details hash", tampered("authorization_details_hash", "AAAA")},
		{"no signature", parts[0] + "." + parts[1] + "."},
		{"alg none", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + parts[1] + "."},
		{"an ID token", idToken},
	}
	for _, tc := range invalid {
		t.Run("invalid_token "+tc.name, func(t *testing.T) {
			wantInactive(t, e.redeem(e.rs, tc.token, paymentEUR, ""), "invalid_token")
		})
	}
	t.Run("the genuine token after the forgeries", func(t *testing.T) {
		wantActive(t, e, e.redeem(e.rs, tok, paymentEUR, ""), claims["txn"].(string))
	})

	// RFC 8785: the hash is over the canonical form, so any spelling of the
	// same JSON matches.
	variants := []struct{ name, issued, redeemed string }{
		{"key order", paymentEUR,
			`[{"creditorAccount":{"iban":"DE89370400440532013000"},"creditorName":"Alice Smith","instructedAmount":{"amount":"500.00","currency":"EUR"},"type":"payment_initiation"}]`},
		{"whitespace", paymentEUR, " [ {\n\t\"type\" : \"payment_initiation\" ,\"instructedAmount\":{ \"currency\":\"EUR\",\"amount\":\"500.00\"},\r\n\"creditorName\":\"Alice Smith\",\"creditorAccount\":{\"iban\":\"DE89370400440532013000\"} } ] "},
		{"string escapes", paymentEUR, strings.Replace(paymentEUR, `"Alice Smith"`, `"\u0041lice\u0020Smith"`, 1)},
		{"number spelling 1e2", dbDelete, strings.Replace(dbDelete, `"estimated_rows":100`, `"estimated_rows":1e2`, 1)},
		{"number spelling 100.0", dbDelete, strings.Replace(dbDelete, `"estimated_rows":100`, `"estimated_rows":100.0`, 1)},
		{"number spelling 1E+2", dbDelete, strings.Replace(dbDelete, `"estimated_rows":100`, `"estimated_rows":1E+2`, 1)},
	}
	for _, tc := range variants {
		t.Run("match "+tc.name, func(t *testing.T) {
			tok, reqID := e.token(tc.issued)
			wantActive(t, e, e.redeem(e.rs, tok, tc.redeemed, ""), reqID)
		})
	}

	t.Run("invalid_request both details and hash", func(t *testing.T) {
		tok, _ := e.token(paymentEUR)
		wantOAuthError(t, e.redeem(e.rs, tok, paymentEUR, claimsOf(t, tok)["authorization_details_hash"].(string)), 400, "invalid_request")
	})
	t.Run("invalid_request neither details nor hash", func(t *testing.T) {
		tok, _ := e.token(paymentEUR)
		wantOAuthError(t, e.redeem(e.rs, tok, "", ""), 400, "invalid_request")
	})
	t.Run("invalid_request no token", func(t *testing.T) {
		wantOAuthError(t, e.redeem(e.rs, "", paymentEUR, ""), 400, "invalid_request")
	})
	t.Run("invalid_client agent credentials", func(t *testing.T) {
		tok, _ := e.token(paymentEUR)
		wantOAuthError(t, e.redeem(e.agent, tok, paymentEUR, ""), 401, "invalid_client")
	})
	t.Run("invalid_client wrong secret", func(t *testing.T) {
		wantOAuthError(t, e.redeem(client{ID: e.rs.ID, Secret: "x", Basic: true}, "x", paymentEUR, ""), 401, "invalid_client")
	})
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	ok := func(t *testing.T, r response) {
		t.Helper()
		// RFC 7009 §2.2: 200, whether or not the token was valid.
		if r.Status != http.StatusOK || len(r.Body) != 0 {
			t.Errorf("got %d %q, want 200 and no body", r.Status, r.Body)
		}
		if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control = %q", cc)
		}
	}

	t.Run("own token", func(t *testing.T) {
		tok, _ := e.token(paymentEUR)
		ok(t, e.postForm("/revoke", &e.agent, url.Values{"token": {tok}, "token_type_hint": {"access_token"}}))
		wantInactive(t, e.introspect(e.rs, tok), "")
		wantInactive(t, e.redeem(e.rs, tok, paymentEUR, ""), "revoked")
		// Revoking again is fine.
		ok(t, e.postForm("/revoke", &e.agent, url.Values{"token": {tok}}))
	})
	t.Run("another agent's token", func(t *testing.T) {
		tok, reqID := e.token(paymentEUR)
		// RFC 7009 §2.1: a token issued to another client is refused.
		wantOAuthError(t, e.postForm("/revoke", &e.post, url.Values{"token": {tok}}), 400, "unauthorized_client")
		wantActive(t, e, e.redeem(e.rs, tok, paymentEUR, ""), reqID)
	})
	t.Run("by the resource server", func(t *testing.T) {
		tok, _ := e.token(paymentEUR)
		ok(t, e.postForm("/revoke", &e.rs, url.Values{"token": {tok}}))
		wantInactive(t, e.redeem(e.rs, tok, paymentEUR, ""), "revoked")
	})
	t.Run("by a resource server of another audience", func(t *testing.T) {
		other := e.newResourceServer(otherAudience)
		tok, reqID := e.token(paymentEUR)
		wantOAuthError(t, e.postForm("/revoke", &other, url.Values{"token": {tok}}), 400, "unauthorized_client")
		wantActive(t, e, e.redeem(e.rs, tok, paymentEUR, ""), reqID)
	})
	t.Run("redeemed token stays redeemed", func(t *testing.T) {
		tok, _ := e.token(paymentEUR)
		e.redeem(e.rs, tok, paymentEUR, "")
		ok(t, e.postForm("/revoke", &e.agent, url.Values{"token": {tok}}))
		wantInactive(t, e.redeem(e.rs, tok, paymentEUR, ""), "already_redeemed")
	})
	t.Run("garbage", func(t *testing.T) {
		ok(t, e.postForm("/revoke", &e.agent, url.Values{"token": {"garbage"}}))
	})
	t.Run("bad credentials", func(t *testing.T) {
		tok, _ := e.token(paymentEUR)
		r := e.postForm("/revoke", &client{ID: e.agent.ID, Secret: "wrong", Basic: true}, url.Values{"token": {tok}})
		wantOAuthError(t, r, 401, "invalid_client")
		if got := r.Header.Get("WWW-Authenticate"); got != `Basic realm="countersign"` {
			t.Errorf("WWW-Authenticate = %q", got)
		}
		wantOAuthError(t, e.postForm("/revoke", nil, url.Values{"token": {tok}}), 401, "invalid_client")
		wantOAuthError(t, e.postForm("/revoke", &client{ID: e.post.ID, Secret: "wrong"}, url.Values{"token": {tok}}), 401, "invalid_client")
	})
	t.Run("missing token", func(t *testing.T) {
		wantOAuthError(t, e.postForm("/revoke", &e.agent, nil), 400, "invalid_request")
	})
}

// TestTokenGrantedScope: scope values the server does not understand are
// ignored (OpenID Core §3.1.2.1) and the token response says what was
// granted (RFC 6749 §5.1).
func TestTokenGrantedScope(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	id, reqID := e.authorize(e.agent, paymentEUR, url.Values{"scope": {"openid profile email openid"}})
	e.decide(reqID, true)
	r := e.poll(e.agent, id)
	if r.Status != http.StatusOK {
		t.Fatalf("status = %d; body %s", r.Status, r.Body)
	}
	if got := r.JSON(t)["scope"]; got != "openid email" {
		t.Fatalf("scope = %v, want the understood values, openid email", got)
	}
}

// TestTokenAutoAllowedHasNoAuthTime: a request a rule allowed was decided by
// no human, so neither token says when one authenticated; acr says policy.
func TestTokenAutoAllowedHasNoAuthTime(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	allow := "types:\n  payment_initiation:\n    - id: all\n      outcome: allow\n      reason: test\n"
	if _, err := approvals.NewPolicyStore(approvals.NewStore(e.db)).Apply(context.Background(), "allow.yaml", []byte(allow)); err != nil {
		t.Fatal(err)
	}
	id, _ := e.authorize(e.agent, paymentEUR, nil)
	r := e.poll(e.agent, id)
	if r.Status != http.StatusOK {
		t.Fatalf("status = %d; body %s", r.Status, r.Body)
	}
	m := r.JSON(t)
	_, at := e.verifyJWT(t, m["access_token"].(string), jose.ES256)
	_, idt := e.verifyJWT(t, m["id_token"].(string), jose.ES256)
	for name, c := range map[string]map[string]any{"access token": at, "ID token": idt} {
		if _, ok := c["auth_time"]; ok {
			t.Errorf("%s has auth_time %v, but no human authenticated", name, c["auth_time"])
		}
		if c["acr"] != approvals.ACRPolicy {
			t.Errorf("%s acr = %v, want %s", name, c["acr"], approvals.ACRPolicy)
		}
	}
}

// TestTokenNotBornExpired: a poll in the last second of an approved
// request's life answers expired_token rather than spending the request on a
// token that expires as it is issued.
func TestTokenNotBornExpired(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	id, reqID := e.authorize(e.agent, paymentEUR, nil)
	e.decide(reqID, true)
	// Early in a second of the database's clock, make the request expire
	// at the end of it.
	for {
		var frac float64
		if err := e.db.Get(&frac, `SELECT extract(epoch FROM now()) - floor(extract(epoch FROM now()))`); err != nil {
			t.Fatal(err)
		}
		if frac < 0.5 {
			break
		}
		time.Sleep(time.Duration((1.02 - frac) * float64(time.Second)))
	}
	if _, err := e.db.Exec(`UPDATE requests SET expires_at = date_trunc('second', now()) + interval '950 milliseconds' WHERE id = $1`, reqID); err != nil {
		t.Fatal(err)
	}
	r := e.poll(e.agent, id)
	if r.Status != http.StatusBadRequest || r.JSON(t)["error"] != "expired_token" {
		t.Fatalf("status %d body %s; want 400 expired_token", r.Status, r.Body)
	}
	var state string
	if err := e.db.Get(&state, `SELECT state FROM requests WHERE id = $1`, reqID); err != nil {
		t.Fatal(err)
	}
	if state != string(approvals.StateApproved) && state != string(approvals.StateExpired) {
		t.Fatalf("state = %s: the request was spent", state)
	}
}

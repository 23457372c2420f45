package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/client"
	"github.com/countersign/countersign/internal/testserver"
	"github.com/countersign/countersign/protocol"
)

// paymentAPI is a resource server's payment endpoint behind a Guard: the
// body {"amount": "…", "creditor": "…"} is the payment it executes, and
// payments over 40 EUR need a step-up.
type paymentAPI struct {
	srv      *testserver.Server
	api      *httptest.Server
	executed chan *protocol.AccessTokenClaims
}

func newPaymentAPI(t *testing.T, srv *testserver.Server, hc *http.Client) *paymentAPI {
	t.Helper()
	v, err := client.NewVerifier(client.VerifierConfig{Issuer: srv.URL, Audience: testserver.Audience, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := client.NewRedeemer(client.RedeemerConfig{Issuer: srv.URL, ClientID: srv.RS.ID, ClientSecret: srv.RS.Secret, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	p := &paymentAPI{srv: srv, executed: make(chan *protocol.AccessTokenClaims, 10)}
	g := &client.Guard{
		Verifier: v, Redeemer: rd,
		Details: func(r *http.Request) (any, error) {
			var body struct{ Amount, Creditor string }
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				return nil, err
			}
			return payment(body.Amount, body.Creditor), nil
		},
		ACR: func(r *http.Request, details json.RawMessage) []string {
			if r.URL.Query().Has("large") {
				return []string{protocol.ACRStepUp}
			}
			return nil
		},
	}
	p.api = httptest.NewServer(g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := client.ClaimsFromContext(r.Context())
		b, _ := io.ReadAll(r.Body)
		if !ok || !strings.Contains(string(b), `"amount"`) {
			http.Error(w, "no claims or no body", http.StatusInternalServerError)
			return
		}
		p.executed <- c
		fmt.Fprintln(w, "paid")
	})))
	t.Cleanup(p.api.Close)
	return p
}

// pay calls the API with token (none when "") for amount to creditor.
func (p *paymentAPI) pay(t *testing.T, query, token, amount, creditor string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.api.URL+"/pay"+query, strings.NewReader(fmt.Sprintf(`{"amount":%q,"creditor":%q}`, amount, creditor)))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

// token gets an access token for amount EUR to creditor (a rule allows up
// to 100 EUR at once).
func token(t *testing.T, c *client.Client, amount, creditor string) string {
	t.Helper()
	tok, err := c.RequestApproval(t.Context(), payment(amount, creditor), client.RequestOptions{LoginHint: testserver.UserEmail})
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// TestGuard: the middleware lets a payment through once, with the token
// issued for exactly it, and answers everything else with the challenge
// RFC 6750 and RFC 9470 call for, spending nothing it refused.
func TestGuard(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.Options{})
	c, _ := agent(t, srv, approvals.NewAgent{}, client.Config{})
	api := newPaymentAPI(t, srv, nil)
	state := func(tok string) approvals.State {
		var claims protocol.AccessTokenClaims
		if err := json.Unmarshal(jwtPayload(t, tok), &claims); err != nil {
			t.Fatal(err)
		}
		return srv.Request(t, claims.Txn).State
	}

	t.Run("missing token", func(t *testing.T) {
		t.Parallel()
		status, challenge := api.pay(t, "", "", "50.00", "Bob")
		if status != http.StatusUnauthorized || challenge != `Bearer realm="countersign"` {
			t.Fatalf("%d %q, want 401 with a bare Bearer challenge (RFC 6750 §3.1)", status, challenge)
		}
	})
	t.Run("not a token", func(t *testing.T) {
		t.Parallel()
		status, challenge := api.pay(t, "", "abc.def.ghi", "50.00", "Bob")
		if status != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) {
			t.Fatalf("%d %q, want 401 invalid_token", status, challenge)
		}
	})
	t.Run("wrong hash, then the right one, then a replay", func(t *testing.T) {
		t.Parallel()
		tok := token(t, c, "50.00", "Bob")
		status, challenge := api.pay(t, "", tok, "60.00", "Bob")
		if status != http.StatusForbidden || !strings.Contains(challenge, `error="insufficient_scope"`) {
			t.Fatalf("other amount: %d %q, want 403 insufficient_scope", status, challenge)
		}
		if s := state(tok); s != approvals.StateTokenIssued {
			t.Fatalf("after the refusal the token is %s, want unspent", s)
		}
		if status, challenge := api.pay(t, "", tok, "50.00", "Bob"); status != http.StatusOK {
			t.Fatalf("the approved payment: %d %q", status, challenge)
		}
		claims := <-api.executed
		if claims.Subject != srv.User.ID || claims.ACR != protocol.ACRPolicy {
			t.Errorf("handler saw claims %+v", claims)
		}
		status, challenge = api.pay(t, "", tok, "50.00", "Bob")
		if status != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) || !strings.Contains(challenge, "already_redeemed") {
			t.Fatalf("replay: %d %q, want 401 invalid_token, already redeemed", status, challenge)
		}
		if len(api.executed) != 0 {
			t.Fatal("the replay was executed")
		}
	})
	t.Run("step-up", func(t *testing.T) {
		t.Parallel()
		tok := token(t, c, "45.00", "Bob")
		status, challenge := api.pay(t, "?large", tok, "45.00", "Bob")
		want := `Bearer realm="countersign", error="insufficient_user_authentication", error_description="a different authentication level is required", acr_values="urn:countersign:acr:step-up"`
		if status != http.StatusUnauthorized || challenge != want {
			t.Fatalf("%d %q\nwant 401 %q", status, challenge, want)
		}
		if s := state(tok); s != approvals.StateTokenIssued {
			t.Fatalf("after the challenge the token is %s, want unspent", s)
		}
	})
}

// TestRedeem: Redeem spends a token once; a mismatch leaves it unspent.
func TestRedeem(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.Options{})
	c, _ := agent(t, srv, approvals.NewAgent{}, client.Config{})
	rd, err := client.NewRedeemer(client.RedeemerConfig{Issuer: srv.URL, ClientID: srv.RS.ID, ClientSecret: srv.RS.Secret})
	if err != nil {
		t.Fatal(err)
	}
	tok := token(t, c, "30.00", "Bob")
	if _, err := rd.Redeem(t.Context(), tok, payment("31.00", "Bob")); !errors.Is(err, client.ErrTransactionMismatch) {
		t.Fatalf("other details: %v, want ErrTransactionMismatch", err)
	}
	if _, err := rd.Redeem(t.Context(), tok, map[string]any{}); !errors.Is(err, client.ErrInvalidDetails) {
		t.Fatalf("redeem for {}: %v, want ErrInvalidDetails", err)
	}
	// Another spelling of the same details is the same transaction.
	claims, err := rd.Redeem(t.Context(), tok, []map[string]any{{
		"creditorAccount": map[string]any{"iban": "DE89370400440532013000"}, "creditorName": "Bob",
		"instructedAmount": map[string]any{"amount": "30.00", "currency": "EUR"}, "type": "payment_initiation"}})
	if err != nil {
		t.Fatalf("the approved details, another key order: %v", err)
	}
	if claims.Subject != srv.User.ID {
		t.Errorf("claims %+v", claims)
	}
	if _, err := rd.Redeem(t.Context(), tok, payment("30.00", "Bob")); !errors.Is(err, client.ErrAlreadyRedeemed) {
		t.Fatalf("second redeem: %v, want ErrAlreadyRedeemed", err)
	}
}

// TestVerifierKeys: the Verifier fetches the JWKS once, again when a token
// names a key it has not seen (after a rotation), and no more than once
// per MinRefresh however many unknown kids arrive.
func TestVerifierKeys(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.Options{})
	c, _ := agent(t, srv, approvals.NewAgent{}, client.Config{})
	rec := &recorder{}
	v, err := client.NewVerifier(client.VerifierConfig{Issuer: srv.URL, Audience: testserver.Audience, HTTPClient: &http.Client{Transport: rec}})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := v.Verify(t.Context(), token(t, c, "10.00", "Bob")); err != nil {
			t.Fatal(err)
		}
	}
	if n := rec.jwksFetches(); n != 1 {
		t.Fatalf("%d JWKS fetches for three tokens of one key, want 1", n)
	}
	if _, err := srv.Service.Keys().Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	rotated := token(t, c, "10.00", "Bob")
	if _, err := v.Verify(t.Context(), rotated); err != nil {
		t.Fatalf("token of the rotated-in key: %v", err)
	}
	if n := rec.jwksFetches(); n != 2 {
		t.Fatalf("%d JWKS fetches after the rotation, want 2", n)
	}
	// Made-up kids within MinRefresh of that fetch: no fetch at all.
	forged := forgeKid(t, rotated, "no-such-key")
	for range 5 {
		if _, err := v.Verify(t.Context(), forged); !errors.Is(err, client.ErrUnknownKey) {
			t.Fatalf("unknown kid: %v, want ErrUnknownKey", err)
		}
	}
	if n := rec.jwksFetches(); n != 2 {
		t.Fatalf("%d JWKS fetches after five unknown kids, want still 2", n)
	}
	other, err := client.NewVerifier(client.VerifierConfig{Issuer: srv.URL, Audience: "https://other.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Verify(t.Context(), rotated); !errors.Is(err, client.ErrWrongAudience) {
		t.Fatalf("another audience: %v, want ErrWrongAudience", err)
	}
}

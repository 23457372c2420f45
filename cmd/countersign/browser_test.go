package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/internal/browser"
	"github.com/countersign/countersign/internal/pgtest"
)

// freeLocalhost returns a free loopback port and the localhost URL on it:
// WebAuthn refuses IP addresses as relying parties, so servers a browser
// signs in to are reached as localhost.
func freeLocalhost(t *testing.T) (addr, base string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	return addr, fmt.Sprintf("http://localhost:%d", ln.Addr().(*net.TCPAddr).Port)
}

// agentPost sends an agent's form to the server.
func agentPost(t *testing.T, base, path, id, secret string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

// jwtClaims decodes a JWT's payload without verifying it (the token tests
// verify signatures; here only what the token says matters).
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS compact serialization: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestStepUpInBrowser: the real server, a user enrolled through the link
// `users invite` prints, a payment over the demo threshold approved with
// the browser's passkey (user verification required), the token's acr and
// amr, and the stored assertion re-verified by `evidence verify`; then an
// authenticator that does not verify the user approves nothing.
func TestStepUpInBrowser(t *testing.T) {
	conf := pgtest.NewConfig(t)
	db, err := sqlx.Connect("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	store := approvals.NewStore(db)
	if _, err := approvals.NewTypeStore(store).Apply(ctx, demoTypes(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := approvals.NewPolicyStore(store).Apply(ctx, "policy.yaml", demo.Policy()); err != nil {
		t.Fatal(err)
	}
	agent, secret, err := store.CreateAgent(ctx, approvals.NewAgent{Name: "Invoice bot", Domain: "bot.example.com", Types: []string{"payment_initiation"}})
	if err != nil {
		t.Fatal(err)
	}

	addr, base := freeLocalhost(t)
	// An http issuer is for development only: --dev (which on a database
	// of its own also seeds the demo, beside this test's agent).
	environ := env("DATABASE_URL="+conf.URL(), testKEK, "COUNTERSIGN_DEV=true", "COUNTERSIGN_ISSUER="+base,
		"COUNTERSIGN_ADDR="+addr, "COUNTERSIGN_METRICS_ADDR=off")
	out, stderr, code := runCLI(t, environ, "users", "invite", "--email", "alice@example.com", "--name", "Alice", "--json")
	if code != 0 {
		t.Fatalf("users invite: exit %d\n%s%s", code, out, stderr)
	}
	var invite struct {
		UserID        string `json:"user_id"`
		EnrollmentURL string `json:"enrollment_url"`
	}
	if err := json.Unmarshal([]byte(out), &invite); err != nil || !strings.HasPrefix(invite.EnrollmentURL, base+"/enroll/") {
		t.Fatalf("users invite printed %s (%v), want an enrollment URL under %s", out, err, base)
	}
	serve := exec.Command(binary, "serve")
	serve.Env = environ
	p, _ := start(t, serve)
	t.Cleanup(func() { _ = serve.Process.Signal(os.Interrupt); _ = p.wait(t, 30*time.Second) })
	waitReady(t, base, 30*time.Second)

	b := browser.New(t)
	tab := b.NewTab(t)
	auth := tab.AddAuthenticator(t, nil)
	tab.Navigate(t, invite.EnrollmentURL)
	tab.Click(t, "#enroll button[type=submit]")
	tab.WaitVisible(t, "#signout")

	ask := func(binding string) (authReqID, id string) {
		t.Helper()
		status, m := agentPost(t, base, "/bc-authorize", agent.ID, secret, url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"},
			"binding_message":       {binding},
			"authorization_details": {`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"25000.00"},"creditorName":"Globex GmbH","creditorAccount":{"iban":"DE89370400440532013000"}}]`}})
		if status != http.StatusOK {
			t.Fatalf("bc-authorize: %d %v", status, m)
		}
		u := m["approval_url"].(string)
		return m["auth_req_id"].(string), u[strings.LastIndex(u, "/")+1:]
	}

	authReqID, id := ask("PAY-25000")
	tab.Navigate(t, base+"/approve/"+id)
	// The request's notice may reach the page after it loaded, and the page
	// then reads itself again: TextHas waits for it to settle.
	if got := tab.TextHas(t, "#need", "passkey (step-up)"); !strings.Contains(got, "passkey (step-up)") {
		t.Errorf("what is needed reads %q", got)
	}
	tab.Click(t, "#approve")
	tab.WaitVisible(t, "#outcome")
	if got := tab.TextIs(t, "#outcome", "This request was approved."); got != "This request was approved." {
		t.Fatalf("after the step-up the page says %q", got)
	}
	status, tok := agentPost(t, base, "/token", agent.ID, secret, url.Values{"grant_type": {"urn:openid:params:grant-type:ciba"}, "auth_req_id": {authReqID}})
	if status != http.StatusOK {
		t.Fatalf("token: %d %v", status, tok)
	}
	claims := jwtClaims(t, tok["access_token"].(string))
	amr, _ := claims["amr"].([]any)
	if claims["acr"] != "urn:countersign:acr:step-up" || !slices.Contains(amr, any("user")) || !(slices.Contains(amr, any("hwk")) || slices.Contains(amr, any("swk"))) {
		t.Errorf("the step-up token says acr %v amr %v, want the step-up acr and what the authenticator proved", claims["acr"], amr)
	}

	out, stderr, code = runCLI(t, environ, "evidence", "verify", id)
	if code != 0 || !strings.Contains(out, "All 1 verify.") || strings.Contains(out, "✗") {
		t.Fatalf("evidence verify of the browser's assertion: exit %d\n%s%s", code, out, stderr)
	}
	for _, want := range []string{"✓ user verified", "✓ signature", "✓ origin", base} {
		if !strings.Contains(out, want) {
			t.Errorf("evidence verify does not say %q:\n%s", want, out)
		}
	}

	// The same passkey, no longer verifying its user: nothing is approved.
	_, id = ask("PAY-25001")
	auth.SetUserVerified(t, false)
	tab.Navigate(t, base+"/approve/"+id)
	tab.Click(t, "#approve")
	tab.WaitVisible(t, "p[role=status]")
	var said string
	for range 50 {
		if said = tab.Text(t, "#approve-form + p[role=status]"); strings.HasPrefix(said, "Not approved") {
			break
		}
		tab.Eval(t, `new Promise(r => setTimeout(r, 100))`, nil)
	}
	if !strings.HasPrefix(said, "Not approved") {
		t.Errorf("a step-up without user verification says %q", said)
	}

	// A page that asked for less (userVerification "discouraged", as a
	// tampered script might): the browser signs without verifying the
	// user, and the server refuses the assertion.
	tab.InitScript(t, `{ const get = navigator.credentials.get.bind(navigator.credentials);
		navigator.credentials.get = (o) => { o.publicKey.userVerification = "discouraged"; return get(o); }; }`)
	tab.Navigate(t, base+"/approve/"+id)
	tab.Click(t, "#approve")
	for range 50 {
		if said = tab.Text(t, "#approve-form + p[role=status]"); strings.Contains(said, "did not verify you") {
			break
		}
		tab.Eval(t, `new Promise(r => setTimeout(r, 100))`, nil)
	}
	if !strings.Contains(said, "did not verify you") {
		t.Errorf("an assertion without user verification: the page says %q, want the server's refusal", said)
	}
	r, err := store.Request(ctx, id)
	if err != nil || r.State != approvals.StatePending {
		t.Errorf("after a refused step-up the request is %s (%v), want pending", r.State, err)
	}
	var reviews int
	if err := db.Get(&reviews, `SELECT count(*) FROM reviews WHERE request_id = $1`, id); err != nil || reviews != 0 {
		t.Errorf("%d reviews recorded for the refused step-up (%v)", reviews, err)
	}
}

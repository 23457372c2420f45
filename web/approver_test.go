package web

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/internal/pgtest"
)

// pageSession signs user in directly through the domain (the passkey
// ceremonies have their own browser tests) and returns the cookie and the
// session's form token.
func (e *testEnv) pageSession(user approvals.User) (*http.Cookie, string) {
	e.t.Helper()
	token, sess, err := e.svc.Store().CreateSession(context.Background(), user.ID, []string{"hwk", "user"}, "test", "")
	if err != nil {
		e.t.Fatal(err)
	}
	return &http.Cookie{Name: devSessionCookie, Value: token}, sess.CSRF
}

// page GETs path with cookie c (nil: signed out), not following redirects.
func (e *testEnv) page(path string, c *http.Cookie) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if c != nil {
		req.AddCookie(c)
	}
	return e.noRedirect(req)
}

// submit POSTs a page form to path with cookie c, as the browser would from
// the server's own page.
func (e *testEnv) submit(path string, c *http.Cookie, form url.Values) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if c != nil {
		req.AddCookie(c)
	}
	return e.noRedirect(req)
}

func (e *testEnv) noRedirect(req *http.Request) response {
	e.t.Helper()
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Do(req)
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

var nonceRE = regexp.MustCompile(`script-src 'nonce-([A-Za-z0-9+/]+)' 'strict-dynamic'`)

func TestPageHeaders(t *testing.T) {
	e := newTestEnv(t)
	first := e.page("/signin", nil)
	if first.Status != http.StatusOK {
		t.Fatalf("GET /signin: %d %s", first.Status, first.Body)
	}
	csp := first.Header.Get("Content-Security-Policy")
	m := nonceRE.FindStringSubmatch(csp)
	if m == nil {
		t.Fatalf("CSP %q has no nonce with strict-dynamic", csp)
	}
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %s", csp, want)
		}
	}
	if !bytes.Contains(first.Body, []byte(`nonce="`+m[1]+`"`)) {
		t.Errorf("the page's script does not carry the response's nonce %s:\n%s", m[1], first.Body)
	}
	if bytes.Contains(first.Body, []byte("<script>")) || regexp.MustCompile(`\son[a-z]+=`).Match(first.Body) {
		t.Errorf("the page has an inline script or handler:\n%s", first.Body)
	}
	second := e.page("/signin", nil)
	if m2 := nonceRE.FindStringSubmatch(second.Header.Get("Content-Security-Policy")); m2 == nil || m2[1] == m[1] {
		t.Errorf("two responses share nonce %s", m[1])
	}
	for h, want := range map[string]string{"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if got := first.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	// The stylesheet is served under its content hash, cached for a year.
	css := regexp.MustCompile(`href="(/static/app\.[0-9a-f]{12}\.css)"`).FindSubmatch(first.Body)
	if css == nil {
		t.Fatalf("no hashed stylesheet link:\n%s", first.Body)
	}
	r := e.page(string(css[1]), nil)
	if r.Status != http.StatusOK || !strings.Contains(r.Header.Get("Cache-Control"), "immutable") || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/css") {
		t.Errorf("stylesheet: %d %v", r.Status, r.Header)
	}
}

func TestConsentSessionBound(t *testing.T) {
	e := newTestEnv(t)
	_, reqID := e.authorize(e.agent, paymentEUR, url.Values{"binding_message": {"PAY-4711"}})

	// Signed out: sign in, then back to the page.
	r := e.page("/approve/"+reqID, nil)
	if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/signin?next=%2Fapprove%2F"+reqID {
		t.Fatalf("signed out: %d %q", r.Status, r.Header.Get("Location"))
	}

	alice, _ := e.pageSession(e.user)
	r = e.page("/approve/"+reqID, alice)
	if r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte("PAY-4711")) || !bytes.Contains(r.Body, []byte("Test agent")) {
		t.Fatalf("alice's own request: %d\n%s", r.Status, r.Body)
	}

	// Another signed-in user learns nothing: the same bytes as for a random
	// id, and as for an id that is not one.
	bob, _ := e.pageSession(e.newUser("bob@example.com", ""))
	other := e.page("/approve/"+reqID, bob)
	random := e.page("/approve/0b0e4c6e-57a5-4c71-9d5b-6f1f0c3e8a11", bob)
	garbage := e.page("/approve/not-a-request", bob)
	if other.Status != http.StatusNotFound || random.Status != http.StatusNotFound || garbage.Status != http.StatusNotFound {
		t.Fatalf("statuses %d %d %d, want 404", other.Status, random.Status, garbage.Status)
	}
	if !bytes.Equal(other.Body, random.Body) || !bytes.Equal(other.Body, garbage.Body) {
		t.Errorf("another user's request differs from a random id's page:\n%s\n---\n%s", other.Body, random.Body)
	}
	if bytes.Contains(other.Body, []byte("PAY-4711")) {
		t.Error("the not-found page shows the binding message")
	}
}

// TestConsentViewRecorded: showing the consent page (a full page GET)
// records request.viewed by the person, once per session and request: a
// reload, the live page reading it again, or the page re-rendered after a
// refused decision add nothing; another session of theirs adds one; a
// visitor who may not see the request adds none.
func TestConsentViewRecorded(t *testing.T) {
	e := newTestEnv(t)
	_, reqID := e.authorize(e.agent, paymentEUR, nil)
	views := func() []struct {
		Actor   string `db:"actor"`
		Session string `db:"session"`
	} {
		t.Helper()
		var out []struct {
			Actor   string `db:"actor"`
			Session string `db:"session"`
		}
		if err := e.db.Select(&out, `SELECT actor, body->>'session' AS session FROM audit_events WHERE kind = $1 AND request_id = $2 ORDER BY id`,
			approvals.KindRequestViewed, reqID); err != nil {
			t.Fatal(err)
		}
		return out
	}
	sessions := func() []string {
		t.Helper()
		var ids []string
		if err := e.db.Select(&ids, `SELECT public_id FROM web_sessions WHERE user_id = $1 ORDER BY created_at, public_id`, e.user.ID); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	alice, csrf := e.pageSession(e.user)
	first := sessions()
	for range 3 {
		if r := e.page("/approve/"+reqID, alice); r.Status != http.StatusOK {
			t.Fatalf("consent page: %d", r.Status)
		}
	}
	if v := views(); len(v) != 1 || v[0].Actor != "user:"+e.user.ID || len(first) != 1 || v[0].Session != first[0] {
		t.Fatalf("views after three loads in one session: %+v (sessions %v)", v, first)
	}
	bob, _ := e.pageSession(e.newUser("bob@example.com", ""))
	if r := e.page("/approve/"+reqID, bob); r.Status != http.StatusNotFound {
		t.Fatalf("bob: %d", r.Status)
	}
	if r := e.submit("/approve/"+reqID, alice, url.Values{"verdict": {"deny"}, "csrf": {csrf}}); r.Status != http.StatusSeeOther {
		t.Fatalf("deny: %d", r.Status)
	}
	if r := e.submit("/approve/"+reqID, alice, url.Values{"verdict": {"approve"}, "csrf": {csrf}}); r.Status != http.StatusConflict {
		t.Fatalf("second decision: %d", r.Status)
	}
	if v := views(); len(v) != 1 {
		t.Fatalf("views after bob's visit and a re-rendered page: %+v", v)
	}
	phone, _ := e.pageSession(e.user)
	if r := e.page("/approve/"+reqID, phone); r.Status != http.StatusOK {
		t.Fatalf("second session: %d", r.Status)
	}
	if v := views(); len(v) != 2 || v[1].Session == v[0].Session || v[1].Actor != "user:"+e.user.ID {
		t.Fatalf("views after a second session: %+v", v)
	}
}

func TestDecideOnPage(t *testing.T) {
	e := newTestEnv(t)
	authReqID, reqID := e.authorize(e.agent, paymentEUR, nil)
	alice, csrf := e.pageSession(e.user)

	// No token, a wrong one, or a cross-site post: refused, nothing decided.
	for name, form := range map[string]url.Values{
		"no token":    {"verdict": {"approve"}},
		"wrong token": {"verdict": {"approve"}, "csrf": {"x" + csrf}},
	} {
		if r := e.submit("/approve/"+reqID, alice, form); r.Status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, r.Status)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/approve/"+reqID,
		strings.NewReader(url.Values{"verdict": {"approve"}, "csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.AddCookie(alice)
	if r := e.noRedirect(req); r.Status != http.StatusForbidden {
		t.Errorf("cross-site post: %d, want 403", r.Status)
	}
	if r, _ := e.svc.Store().Request(context.Background(), reqID); r.State != approvals.StatePending {
		t.Fatalf("a refused post changed the request: %s", r.State)
	}

	r := e.submit("/approve/"+reqID, alice, url.Values{"verdict": {"approve"}, "csrf": {csrf}})
	if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/approve/"+reqID {
		t.Fatalf("approve: %d %q %s", r.Status, r.Header.Get("Location"), r.Body)
	}
	if tok := e.poll(e.agent, authReqID); tok.Status != http.StatusOK {
		t.Fatalf("after approval the agent's poll: %d %s", tok.Status, tok.Body)
	}
	// A double click finds it decided: 409, and the page says what happened.
	r = e.submit("/approve/"+reqID, alice, url.Values{"verdict": {"deny"}, "csrf": {csrf}})
	if r.Status != http.StatusConflict || !bytes.Contains(r.Body, []byte("already decided")) || !bytes.Contains(r.Body, []byte("approved")) {
		t.Errorf("second decision: %d\n%s", r.Status, r.Body)
	}
	if bytes.Contains(r.Body, []byte(`id="approve"`)) {
		t.Error("a decided request still shows the Approve button")
	}

	// Deny with a reason.
	_, reqID = e.authorize(e.agent, paymentEUR, nil)
	r = e.submit("/approve/"+reqID, alice, url.Values{"verdict": {"deny"}, "reason": {"not this supplier"}, "csrf": {csrf}})
	if r.Status != http.StatusSeeOther {
		t.Fatalf("deny: %d %s", r.Status, r.Body)
	}
	got, _ := e.svc.Store().Request(context.Background(), reqID)
	if got.State != approvals.StateDenied || got.DecisionReason != "not this supplier" {
		t.Errorf("denied request: %s %v", got.State, got.DecisionReason)
	}
}

func TestInboxPage(t *testing.T) {
	e := newTestEnv(t)
	_, reqID := e.authorize(e.agent, paymentEUR, nil)
	if r := e.page("/", nil); r.Status != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/signin") {
		t.Fatalf("signed out inbox: %d %q", r.Status, r.Header.Get("Location"))
	}
	alice, _ := e.pageSession(e.user)
	r := e.page("/", alice)
	if r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte(`href="/approve/`+reqID+`"`)) || !bytes.Contains(r.Body, []byte("Test agent")) {
		t.Fatalf("inbox: %d\n%s", r.Status, r.Body)
	}
	bob, _ := e.pageSession(e.newUser("bob@example.com", ""))
	if r := e.page("/", bob); bytes.Contains(r.Body, []byte(reqID)) {
		t.Error("bob's inbox lists alice's request")
	}
}

func TestSessionCookies(t *testing.T) {
	for _, tc := range []struct {
		issuer, name string
		secure       bool
	}{
		{"https://countersign.test", sessionCookie, true},
		{"http://localhost:8080", devSessionCookie, false},
	} {
		db := pgtest.New(t)
		e := newTestEnvOn(t, db, func(c *approvals.Config) { c.Issuer = tc.issuer }, nil)
		srv := New(Options{DB: db, Service: e.svc, Dev: true})
		link, err := e.svc.Store().SignInLink(context.Background(), e.user.ID)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/signin/link/"+link.Token, nil))
		if rec.Code != http.StatusSeeOther {
			t.Fatalf("%s: sign-in link: %d %s", tc.issuer, rec.Code, rec.Body)
		}
		cookies := rec.Result().Cookies()
		if len(cookies) != 1 {
			t.Fatalf("%s: cookies %v", tc.issuer, cookies)
		}
		c := cookies[0]
		if c.Name != tc.name || c.Secure != tc.secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" {
			t.Errorf("%s: cookie %+v", tc.issuer, c)
		}
		// The link is one-time.
		rec = httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/signin/link/"+link.Token, nil))
		if rec.Code != http.StatusGone {
			t.Errorf("%s: second use of the link: %d", tc.issuer, rec.Code)
		}
	}
	// Without dev mode there is no sign-in link page.
	e := newTestEnv(t)
	if r := e.page("/signin/link/anything", nil); r.Status != http.StatusNotFound {
		t.Errorf("sign-in link outside dev mode: %d", r.Status)
	}
}

func TestSessionTimeoutsOnPages(t *testing.T) {
	e := newTestEnv(t)
	alice, _ := e.pageSession(e.user)
	if r := e.page("/", alice); r.Status != http.StatusOK {
		t.Fatalf("fresh session: %d", r.Status)
	}
	e.exec(`UPDATE web_sessions SET last_seen_at = now() - interval '31 minutes'`)
	r := e.page("/", alice)
	if r.Status != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/signin") {
		t.Fatalf("idle session: %d %q", r.Status, r.Header.Get("Location"))
	}
	if sc := r.Header.Get("Set-Cookie"); !strings.Contains(sc, devSessionCookie+"=;") || !strings.Contains(sc, "Max-Age=0") {
		t.Errorf("the dead session's cookie is not cleared: %q", sc)
	}
	alice, _ = e.pageSession(e.user)
	e.exec(`UPDATE web_sessions SET created_at = now() - interval '12 hours 1 minute', last_seen_at = now()`)
	if r := e.page("/", alice); r.Status != http.StatusSeeOther {
		t.Errorf("session past its absolute lifetime: %d", r.Status)
	}
}

func TestSignOut(t *testing.T) {
	e := newTestEnv(t)
	alice, csrf := e.pageSession(e.user)
	other, _ := e.pageSession(e.user)
	if r := e.submit("/signout", alice, url.Values{"csrf": {csrf}}); r.Status != http.StatusSeeOther {
		t.Fatalf("sign out: %d", r.Status)
	}
	if r := e.page("/", alice); r.Status != http.StatusSeeOther {
		t.Errorf("signed-out session still works: %d", r.Status)
	}
	if r := e.page("/", other); r.Status != http.StatusOK {
		t.Fatalf("the other session ended too: %d", r.Status)
	}
	third, csrf3 := e.pageSession(e.user)
	if r := e.submit("/signout/everywhere", third, url.Values{"csrf": {csrf3}}); r.Status != http.StatusSeeOther {
		t.Fatalf("sign out everywhere: %d", r.Status)
	}
	if r := e.page("/", other); r.Status != http.StatusSeeOther {
		t.Errorf("sign out everywhere left a session: %d", r.Status)
	}
}

func TestNewUserCode(t *testing.T) {
	e := newTestEnv(t)
	alice, csrf := e.pageSession(e.user)
	if r := e.submit("/settings/user-code", alice, url.Values{}); r.Status != http.StatusForbidden {
		t.Fatalf("without the form token: %d, want 403", r.Status)
	}
	codeRE := regexp.MustCompile(`id="user-code">([0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5})<`)
	newCode := func() string {
		t.Helper()
		r := e.submit("/settings/user-code", alice, url.Values{"csrf": {csrf}})
		m := codeRE.FindSubmatch(r.Body)
		if r.Status != http.StatusOK || m == nil || r.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("new user code: %d %v\n%s", r.Status, r.Header, r.Body)
		}
		return string(m[1])
	}
	first := newCode()
	var stored string
	if err := e.db.Get(&stored, `SELECT user_code_hash FROM users WHERE id = $1`, e.user.ID); err != nil || strings.Contains(stored, first) {
		t.Fatalf("stored user code %q (%v): want a hash", stored, err)
	}
	ask := func(code string) response {
		return e.postForm("/bc-authorize", &e.agent, url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"},
			"authorization_details": {paymentEUR}, "user_code": {code}})
	}
	if r := ask(first); r.Status != http.StatusOK {
		t.Fatalf("bc-authorize with the new code: %d %s", r.Status, r.Body)
	}
	if r := ask(""); r.Status == http.StatusOK {
		t.Errorf("bc-authorize without the code alice now has: %d", r.Status)
	}
	second := newCode()
	if second == first {
		t.Fatal("two new codes are the same")
	}
	wantOAuthError(t, ask(first), http.StatusBadRequest, "invalid_user_code")
	if r := ask(second); r.Status != http.StatusOK {
		t.Errorf("bc-authorize with the second code: %d %s", r.Status, r.Body)
	}
	if r := e.page("/settings", alice); bytes.Contains(r.Body, []byte(second)) {
		t.Error("the settings page shows the code again")
	}
}

// Adding a passkey needs a session a passkey opened in the last minutes: a
// stolen cookie or a dev sign-in link's session cannot bring its own.
func TestAddPasskeyNeedsRecentPasskey(t *testing.T) {
	e := newTestEnvAt(t, pgtest.New(t), nil, nil, true)
	begin := func(c *http.Cookie, csrf string) response {
		t.Helper()
		return e.postJSON("/webauthn/passkeys/begin", c, csrf, map[string]string{"name": "Key"})
	}
	fresh, csrf := e.pageSession(e.user)
	if r := begin(fresh, csrf); r.Status != http.StatusOK {
		t.Fatalf("a fresh passkey session: %d %s", r.Status, r.Body)
	}
	if r := begin(fresh, ""); r.Status != http.StatusForbidden {
		t.Errorf("without the form token: %d", r.Status)
	}
	e.exec(`UPDATE web_sessions SET created_at = now() - interval '11 minutes' WHERE user_id = $1`, e.user.ID)
	if r := begin(fresh, csrf); r.Status != http.StatusForbidden || !strings.Contains(string(r.Body), "sign in again") {
		t.Errorf("a passkey session 11 minutes old: %d %s", r.Status, r.Body)
	}
	token, sess, err := e.svc.Store().CreateSession(t.Context(), e.user.ID, []string{"dev_link"}, "test", "")
	if err != nil {
		t.Fatal(err)
	}
	if r := begin(&http.Cookie{Name: devSessionCookie, Value: token}, sess.CSRF); r.Status != http.StatusForbidden {
		t.Errorf("a dev sign-in link's session: %d %s", r.Status, r.Body)
	}
}

// A cross-site state change is refused in the app's own form: JSON for
// the scripts' endpoints, the refusal page for forms.
func TestCrossSiteRefusals(t *testing.T) {
	e := newTestEnv(t)
	alice, csrf := e.pageSession(e.user)
	for _, tc := range []struct {
		path, ctype, body, want string
	}{
		{"/webauthn/passkeys/begin", "application/json", `{}`, "application/json"},
		{"/push/subscriptions", "application/json", `{}`, "application/json"},
		{"/settings/user-code", "application/x-www-form-urlencoded", "csrf=" + url.QueryEscape(csrf), "text/html; charset=utf-8"},
		{"/signout/everywhere", "application/x-www-form-urlencoded", "csrf=" + url.QueryEscape(csrf), "text/html; charset=utf-8"},
	} {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.ctype)
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		req.Header.Set("X-CSRF-Token", csrf)
		req.AddCookie(alice)
		r := e.noRedirect(req)
		if r.Status != http.StatusForbidden || r.Header.Get("Content-Type") != tc.want {
			t.Errorf("cross-site POST %s: %d %q, want 403 %s", tc.path, r.Status, r.Header.Get("Content-Type"), tc.want)
		}
	}
	if sessions, _ := e.svc.Store().Sessions(t.Context(), e.user.ID); len(sessions) != 1 {
		t.Errorf("a cross-site sign-out-everywhere ended sessions: %d left", len(sessions))
	}
}

// TestStrictTransport: a server whose issuer is https tells browsers to
// come back only over HTTPS, on pages and OAuth endpoints alike; a
// plain-http development server does not (a browser would pin localhost).
func TestStrictTransport(t *testing.T) {
	t.Parallel()
	plain := newTestEnv(t)
	secure := newTestEnvWith(t, func(c *approvals.Config) { c.Issuer = "https://countersign.test" })
	for _, path := range []string{"/signin", "/jwks.json", "/healthz"} {
		r := secure.page(path, nil)
		if got := r.Header.Get("Strict-Transport-Security"); got != "max-age=31536000" {
			t.Errorf("https issuer, %s: Strict-Transport-Security = %q, want max-age=31536000", path, got)
		}
		if got := plain.page(path, nil).Header.Get("Strict-Transport-Security"); got != "" {
			t.Errorf("http issuer, %s: Strict-Transport-Security = %q, want none", path, got)
		}
	}
}

package web

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
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

// The approver pages in real headless Chromium, with the DevTools virtual
// authenticator as each person's passkey provider.

// browserEnv is a Countersign server on http://localhost:PORT with the demo
// thresholds (payments over 10,000 need a passkey, merges into main two
// maintainers), and one Chromium for its tests.
type browserEnv struct {
	*testEnv
	b *browser.Browser
}

const (
	// bigPayment is over the demo policy's step-up threshold.
	bigPayment = `[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"25000.00"},"creditorName":"Globex GmbH","creditorAccount":{"iban":"DE89370400440532013000"}}]`
	mergeMain  = `[{"type":"code_merge","repository":"acme/api","base_branch":"main","pull_request":42,"checks":"passed"}]`
)

func newBrowserEnv(t *testing.T, opts ...browser.Option) *browserEnv {
	t.Helper()
	conf := pgtest.NewConfig(t)
	db, err := sqlx.Connect("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// The event listener of this process, as serve runs one: the pages'
	// live updates come through it.
	l, err := approvals.NewListener(conf.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	e := newTestEnvLive(t, db, nil, nil, true, l)
	if _, err := e.svc.Policies().Apply(context.Background(), "examples/demo/policy.yaml", demo.Policy()); err != nil {
		t.Fatal(err)
	}
	return &browserEnv{testEnv: e, b: browser.New(t, opts...)}
}

// person is someone with a browser tab and a passkey in it.
type person struct {
	user approvals.User
	tab  *browser.Tab
	auth *browser.Authenticator
}

// enroll opens a fresh enrollment link for user in a new tab with its own
// passkey provider, creates the passkey and lands on the inbox.
func (e *browserEnv) enroll(t *testing.T, user approvals.User, opts ...browser.TabOption) *person {
	t.Helper()
	tab := e.b.NewTab(t, opts...)
	auth := tab.AddAuthenticator(t, nil)
	_, link, err := e.svc.Store().InviteUser(context.Background(), user.Email, "")
	if err != nil {
		t.Fatal(err)
	}
	tab.Navigate(t, e.base+"/enroll/"+link.Token)
	tab.Fill(t, "#passkey-name", "Test laptop")
	tab.Click(t, "#enroll button[type=submit]")
	tab.WaitVisible(t, "#signout")
	if got := tab.URL(t); got != e.base+"/" {
		t.Fatalf("after enrollment the browser is at %s, want the inbox", got)
	}
	if n := len(auth.Credentials(t)); n != 1 {
		t.Fatalf("the authenticator holds %d credentials after enrollment, want 1", n)
	}
	return &person{user: user, tab: tab, auth: auth}
}

// open goes to request id's consent page.
func (p *person) open(t *testing.T, e *browserEnv, id string) {
	t.Helper()
	p.tab.Navigate(t, e.base+"/approve/"+id)
	p.tab.WaitVisible(t, "main h1")
}

func (e *browserEnv) maintainer(t *testing.T, email string) approvals.User {
	t.Helper()
	u, err := e.svc.Store().CreateUser(context.Background(), approvals.NewUser{Email: email, Name: strings.Split(email, "@")[0], Groups: []string{"maintainers"}})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// wantToken polls for authReqID's token and wants it issued.
func (e *browserEnv) wantToken(t *testing.T, authReqID string) map[string]any {
	t.Helper()
	r := e.poll(e.agent, authReqID)
	if r.Status != http.StatusOK {
		t.Fatalf("the agent's poll after approval: %d %s", r.Status, r.Body)
	}
	return r.JSON(t)
}

// noAutofill makes the browser offer no passkey autofill (conditional
// mediation), as many do not: the sign-in page then waits for its button.
const noAutofill = `if (window.PublicKeyCredential) PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);`

func TestBrowserSignInAndOut(t *testing.T) {
	e := newBrowserEnv(t)
	_, id := e.authorize(e.agent, paymentEUR, url.Values{"binding_message": {"PAY-4711"}})
	alice := e.enroll(t, e.user)
	if got := alice.tab.Text(t, "#pending"); !strings.Contains(got, "Test agent") || !strings.Contains(got, "Alice Smith") {
		t.Errorf("the inbox after enrollment lists %q, want the test agent's payment", got)
	}
	first := tabSession(t, alice.tab)

	autofill := alice.tab.InitScript(t, noAutofill)
	alice.tab.Click(t, "#signout")
	alice.tab.WaitVisible(t, "#signin")
	if c := tabSession(t, alice.tab); c != "" {
		t.Errorf("the session cookie survived sign-out")
	}
	if n := countRows(t, e, `SELECT count(*) FROM web_sessions WHERE user_id = $1`, e.user.ID); n != 0 {
		t.Errorf("%d sessions left after sign-out, want 0", n)
	}

	// Signed out, the consent URL leads through sign-in (the button) and
	// back to it.
	alice.tab.Navigate(t, e.base+"/approve/"+id)
	alice.tab.WaitVisible(t, "#signin")
	if got := alice.tab.URL(t); !strings.Contains(got, "/signin?next=%2Fapprove%2F"+id) {
		t.Errorf("a signed-out consent URL went to %s, want sign-in with the way back", got)
	}
	alice.tab.Click(t, "#signin button[type=submit]")
	alice.tab.WaitVisible(t, "#approve")
	if got := alice.tab.URL(t); got != e.base+"/approve/"+id {
		t.Errorf("after sign-in the browser is at %s, want the consent page", got)
	}
	if got := alice.tab.Text(t, "#binding-message"); got != "PAY-4711" {
		t.Errorf("binding message %q, want PAY-4711", got)
	}
	second := tabSession(t, alice.tab)
	if second == "" || second == first {
		t.Errorf("signing in again kept the session id (rotation at sign-in)")
	}

	// Where the browser offers passkey autofill, the sign-in page asks for
	// it at once (the virtual authenticator answers as a person picking
	// their passkey would).
	autofill(t)
	alice.tab.ClickNavigate(t, "#signout") // to the sign-in page…
	alice.tab.WaitVisible(t, "#signout")   // …which the autofill signs in again
	if got := alice.tab.URL(t); got != e.base+"/" {
		t.Errorf("after the autofill sign-in the browser is at %s, want the inbox", got)
	}
	if third := tabSession(t, alice.tab); third == "" || third == second {
		t.Errorf("the autofill sign-in kept the old session")
	}
	if n := countRows(t, e, `SELECT count(*) FROM web_sessions WHERE user_id = $1`, e.user.ID); n != 1 {
		t.Errorf("%d sessions after two sign-outs and sign-ins, want 1", n)
	}
}

// tabSession is the value of the tab's session cookie, "" when none.
func tabSession(t *testing.T, tab *browser.Tab) string {
	t.Helper()
	for _, c := range tab.Cookies(t) {
		if c.Name == devSessionCookie {
			if !c.HTTPOnly || c.SameSite != "Lax" {
				t.Errorf("session cookie flags: HttpOnly %v SameSite %q", c.HTTPOnly, c.SameSite)
			}
			return c.Value
		}
	}
	return ""
}

func TestBrowserApproveAndDeny(t *testing.T) {
	e := newBrowserEnv(t)
	approveReq, approveID := e.authorize(e.agent, paymentEUR, url.Values{"binding_message": {"PAY-4711"}})
	denyReq, denyID := e.authorize(e.agent, paymentEUR, url.Values{"binding_message": {"PAY-4712"}})
	alice := e.enroll(t, e.user, browser.WithViewport(browser.Phone))

	alice.open(t, e, approveID)
	if got := alice.tab.Text(t, "main h1"); !strings.Contains(got, "Alice Smith") || !strings.Contains(got, "500.00") {
		t.Errorf("the consent page's sentence is %q", got)
	}
	if got := alice.tab.Text(t, "#need"); got != "Your approval" {
		t.Errorf("what is needed: %q", got)
	}
	alice.tab.Click(t, "#approve")
	alice.tab.WaitVisible(t, "#outcome")
	if got := alice.tab.TextIs(t, "#outcome", "This request was approved."); got != "This request was approved." {
		t.Errorf("after Approve the page says %q", got)
	}
	tok := e.wantToken(t, approveReq)
	if tok["access_token"] == nil {
		t.Fatalf("no access token: %v", tok)
	}

	alice.open(t, e, denyID)
	alice.tab.Fill(t, "#reason", "Not this vendor")
	alice.tab.Click(t, "#deny")
	alice.tab.WaitVisible(t, "#outcome")
	if got := alice.tab.TextIs(t, "#outcome", "This request was denied."); got != "This request was denied." {
		t.Errorf("after Deny the page says %q", got)
	}
	if got := alice.tab.Text(t, "#reviews"); !strings.Contains(got, "Not this vendor") {
		t.Errorf("the reviews list %q, want the reason", got)
	}
	wantOAuthError(t, e.poll(e.agent, denyReq), http.StatusBadRequest, "access_denied")
	c, err := e.svc.Consent(context.Background(), denyID, e.user)
	if err != nil || c.Mine == nil || c.Mine.Reason != "Not this vendor" || c.Request.State != approvals.StateDenied {
		t.Errorf("the stored decision: %+v %v", c.Mine, err)
	}

	// A second tab still showing the buttons (without JavaScript, so live
	// updates cannot take them away first): its Approve after the deny
	// gets a page that says what happened.
	stale := e.b.NewTab(t, browser.WithSessionOf(alice.tab), browser.WithoutJavaScript())
	_, thirdID := e.authorize(e.agent, paymentEUR, nil)
	stale.Navigate(t, e.base+"/approve/"+thirdID)
	stale.WaitVisible(t, "#approve")
	alice.open(t, e, thirdID)
	alice.tab.Click(t, "#deny")
	alice.tab.WaitVisible(t, "#outcome")
	stale.Click(t, "#approve")
	stale.WaitVisible(t, "#outcome")
	if got := stale.TextIs(t, "#outcome", "This request was denied."); got != "This request was denied." {
		t.Errorf("the stale tab's Approve shows %q, want the deny that won", got)
	}
}

func TestBrowserQuorumOfTwo(t *testing.T) {
	e := newBrowserEnv(t)
	authReq, id := e.authorize(e.agent, mergeMain, url.Values{"binding_message": {"MERGE-42"}})
	bob := e.enroll(t, e.maintainer(t, "bob@example.com"))
	carol := e.enroll(t, e.maintainer(t, "carol@example.com"))

	bob.open(t, e, id)
	if got := bob.tab.Text(t, "#quorum"); got != "maintainers: 0 of 2" {
		t.Errorf("quorum before any approval: %q", got)
	}
	bob.tab.Click(t, "#approve")
	bob.tab.WaitVisible(t, "#outcome")
	if got := bob.tab.TextHas(t, "#outcome", "waits for the other approvals"); !strings.Contains(got, "waits for the other approvals") {
		t.Errorf("after the first of two approvals bob reads %q", got)
	}
	if got := bob.tab.Text(t, "#quorum"); got != "maintainers: 1 of 2" {
		t.Errorf("quorum after bob: %q", got)
	}
	bob.tab.Screenshot(t, "quorum-progress")
	if r := e.poll(e.agent, authReq); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "authorization_pending") {
		t.Fatalf("after one of two approvals the poll answers %d %s, want authorization_pending", r.Status, r.Body)
	}

	carol.open(t, e, id)
	if got := carol.tab.Text(t, "#reviews"); !strings.Contains(got, "bob@example.com") {
		t.Errorf("carol does not see bob's review: %q", got)
	}
	carol.tab.Click(t, "#approve")
	carol.tab.WaitVisible(t, "#outcome")
	if got := carol.tab.TextIs(t, "#outcome", "This request was approved."); got != "This request was approved." {
		t.Errorf("after the second approval carol reads %q", got)
	}
	e.resetPoll(id)
	e.wantToken(t, authReq)
}

func TestBrowserThisWasntMe(t *testing.T) {
	e := newBrowserEnv(t)
	_, id := e.authorize(e.agent, paymentEUR, nil)
	otherReq, _ := e.authorize(e.agent, paymentEUR, nil)
	alice := e.enroll(t, e.user)
	alice.open(t, e, id)
	alice.tab.Click(t, "#report")
	alice.tab.WaitVisible(t, "#outcome")
	a, err := e.svc.Store().Agent(context.Background(), e.agent.ID)
	if err != nil || a.Status != "suspended" {
		t.Fatalf("the reported agent is %q (%v), want suspended", a.Status, err)
	}
	if got := alice.tab.TextIs(t, "#outcome", "This request was denied."); got != "This request was denied." {
		t.Errorf("the reported request's page says %q", got)
	}
	// The agent gets no token, and its other pending request for alice is
	// denied too.
	if r := e.poll(e.agent, otherReq); r.Status == http.StatusOK {
		t.Errorf("the suspended agent's poll got a token: %s", r.Body)
	}
	if n := countRows(t, e, `SELECT count(*) FROM requests WHERE agent_id = $1 AND state = 'pending'`, e.agent.ID); n != 0 {
		t.Errorf("%d of the reported agent's requests for alice still pending", n)
	}
}

// Another signed-in user gets, for someone else's request, exactly the page
// a random id gets: nothing tells them the request exists.
func TestBrowserOtherUsersRequest(t *testing.T) {
	e := newBrowserEnv(t)
	_, id := e.authorize(e.agent, paymentEUR, url.Values{"binding_message": {"PAY-4711"}})
	bob := e.enroll(t, e.maintainer(t, "bob@example.com"))
	page := func(path string) (int, string) {
		bob.tab.Navigate(t, e.base+path)
		bob.tab.WaitVisible(t, "main h1")
		var status int
		bob.tab.Eval(t, `performance.getEntriesByType("navigation")[0].responseStatus`, &status)
		var html string
		bob.tab.Eval(t, `document.documentElement.outerHTML`, &html)
		return status, html
	}
	theirs, theirHTML := page("/approve/" + id)
	random, randomHTML := page("/approve/0b6f2c6e-3c3a-4f5e-9d3c-2d1f8a7b6c5d")
	if theirs != http.StatusNotFound || random != http.StatusNotFound {
		t.Errorf("statuses %d and %d, want 404 for both", theirs, random)
	}
	if theirHTML != randomHTML {
		t.Errorf("alice's request and a random id render differently for bob:\n%s\n---\n%s", theirHTML, randomHTML)
	}
	if strings.Contains(theirHTML, "PAY-4711") || strings.Contains(theirHTML, "Test agent") {
		t.Errorf("bob's page tells of alice's request:\n%s", theirHTML)
	}
}

// Reading and deciding a request that needs no passkey works with
// JavaScript off.
func TestBrowserWithoutJavaScript(t *testing.T) {
	e := newBrowserEnv(t)
	approveReq, approveID := e.authorize(e.agent, paymentEUR, url.Values{"binding_message": {"PAY-4711"}})
	_, denyID := e.authorize(e.agent, paymentEUR, url.Values{"binding_message": {"PAY-4712"}})
	alice := e.enroll(t, e.user) // a passkey needs JavaScript; the rest does not
	tab := e.b.NewTab(t, browser.WithSessionOf(alice.tab), browser.WithoutJavaScript())

	tab.Navigate(t, e.base+"/")
	tab.WaitVisible(t, "#pending")
	tab.Click(t, `#pending a[href="/approve/`+approveID+`"]`)
	tab.WaitVisible(t, "#approve")
	if got := tab.Text(t, "#binding-message"); got != "PAY-4711" {
		t.Errorf("binding message %q", got)
	}
	tab.Click(t, "#approve")
	tab.WaitVisible(t, "#outcome")
	if got := tab.TextIs(t, "#outcome", "This request was approved."); got != "This request was approved." {
		t.Errorf("after Approve without JavaScript: %q", got)
	}
	e.wantToken(t, approveReq)

	tab.Navigate(t, e.base+"/approve/"+denyID)
	tab.Fill(t, "#reason", "Wrong invoice")
	tab.Click(t, "#deny")
	tab.WaitVisible(t, "#outcome")
	if got := tab.Text(t, "#reviews"); !strings.Contains(got, "Wrong invoice") {
		t.Errorf("after Deny without JavaScript the reviews read %q", got)
	}
	if msgs := tab.ConsoleMessages(); len(msgs) != 0 {
		t.Errorf("console without JavaScript: %v", msgs)
	}
}

// The pages a person meets pass axe-core's WCAG 2.1 AA rules, and look
// right on a phone and a desktop, light and dark (the screenshots are
// written to .screenshots/).
func TestBrowserAccessibilityAndLooks(t *testing.T) {
	e := newBrowserEnv(t)
	_, id := e.authorize(e.agent, paymentEUR, url.Values{"binding_message": {"PAY-4711"}})
	_, stepID := e.authorize(e.agent, bigPayment, url.Values{"binding_message": {"PAY-9000"}})

	visitor := e.b.NewTab(t)
	visitor.Navigate(t, e.base+"/signin")
	visitor.WaitVisible(t, "#signin")
	visitor.CheckAccessibility(t)
	visitor.Screenshot(t, "signin")

	_, link, err := e.svc.Store().InviteUser(context.Background(), e.user.Email, "")
	if err != nil {
		t.Fatal(err)
	}
	visitor.Navigate(t, e.base+"/enroll/"+link.Token)
	visitor.WaitVisible(t, "#enroll")
	visitor.CheckAccessibility(t)
	visitor.Screenshot(t, "enroll")

	alice := e.enroll(t, e.user)
	alice.tab.CheckAccessibility(t)
	alice.tab.Screenshot(t, "inbox")

	alice.open(t, e, stepID)
	if got := alice.tab.Text(t, "#approve"); got != "Approve with passkey" {
		t.Errorf("a step-up request's button reads %q", got)
	}
	alice.tab.CheckAccessibility(t)
	alice.tab.Screenshot(t, "step-up")

	alice.tab.Navigate(t, e.base+"/approve/0b6f2c6e-3c3a-4f5e-9d3c-2d1f8a7b6c5d")
	alice.tab.WaitVisible(t, "main h1")
	alice.tab.CheckAccessibility(t)
	alice.tab.Screenshot(t, "not-found")

	for _, v := range []struct {
		name   string
		port   browser.Viewport
		scheme browser.ColorScheme
	}{
		{"consent-phone-light", browser.Phone, browser.Light},
		{"consent-phone-dark", browser.Phone, browser.Dark},
		{"consent-desktop-light", browser.Desktop, browser.Light},
		{"consent-desktop-dark", browser.Desktop, browser.Dark},
	} {
		tab := e.b.NewTab(t, browser.WithSessionOf(alice.tab), browser.WithViewport(v.port), browser.WithColorScheme(v.scheme))
		tab.Navigate(t, e.base+"/approve/"+id)
		tab.WaitVisible(t, "#approve")
		tab.CheckAccessibility(t)
		var overflow bool
		tab.Eval(t, `document.documentElement.scrollWidth > window.innerWidth`, &overflow)
		if overflow {
			t.Errorf("%s: the page is wider than the screen", v.name)
		}
		tab.Screenshot(t, v.name)
		tab.Close()
	}
}

func countRows(t *testing.T, e *browserEnv, query string, args ...any) int {
	t.Helper()
	var n int
	if err := e.db.Get(&n, query, args...); err != nil {
		t.Fatal(err)
	}
	return n
}

// Settings: rename, add and remove passkeys (never the last), see and end
// signed-in sessions.
func TestBrowserSettings(t *testing.T) {
	e := newBrowserEnv(t)
	alice := e.enroll(t, e.user)
	alice.tab.Navigate(t, e.base+"/settings")
	alice.tab.WaitVisible(t, "#passkeys")
	alice.tab.CheckAccessibility(t)

	keys, err := e.svc.Store().Passkeys(context.Background(), e.user.ID)
	if err != nil || len(keys) != 1 || keys[0].Name != "Test laptop" || !keys[0].UserVerified || keys[0].CloneWarning {
		t.Fatalf("passkeys after enrollment: %+v %v", keys, err)
	}
	first := keys[0].ID
	alice.tab.Fill(t, "#name-"+first, "Work laptop")
	alice.tab.ClickNavigate(t, `#passkeys form[action="/settings/passkeys/rename"] button`)
	if got := alice.tab.Text(t, "#passkeys li span"); got != "Work laptop" {
		t.Errorf("renamed passkey reads %q", got)
	}

	// The last passkey cannot be removed.
	if status := alice.tab.ClickNavigate(t, `#passkeys form[action="/settings/passkeys/remove"] button`); status != http.StatusConflict {
		t.Errorf("removing the last passkey answered %d, want 409", status)
	}
	if keys, _ := e.svc.Store().Passkeys(context.Background(), e.user.ID); len(keys) != 1 {
		t.Errorf("%d passkeys after removing the last, want it kept", len(keys))
	}

	// A security key's passkey (a second authenticator: the laptop's
	// already holds one for this account and is excluded), then the
	// laptop's removed.
	alice.tab.Navigate(t, e.base+"/settings")
	key := browser.DefaultAuthenticator
	key.Transport = "usb"
	second := alice.tab.AddAuthenticator(t, &key)
	alice.tab.Click(t, "#add-passkey button")
	alice.tab.WaitVisible(t, `#passkeys li:nth-child(2)`)
	if n := len(second.Credentials(t)); n != 1 {
		t.Errorf("the second authenticator holds %d credentials, want 1", n)
	}
	alice.tab.Click(t, `#passkeys li:first-child form[action="/settings/passkeys/remove"] button`)
	alice.tab.WaitGone(t, `#passkeys li:nth-child(2)`)
	keys, _ = e.svc.Store().Passkeys(context.Background(), e.user.ID)
	if len(keys) != 1 || keys[0].ID == first {
		t.Errorf("after removing the first passkey: %+v", keys)
	}

	// Another browser signed in (the dev sign-in link), seen and ended here.
	other := e.b.NewTab(t)
	link, err := e.svc.Store().SignInLink(context.Background(), e.user.ID)
	if err != nil {
		t.Fatal(err)
	}
	other.Navigate(t, e.base+"/signin/link/"+link.Token)
	other.WaitVisible(t, "#signout")
	alice.tab.Navigate(t, e.base+"/settings")
	alice.tab.WaitVisible(t, "#sessions li:nth-child(2)")
	if got := alice.tab.Text(t, "#sessions"); !strings.Contains(got, "this browser") {
		t.Errorf("the sessions list %q does not mark this browser", got)
	}
	alice.tab.Click(t, `#sessions form[action="/settings/sessions/end"] button`)
	alice.tab.WaitGone(t, "#sessions li:nth-child(2)")
	// The other tab's live socket closes with the session (1008) and the
	// page reloads into sign-in by itself (navigating it here would race
	// that reload).
	other.WaitVisible(t, "#signin")
}

// addDevice gives e.user a push subscription, so that each new request
// of theirs queues a push.
func (e *browserEnv) addDevice(t *testing.T) {
	t.Helper()
	device := approvals.PushSubscription{UserID: e.user.ID, Endpoint: "https://push.example.com/d/1", Name: "Phone",
		P256dh: "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", Auth: "BTBZMqHH6r4Tts7J_aSIgg"}
	if _, err := e.svc.Store().AddPushSubscription(context.Background(), device); err != nil {
		t.Fatal(err)
	}
}

// pushMessage is the message queued for request id's push of type typ
// ("new" or "decided"), as the push service would hand it to the browser.
func (e *browserEnv) pushMessage(t *testing.T, id, typ string) string {
	t.Helper()
	var m string
	if err := e.db.Get(&m, `SELECT payload::text FROM outbox WHERE request_id = $1 AND kind = 'push' AND payload->>'type' = $2`, id, typ); err != nil {
		t.Fatalf("no %s push queued: %v", typ, err)
	}
	return m
}

// startServiceWorker registers the service worker from p's settings page,
// with notifications allowed, as turning notifications on there does.
func (p *person) startServiceWorker(t *testing.T, e *browserEnv) {
	t.Helper()
	p.tab.Navigate(t, e.base+"/settings")
	p.tab.WaitVisible(t, "#enable-push") // shown by the script where push is supported
	p.tab.GrantNotifications(t, e.base)
	p.tab.WatchServiceWorkers(t)
	var ok bool
	p.tab.Eval(t, `navigator.serviceWorker.register("/sw.js", {scope: "/"}).then(() => navigator.serviceWorker.ready).then(() => true)`, &ok)
}

// shownNotification is a notification as the service worker's
// registration lists it.
type shownNotification struct {
	Title, Body, Tag, RequestID string
}

// notifications waits until the tab's service worker registration lists
// want notifications, and returns them.
func notifications(t *testing.T, tab *browser.Tab, want int) []shownNotification {
	t.Helper()
	var got []shownNotification
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		tab.Eval(t, `navigator.serviceWorker.ready.then(r => r.getNotifications()).then(ns =>
			ns.map(n => ({Title: n.title, Body: n.body, Tag: n.tag, RequestID: n.data && n.data.request_id})))`, &got)
		if len(got) == want {
			return got
		}
		tab.Eval(t, `new Promise(r => setTimeout(r, 100))`, nil)
	}
	t.Fatalf("%d notifications shown, want %d: %+v\nconsole: %v", len(got), want, got, tab.ConsoleMessages())
	return nil
}

// The service worker: a push delivered to it (as the push service would)
// shows a notification of the request on the desktop, and the request's
// "decided" push takes it away. (Without a desktop notification service,
// headless Chromium 156 now and then lists none of the notifications a
// worker has just shown: one test run in ten or twenty failed so.)
func TestBrowserPushNotification(t *testing.T) {
	desktop := browser.NewNotificationServer(t)
	e := newBrowserEnv(t, browser.WithNotificationServer(desktop))
	alice := e.enroll(t, e.user)
	e.addDevice(t)
	_, id := e.authorize(e.agent, paymentEUR, url.Values{"binding_message": {"PAY-4711"}})

	alice.startServiceWorker(t, e)
	alice.tab.DeliverPush(t, e.base+"/", e.pushMessage(t, id, "new"))
	d := desktop.Next(t)
	if d.Summary != "An agent asks for your approval" || !strings.Contains(d.Body, "PAY-4711") || !strings.Contains(d.Body, "Alice Smith") {
		t.Errorf("the desktop was asked to show %+v", d)
	}
	if n := notifications(t, alice.tab, 1)[0]; n.Title != d.Summary || n.Tag != id || n.RequestID != id {
		t.Errorf("the service worker lists %+v", n)
	}

	e.decide(id, true)
	alice.tab.DeliverPush(t, e.base+"/", e.pushMessage(t, id, "decided"))
	desktop.WaitClosed(t, d)
	notifications(t, alice.tab, 0)
}

// A click on the notification — through the desktop's notification
// service, as a person clicks it, so the service worker gets a real
// notificationclick — opens the request's consent page, signed in, and
// takes the notification away. The page's address is made from the
// request id: a url in the message is not followed.
func TestBrowserNotificationClick(t *testing.T) {
	desktop := browser.NewNotificationServer(t)
	e := newBrowserEnv(t, browser.WithNotificationServer(desktop))
	// The desktop's clicks reach only the browser's own profile.
	alice := e.enroll(t, e.user, browser.InBrowserProfile())
	e.addDevice(t)
	_, id := e.authorize(e.agent, paymentEUR, url.Values{"binding_message": {"PAY-4711"}})

	alice.startServiceWorker(t, e)
	var msg map[string]any
	if err := json.Unmarshal([]byte(e.pushMessage(t, id, "new")), &msg); err != nil {
		t.Fatal(err)
	}
	if msg["url"] != "/approve/"+id {
		t.Fatalf("the push message's url is %v", msg["url"])
	}
	msg["url"] = "/approve/../settings" // same origin, another page
	tampered, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	alice.tab.DeliverPush(t, e.base+"/", string(tampered))

	n := desktop.Next(t)
	if n.Summary != "An agent asks for your approval" || !strings.Contains(n.Body, "PAY-4711") || !slices.Contains(n.Actions, "default") {
		t.Errorf("the desktop was asked to show %+v", n)
	}
	consent := e.b.OpenedTab(t, func() { desktop.Click(t, n) })
	consent.WaitVisible(t, "#approve")
	if got := consent.URL(t); got != e.base+"/approve/"+id {
		t.Errorf("the click opened %s, want the consent page of %s", got, id)
	}
	if got := consent.Text(t, "#binding-message"); got != "PAY-4711" {
		t.Errorf("the opened page's binding message is %q, want PAY-4711", got)
	}
	desktop.WaitClosed(t, n)
	notifications(t, alice.tab, 0)
}

// Live updates: a new request appears in an open inbox, and a decision made
// on another device shows on the consent page open here — neither page is
// reloaded by anyone.
func TestBrowserLiveUpdates(t *testing.T) {
	e := newBrowserEnv(t)
	laptop := e.enroll(t, e.user)
	laptop.tab.WaitVisible(t, "#pending-empty")

	_, id := e.authorize(e.agent, paymentEUR, url.Values{"binding_message": {"PAY-4711"}})
	laptop.tab.WaitVisible(t, `#pending a[href="/approve/`+id+`"]`)

	phone := e.b.NewTab(t, browser.WithViewport(browser.Phone))
	link, err := e.svc.Store().SignInLink(context.Background(), e.user.ID)
	if err != nil {
		t.Fatal(err)
	}
	phone.Navigate(t, e.base+"/signin/link/"+link.Token)
	phone.WaitVisible(t, "#signout")

	laptop.open(t, e, id)
	laptop.tab.WaitVisible(t, "#approve")
	phone.Navigate(t, e.base+"/approve/"+id)
	phone.ClickNavigate(t, "#approve")
	laptop.tab.WaitVisible(t, "#outcome")
	if got := laptop.tab.TextIs(t, "#outcome", "This request was approved."); got != "This request was approved." {
		t.Errorf("the laptop's page, after the phone approved: %q", got)
	}
	if msgs := laptop.tab.ConsoleMessages(); len(msgs) != 0 {
		t.Errorf("console: %v", msgs)
	}
}

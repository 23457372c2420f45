package web

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/gowebpki/jcs"

	"github.com/countersign/countersign/approvals"
)

// Fixtures beyond paymentEUR.
const (
	// dbDelete is a database_operation (max_lifetime 10m).
	dbDelete = `[{"type":"database_operation","operation":"DELETE","database":"prod","table":"users","estimated_rows":100,"statement_sha256":"` +
		"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" + `"}]`
	// paymentAndDelete mixes a 15m and a 10m type.
	paymentAndDelete = `[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"500.00"},"creditorName":"Alice Smith","creditorAccount":{"iban":"DE89370400440532013000"}},` +
		`{"type":"database_operation","operation":"DELETE","database":"prod","table":"users","estimated_rows":100,"statement_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}]`
)

// basicAuth is the Authorization header of client_secret_basic (RFC 6749
// §2.3.1: id and secret form-urlencoded, then Basic).
func basicAuth(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

// send makes a request with exactly the body and headers given ("" leaves a
// header out).
func (e *testEnv) send(method, path, contentType, authorization, body string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	return e.do(req)
}

// newAgent registers another agent.
func (e *testEnv) newAgent(method string, types ...string) client {
	e.t.Helper()
	a, secret, err := e.svc.Store().CreateAgent(context.Background(), approvals.NewAgent{Name: "Another agent",
		Domain: "another.example.com", Types: types, AuthMethod: method})
	if err != nil {
		e.t.Fatal(err)
	}
	return client{ID: a.ID, Secret: secret, Basic: method != approvals.AuthClientSecretPost}
}

// newUser creates another user.
func (e *testEnv) newUser(email, userCode string) approvals.User {
	e.t.Helper()
	u, err := e.svc.Store().CreateUser(context.Background(), approvals.NewUser{Email: email, Name: email, UserCode: userCode})
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// exec runs SQL against the test database.
func (e *testEnv) exec(query string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Exec(query, args...); err != nil {
		e.t.Fatal(err)
	}
}

// expireRequest moves a request's expiry into the past.
func (e *testEnv) expireRequest(requestID string) {
	e.t.Helper()
	e.exec(`UPDATE requests SET expires_at = now() - interval '1 second', created_at = now() - interval '1 hour' WHERE id = $1`, requestID)
}

// wantNoStoreJSON checks the headers every OAuth JSON answer carries.
func wantNoStoreJSON(t *testing.T, r response) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	if p := r.Header.Get("Pragma"); p != "no-cache" {
		t.Errorf("Pragma = %q, want no-cache (RFC 6749 §5.1)", p)
	}
}

// wantKeys checks that m has exactly keys.
func wantKeys(t *testing.T, m map[string]any, keys ...string) {
	t.Helper()
	got := make([]string, 0, len(m))
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	keys = slices.Clone(keys)
	slices.Sort(keys)
	if !slices.Equal(got, keys) {
		t.Errorf("keys = %v, want %v", got, keys)
	}
}

// wantOAuthError checks an OAuth error answer: the status, the headers, and
// a body of exactly error and error_description, the code exact and the
// description present and fit for a client to read.
func wantOAuthError(t *testing.T, r response, status int, code string) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Errorf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
	wantNoStoreJSON(t, r)
	m := r.JSON(t)
	wantKeys(t, m, "error", "error_description")
	if m["error"] != code {
		t.Errorf("error = %v, want %s; body %s", m["error"], code, r.Body)
	}
	desc, _ := m["error_description"].(string)
	if msg := descriptionProblem(desc); msg != "" {
		t.Errorf("error_description %q: %s", desc, msg)
	}
	return m
}

// descriptionProblem says what is wrong with an error_description, or "".
func descriptionProblem(desc string) string {
	if desc == "" {
		return "empty"
	}
	// RFC 6749 §5.2: "Values for the "error_description" parameter MUST NOT
	// include characters outside the set %x20-21 / %x23-5B / %x5D-7E."
	for _, c := range []byte(desc) {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return "has a character outside RFC 6749 §5.2's set"
		}
	}
	lower := strings.ToLower(desc)
	for _, internal := range []string{"approvals:", "rar:", "pq:", "sql", "postgres", "internal", "%!", "panic", "goroutine", ".go:"} {
		if strings.Contains(lower, internal) {
			return "leaks internal text " + internal
		}
	}
	return ""
}

// requestIDOf is the request id inside an auth_req_id (id ‖ MAC, base64url).
func requestIDOf(t *testing.T, authReqID string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(authReqID)
	if err != nil || len(b) != 32 {
		t.Fatalf("auth_req_id %q is not id ‖ MAC", authReqID)
	}
	h := hex.EncodeToString(b[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func TestBCAuthorizeSuccess(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	ctx := context.Background()
	huge := strconv.FormatInt(1<<63-1, 10)
	tests := []struct {
		name      string
		c         client
		details   string
		extra     url.Values
		expiresIn int
	}{
		{"basic, type lifetime", e.agent, paymentEUR, nil, 900},
		{"client_secret_post", e.post, paymentEUR, nil, 900},
		{"requested_expiry below the type lifetime", e.agent, paymentEUR, url.Values{"requested_expiry": {"120"}}, 120},
		{"requested_expiry above the type lifetime", e.agent, paymentEUR, url.Values{"requested_expiry": {"3600"}}, 900},
		{"requested_expiry at the limit of int64 seconds", e.agent, paymentEUR, url.Values{"requested_expiry": {huge}}, 900},
		{"shortest lifetime of two types", e.agent, paymentAndDelete, nil, 600},
		{"scope with email", e.agent, paymentEUR, url.Values{"scope": {"openid email"}}, 900},
		{"login_hint by user id", e.agent, paymentEUR, url.Values{"login_hint": {e.user.ID}}, 900},
		{"login_hint email in another case", e.agent, paymentEUR, url.Values{"login_hint": {"Alice@Example.com"}}, 900},
		{"binding_message of 64 characters", e.agent, paymentEUR, url.Values{"binding_message": {strings.Repeat("ä", 64)}}, 900},
		{"registered resource", e.agent, paymentEUR, url.Values{"resource": {testAudience}}, 900},
		{"form content type with charset", e.agent, paymentEUR, nil, 900},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form := url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"}, "authorization_details": {tc.details}}
			for k, v := range tc.extra {
				form[k] = v
			}
			var r response
			if tc.name == "form content type with charset" {
				r = e.send(http.MethodPost, "/bc-authorize", "application/x-www-form-urlencoded; charset=UTF-8",
					basicAuth(tc.c.ID, tc.c.Secret), form.Encode())
			} else {
				r = e.postForm("/bc-authorize", &tc.c, form)
			}
			if r.Status != http.StatusOK {
				t.Fatalf("status = %d, want 200; body %s", r.Status, r.Body)
			}
			wantNoStoreJSON(t, r)
			m := r.JSON(t)
			wantKeys(t, m, "auth_req_id", "expires_in", "interval", "approval_url")
			if m["expires_in"] != float64(tc.expiresIn) {
				t.Errorf("expires_in = %v, want %d", m["expires_in"], tc.expiresIn)
			}
			if m["interval"] != float64(5) {
				t.Errorf("interval = %v, want 5", m["interval"])
			}
			id, _ := m["auth_req_id"].(string)
			reqID := requestIDOf(t, id)
			if want := e.srv.URL + "/approve/" + reqID; m["approval_url"] != want {
				t.Errorf("approval_url = %v, want %s", m["approval_url"], want)
			}
			// The request is stored, pending, for this agent and alice,
			// expiring when expires_in says.
			req, err := e.svc.Store().Request(ctx, reqID)
			if err != nil {
				t.Fatal(err)
			}
			if req.State != approvals.StatePending || req.AgentID != tc.c.ID || req.UserID != e.user.ID {
				t.Errorf("stored request: state %s agent %s user %s", req.State, req.AgentID, req.UserID)
			}
			if got := req.ExpiresAt.Sub(req.CreatedAt); got != time.Duration(tc.expiresIn)*time.Second {
				t.Errorf("stored lifetime = %s, want %ds", got, tc.expiresIn)
			}
		})
	}
}

func TestBCAuthorizeErrors(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	ctx := context.Background()

	suspendedAgent := e.newAgent(approvals.AuthClientSecretBasic, "payment_initiation")
	if err := e.svc.Store().SetAgentStatus(ctx, suspendedAgent.ID, "suspended"); err != nil {
		t.Fatal(err)
	}
	e.newUser("bob@example.com", "2468")
	e.newUser("carol@example.com", "")
	if err := e.svc.Store().SetUserStatus(ctx, "carol@example.com", "suspended"); err != nil {
		t.Fatal(err)
	}

	base := func(kv ...string) url.Values {
		v := url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"}, "authorization_details": {paymentEUR}}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				v.Del(kv[i])
			} else {
				v.Set(kv[i], kv[i+1])
			}
		}
		return v
	}
	agentBasic := basicAuth(e.agent.ID, e.agent.Secret)
	const form = "application/x-www-form-urlencoded"

	tests := []struct {
		name        string
		contentType string // default form
		auth        string // default the agent's Basic credentials; "-" for none
		body        string
		status      int
		code        string
		// descContains, when set, must be in error_description.
		descContains string
	}{
		// invalid_request (CIBA §13, RFC 6749 §5.2).
		{name: "no hint", body: base("login_hint", "").Encode(), status: 400, code: "invalid_request"},
		{name: "two hints", body: base("login_hint_token", "eyJhbGciOiJub25lIn0.e30.").Encode(), status: 400, code: "invalid_request"},
		{name: "three hints", body: base("login_hint_token", "x", "id_token_hint", "y").Encode(), status: 400, code: "invalid_request"},
		{name: "id_token_hint not an ID token of ours", body: base("login_hint", "", "id_token_hint", "eyJ.e30.sig").Encode(), status: 400, code: "invalid_request"},
		{name: "login_hint_token not a signed JWT", body: base("login_hint", "", "login_hint_token", "eyJ.e30.sig").Encode(), status: 400, code: "invalid_request"},
		{name: "repeated parameter", body: base().Encode() + "&scope=openid", status: 400, code: "invalid_request", descContains: "scope"},
		{name: "repeated parameter with a hostile name", body: base().Encode() + "&%22%5C%0A%C3%A4=1&%22%5C%0A%C3%A4=2", status: 400, code: "invalid_request"},
		{name: "not form-encoded", contentType: "application/json", body: `{"scope":"openid"}`, status: 400, code: "invalid_request"},
		{name: "no content type", contentType: "-", body: base().Encode(), status: 400, code: "invalid_request"},
		{name: "malformed form encoding", body: base().Encode() + "&binding_message=%zz", status: 400, code: "invalid_request"},
		{name: "requested_expiry not a number", body: base("requested_expiry", "soon").Encode(), status: 400, code: "invalid_request"},
		{name: "requested_expiry zero", body: base("requested_expiry", "0").Encode(), status: 400, code: "invalid_request"},
		{name: "requested_expiry negative", body: base("requested_expiry", "-60").Encode(), status: 400, code: "invalid_request"},
		{name: "requested_expiry fractional", body: base("requested_expiry", "1.5").Encode(), status: 400, code: "invalid_request"},
		{name: "requested_expiry beyond int64", body: base("requested_expiry", "99999999999999999999").Encode(), status: 400, code: "invalid_request"},
		{name: "missing authorization_details", body: base("authorization_details", "").Encode(), status: 400, code: "invalid_request"},
		{name: "request object", body: base("request", "eyJhbGciOiJub25lIn0.e30.").Encode(), status: 400, code: "invalid_request"},
		{name: "parameters in the query string only", body: "", status: 400, code: "invalid_request"},
		{name: "client_id in the body differs from Basic", body: base("client_id", e.post.ID).Encode(), status: 400, code: "invalid_request"},
		{name: "Basic and client_secret both", body: base("client_secret", e.agent.Secret).Encode(), status: 400, code: "invalid_request"},
		{name: "login_hint not UTF-8", body: base().Encode() + "&login_hint=%FF", status: 400, code: "invalid_request"},
		{name: "login_hint with NUL", body: strings.Replace(base().Encode(), "login_hint=alice", "login_hint=%00alice", 1), status: 400, code: "invalid_request"},
		{name: "acr_values not UTF-8", body: base("acr_values", "\xc3").Encode(), status: 400, code: "invalid_request"},
		{name: "client_notification_token too long", body: base("client_notification_token", strings.Repeat("t", 1025)).Encode(), status: 400, code: "invalid_request"},
		{name: "body over 64 KiB", body: base("binding_message", strings.Repeat("x", 70<<10)).Encode(), status: 400, code: "invalid_request"},

		// invalid_scope.
		{name: "scope without openid", body: base("scope", "email").Encode(), status: 400, code: "invalid_scope"},
		{name: "scope missing", body: base("scope", "").Encode(), status: 400, code: "invalid_request"},
		{name: "scope without openid, unknown values ignored", body: base("scope", "profile admin").Encode(), status: 400, code: "invalid_scope"},
		{name: "client_notification_token not a Bearer credential", body: base("client_notification_token", "abc def").Encode(), status: 400, code: "invalid_request"},
		{name: "client_notification_token with a header break", body: base("client_notification_token", "abc\r\nX: 1").Encode(), status: 400, code: "invalid_request"},
		{name: "client_notification_token with a quote", body: base("client_notification_token", `tok"en`).Encode(), status: 400, code: "invalid_request"},

		// unknown_user_id.
		{name: "unknown user", body: base("login_hint", "mallory@example.com").Encode(), status: 400, code: "unknown_user_id"},

		// unauthorized_client.
		{name: "suspended agent", auth: basicAuth(suspendedAgent.ID, suspendedAgent.Secret), body: base().Encode(), status: 400, code: "unauthorized_client"},

		// missing_user_code, invalid_user_code.
		{name: "user code missing", body: base("login_hint", "bob@example.com").Encode(), status: 400, code: "missing_user_code"},
		{name: "user code wrong", body: base("login_hint", "bob@example.com", "user_code", "1357").Encode(), status: 400, code: "invalid_user_code"},

		// invalid_binding_message.
		{name: "binding_message of 65 characters", body: base("binding_message", strings.Repeat("b", 65)).Encode(), status: 400, code: "invalid_binding_message"},
		{name: "binding_message with a control character", body: base("binding_message", "pay\x07now").Encode(), status: 400, code: "invalid_binding_message"},
		{name: "binding_message with a newline", body: base("binding_message", "line\nbreak").Encode(), status: 400, code: "invalid_binding_message"},

		// invalid_client (401).
		{name: "wrong secret", auth: basicAuth(e.agent.ID, "wrong"), body: base().Encode(), status: 401, code: "invalid_client"},
		{name: "unknown client", auth: basicAuth("agt_nobody", e.agent.Secret), body: base().Encode(), status: 401, code: "invalid_client"},
		{name: "Basic not base64", auth: "Basic !!!", body: base().Encode(), status: 401, code: "invalid_client"},
		{name: "Basic with a client_id that is not UTF-8", auth: "Basic " + base64.StdEncoding.EncodeToString([]byte("%FF:x")), body: base().Encode(), status: 401, code: "invalid_client"},
		{name: "Basic with raw bytes", auth: "Basic " + base64.StdEncoding.EncodeToString([]byte("\xff\x00:x")), body: base().Encode(), status: 401, code: "invalid_client"},
		{name: "no client authentication", auth: "-", body: base().Encode(), status: 401, code: "invalid_client"},
		{name: "Bearer instead of client authentication", auth: "Bearer abc", body: base().Encode(), status: 401, code: "invalid_client"},
		{name: "registered for Basic, sent as post", auth: "-", body: base("client_id", e.agent.ID, "client_secret", e.agent.Secret).Encode(), status: 401, code: "invalid_client"},
		{name: "registered for post, sent as Basic", auth: basicAuth(e.post.ID, e.post.Secret), body: base().Encode(), status: 401, code: "invalid_client"},
		{name: "client_secret_post wrong secret", auth: "-", body: base("client_id", e.post.ID, "client_secret", "wrong").Encode(), status: 401, code: "invalid_client"},
		{name: "client_secret_post client_id not UTF-8", auth: "-", body: base("client_secret", "x").Encode() + "&client_id=%FF", status: 400, code: "invalid_request"},

		// access_denied (403, CIBA §13).
		{name: "suspended user", body: base("login_hint", "carol@example.com").Encode(), status: 403, code: "access_denied"},

		// invalid_authorization_details (RFC 9396 §5).
		{name: "unknown type", body: base("authorization_details", `[{"type":"launch_missiles"}]`).Encode(), status: 400, code: "invalid_authorization_details"},
		{name: "type the agent is not registered for", auth: "-",
			body: base("authorization_details", dbDelete, "client_id", e.post.ID, "client_secret", e.post.Secret).Encode(), status: 400, code: "invalid_authorization_details", descContains: "database_operation"},
		{name: "schema failure names the field", body: base("authorization_details", strings.Replace(paymentEUR, `"500.00"`, `"5OO"`, 1)).Encode(),
			status: 400, code: "invalid_authorization_details", descContains: "/instructedAmount/amount"},
		{name: "missing required field names the field", body: base("authorization_details", strings.Replace(paymentEUR, `"creditorName":"Alice Smith",`, "", 1)).Encode(),
			status: 400, code: "invalid_authorization_details", descContains: "creditorName"},
		{name: "not JSON", body: base("authorization_details", `[{"type":`).Encode(), status: 400, code: "invalid_authorization_details"},
		{name: "not an array", body: base("authorization_details", `{"type":"payment_initiation"}`).Encode(), status: 400, code: "invalid_authorization_details"},
		{name: "empty array", body: base("authorization_details", `[]`).Encode(), status: 400, code: "invalid_authorization_details"},
		{name: "hostile value is not echoed raw", body: base("authorization_details", `[{"type":"payment_initiation\"\\\u0007"}]`).Encode(), status: 400, code: "invalid_authorization_details"},

		// invalid_target (RFC 8707 §2).
		{name: "unregistered resource", body: base("resource", "https://unregistered.example.com").Encode(), status: 400, code: "invalid_target"},
		{name: "relative resource", body: base("resource", "api").Encode(), status: 400, code: "invalid_target"},
		{name: "resource with a fragment", body: base("resource", testAudience+"#x").Encode(), status: 400, code: "invalid_target"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ct, auth, path := tc.contentType, tc.auth, "/bc-authorize"
			switch ct {
			case "":
				ct = form
			case "-":
				ct = ""
			}
			switch auth {
			case "":
				auth = agentBasic
			case "-":
				auth = ""
			}
			if tc.name == "parameters in the query string only" {
				path += "?" + base().Encode()
			}
			r := e.send(http.MethodPost, path, ct, auth, tc.body)
			m := wantOAuthError(t, r, tc.status, tc.code)
			if tc.descContains != "" && !strings.Contains(m["error_description"].(string), tc.descContains) {
				t.Errorf("error_description %q does not name %q", m["error_description"], tc.descContains)
			}
			if tc.status == http.StatusUnauthorized {
				// RFC 6749 §5.2 (and RFC 9110 §15.5.2 for every 401): a challenge
				// in the scheme the client used.
				if got := r.Header.Get("WWW-Authenticate"); got != `Basic realm="countersign"` {
					t.Errorf("WWW-Authenticate = %q", got)
				}
			}
		})
	}

	// Nothing above was stored.
	var n int
	if err := e.db.Get(&n, `SELECT count(*) FROM requests`); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d requests stored by refused calls", n)
	}

	t.Run("user code right", func(t *testing.T) {
		r := e.postForm("/bc-authorize", &e.agent, base("login_hint", "bob@example.com", "user_code", "2468"))
		if r.Status != http.StatusOK {
			t.Fatalf("status = %d; body %s", r.Status, r.Body)
		}
	})
}

func TestBCCancel(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)

	t.Run("pending", func(t *testing.T) {
		id, _ := e.authorize(e.agent, paymentEUR, nil)
		r := e.postForm("/bc-cancel", &e.agent, url.Values{"auth_req_id": {id}})
		if r.Status != http.StatusOK || len(r.Body) != 0 {
			t.Fatalf("cancel: %d %q, want 200 and no body", r.Status, r.Body)
		}
		if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control = %q", cc)
		}
		wantOAuthError(t, e.poll(e.agent, id), 400, "invalid_grant")
		// Cancelling twice: the request is no longer pending.
		wantOAuthError(t, e.postForm("/bc-cancel", &e.agent, url.Values{"auth_req_id": {id}}), 400, "invalid_grant")
	})
	t.Run("another client's request", func(t *testing.T) {
		id, reqID := e.authorize(e.agent, paymentEUR, nil)
		other := wantOAuthError(t, e.postForm("/bc-cancel", &e.post, url.Values{"auth_req_id": {id}}), 400, "invalid_grant")
		// The same answer as for an id that does not exist: the other client
		// learns nothing about the request.
		unknown := wantOAuthError(t, e.postForm("/bc-cancel", &e.post, url.Values{"auth_req_id": {"AAAA"}}), 400, "invalid_grant")
		if !reflect.DeepEqual(other, unknown) {
			t.Errorf("another client's request: %v; unknown: %v", other, unknown)
		}
		req, err := e.svc.Store().Request(context.Background(), reqID)
		if err != nil || req.State != approvals.StatePending {
			t.Errorf("request after a foreign cancel: %s %v", req.State, err)
		}
	})
	t.Run("approved", func(t *testing.T) {
		id, reqID := e.authorize(e.agent, paymentEUR, nil)
		e.decide(reqID, true)
		wantOAuthError(t, e.postForm("/bc-cancel", &e.agent, url.Values{"auth_req_id": {id}}), 400, "invalid_grant")
		if r := e.poll(e.agent, id); r.Status != http.StatusOK {
			t.Errorf("the approved request still gives its token: %d %s", r.Status, r.Body)
		}
	})
	t.Run("expired", func(t *testing.T) {
		id, reqID := e.authorize(e.agent, paymentEUR, nil)
		e.expireRequest(reqID)
		wantOAuthError(t, e.postForm("/bc-cancel", &e.agent, url.Values{"auth_req_id": {id}}), 400, "expired_token")
	})
	t.Run("garbage", func(t *testing.T) {
		wantOAuthError(t, e.postForm("/bc-cancel", &e.agent, url.Values{"auth_req_id": {"not-an-id"}}), 400, "invalid_grant")
	})
	t.Run("missing auth_req_id", func(t *testing.T) {
		wantOAuthError(t, e.postForm("/bc-cancel", &e.agent, nil), 400, "invalid_request")
	})
	t.Run("bad credentials", func(t *testing.T) {
		id, _ := e.authorize(e.agent, paymentEUR, nil)
		bad := client{ID: e.agent.ID, Secret: "wrong", Basic: true}
		wantOAuthError(t, e.postForm("/bc-cancel", &bad, url.Values{"auth_req_id": {id}}), 401, "invalid_client")
	})
}

func TestTokenErrors(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	ctx := context.Background()

	t.Run("authorization_pending", func(t *testing.T) {
		id, _ := e.authorize(e.agent, paymentEUR, nil)
		wantOAuthError(t, e.poll(e.agent, id), 400, "authorization_pending")
	})
	t.Run("access_denied after deny", func(t *testing.T) {
		id, reqID := e.authorize(e.agent, paymentEUR, nil)
		e.decide(reqID, false)
		// CIBA §11 answers as OpenID Connect Core §3.1.3.4 and RFC 6749 §5.2:
		// 400 (the 403 of CIBA §13 is for the backchannel endpoint).
		m := wantOAuthError(t, e.poll(e.agent, id), 400, "access_denied")
		if m["error_description"] != "the request was denied" {
			t.Errorf("error_description %q, want the bare denial when the reviewer gave no reason", m["error_description"])
		}
	})
	t.Run("access_denied carries the reviewer's reason", func(t *testing.T) {
		id, reqID := e.authorize(e.agent, paymentEUR, nil)
		if _, err := e.svc.Review(ctx, reqID, approvals.Reviewer{UserID: e.user.ID, AMR: []string{"user"}},
			approvals.ReviewInput{Verdict: approvals.VerdictDeny, Reason: "Wrong IBAN \"DE89…\" — ask finance"}); err != nil {
			t.Fatal(err)
		}
		// Within RFC 6749 §5.2's characters: quotes, backslashes and
		// non-ASCII are replaced (wantOAuthError checks the set).
		m := wantOAuthError(t, e.poll(e.agent, id), 400, "access_denied")
		if want := "the request was denied: Wrong IBAN 'DE89?' ? ask finance"; m["error_description"] != want {
			t.Errorf("error_description %q, want %q", m["error_description"], want)
		}
	})
	t.Run("access_denied for a suspended agent", func(t *testing.T) {
		a := e.newAgent(approvals.AuthClientSecretBasic, "payment_initiation")
		id, reqID := e.authorize(a, paymentEUR, nil)
		e.decide(reqID, true)
		if err := e.svc.Store().SetAgentStatus(ctx, a.ID, "suspended"); err != nil {
			t.Fatal(err)
		}
		wantOAuthError(t, e.poll(a, id), 400, "access_denied")
	})
	t.Run("expired_token while pending", func(t *testing.T) {
		id, reqID := e.authorize(e.agent, paymentEUR, nil)
		e.expireRequest(reqID)
		wantOAuthError(t, e.poll(e.agent, id), 400, "expired_token")
	})
	t.Run("expired_token after approval", func(t *testing.T) {
		id, reqID := e.authorize(e.agent, paymentEUR, nil)
		e.decide(reqID, true)
		e.expireRequest(reqID)
		wantOAuthError(t, e.poll(e.agent, id), 400, "expired_token")
	})
	t.Run("expired_token after the sweeper", func(t *testing.T) {
		id, reqID := e.authorize(e.agent, paymentEUR, nil)
		e.expireRequest(reqID)
		if _, err := e.svc.Store().ExpireDue(ctx, 100); err != nil {
			t.Fatal(err)
		}
		wantOAuthError(t, e.poll(e.agent, id), 400, "expired_token")
	})

	// invalid_grant: CIBA §11 "If the auth_req_id is invalid or was issued
	// to another Client". Every case gets the same body.
	var first map[string]any
	grant := func(t *testing.T, r response) {
		t.Helper()
		m := wantOAuthError(t, r, 400, "invalid_grant")
		if first == nil {
			first = m
		} else if !reflect.DeepEqual(m, first) {
			t.Errorf("invalid_grant body %v differs from %v", m, first)
		}
	}
	t.Run("invalid_grant unknown", func(t *testing.T) {
		grant(t, e.poll(e.agent, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
	})
	t.Run("invalid_grant garbage", func(t *testing.T) {
		grant(t, e.poll(e.agent, "not an auth_req_id at all \x01"))
	})
	t.Run("invalid_grant forged MAC", func(t *testing.T) {
		id, _ := e.authorize(e.agent, paymentEUR, nil)
		b, _ := base64.RawURLEncoding.DecodeString(id)
		b[31] ^= 1
		grant(t, e.poll(e.agent, base64.RawURLEncoding.EncodeToString(b)))
	})
	t.Run("invalid_grant another client's", func(t *testing.T) {
		id, reqID := e.authorize(e.agent, paymentEUR, nil)
		e.decide(reqID, true)
		grant(t, e.poll(e.post, id))
		// The rightful client still gets its token.
		if r := e.poll(e.agent, id); r.Status != http.StatusOK {
			t.Errorf("own poll after a foreign one: %d %s", r.Status, r.Body)
		}
	})
	t.Run("invalid_grant already collected", func(t *testing.T) {
		id, reqID := e.authorize(e.agent, paymentEUR, nil)
		e.decide(reqID, true)
		if r := e.poll(e.agent, id); r.Status != http.StatusOK {
			t.Fatalf("first collection: %d %s", r.Status, r.Body)
		}
		e.resetPoll(reqID)
		grant(t, e.poll(e.agent, id))
	})
	t.Run("invalid_grant cancelled", func(t *testing.T) {
		id, _ := e.authorize(e.agent, paymentEUR, nil)
		if r := e.postForm("/bc-cancel", &e.agent, url.Values{"auth_req_id": {id}}); r.Status != http.StatusOK {
			t.Fatalf("cancel: %d %s", r.Status, r.Body)
		}
		grant(t, e.poll(e.agent, id))
	})

	t.Run("unsupported_grant_type", func(t *testing.T) {
		r := e.postForm("/token", &e.agent, url.Values{"grant_type": {"authorization_code"}, "code": {"x"}})
		wantOAuthError(t, r, 400, "unsupported_grant_type")
	})
	t.Run("invalid_request missing grant_type", func(t *testing.T) {
		wantOAuthError(t, e.postForm("/token", &e.agent, url.Values{"auth_req_id": {"x"}}), 400, "invalid_request")
	})
	t.Run("invalid_request missing auth_req_id", func(t *testing.T) {
		wantOAuthError(t, e.postForm("/token", &e.agent, url.Values{"grant_type": {GrantTypeCIBA}}), 400, "invalid_request")
	})
	t.Run("invalid_request repeated auth_req_id", func(t *testing.T) {
		wantOAuthError(t, e.postForm("/token", &e.agent, url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {"a", "b"}}), 400, "invalid_request")
	})
	t.Run("invalid_request JSON body", func(t *testing.T) {
		r := e.send(http.MethodPost, "/token", "application/json", basicAuth(e.agent.ID, e.agent.Secret), `{"grant_type":"`+GrantTypeCIBA+`"}`)
		wantOAuthError(t, r, 400, "invalid_request")
	})
	t.Run("invalid_client wrong secret", func(t *testing.T) {
		bad := client{ID: e.agent.ID, Secret: "wrong", Basic: true}
		wantOAuthError(t, e.poll(bad, "x"), 401, "invalid_client")
	})
	t.Run("invalid_client none", func(t *testing.T) {
		r := e.postForm("/token", nil, url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {"x"}})
		wantOAuthError(t, r, 401, "invalid_client")
		if got := r.Header.Get("WWW-Authenticate"); got == "" {
			t.Error("401 without WWW-Authenticate (RFC 9110 §15.5.2)")
		}
	})
}

func TestTokenSlowDown(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	id, reqID := e.authorize(e.agent, paymentEUR, nil)
	interval := func() int {
		t.Helper()
		var n int
		if err := e.db.Get(&n, `SELECT poll_interval FROM requests WHERE id = $1`, reqID); err != nil {
			t.Fatal(err)
		}
		return n
	}
	slow := func(t *testing.T, retryAfter string) {
		t.Helper()
		r := e.poll(e.agent, id)
		wantOAuthError(t, r, 400, "slow_down")
		if got := r.Header.Get("Retry-After"); got != retryAfter {
			t.Errorf("Retry-After = %q, want %s", got, retryAfter)
		}
	}
	pending := func(t *testing.T) {
		t.Helper()
		r := e.poll(e.agent, id)
		wantOAuthError(t, r, 400, "authorization_pending")
		if got := r.Header.Get("Retry-After"); got != "" {
			t.Errorf("authorization_pending with Retry-After %q", got)
		}
	}

	t.Run("first poll", func(t *testing.T) { pending(t) })
	t.Run("second poll within the interval", func(t *testing.T) { slow(t, "10") })
	t.Run("third poll within the raised interval", func(t *testing.T) { slow(t, "15") })
	if got := interval(); got != 15 {
		t.Fatalf("poll_interval = %d, want 15", got)
	}
	// RFC 8628 §3.5: the increase holds "for this and all subsequent
	// requests". 12 s after the last poll is past the first two intervals but
	// not the third.
	t.Run("poll after 12 s is still too soon", func(t *testing.T) {
		e.exec(`UPDATE requests SET last_polled_at = now() - interval '12 seconds' WHERE id = $1`, reqID)
		slow(t, "20")
	})
	t.Run("poll after the raised interval", func(t *testing.T) {
		e.exec(`UPDATE requests SET last_polled_at = now() - interval '21 seconds' WHERE id = $1`, reqID)
		pending(t)
	})
	if got := interval(); got != 20 {
		t.Errorf("poll_interval = %d, want 20: it never falls back", got)
	}
	t.Run("an approved request is handed out at once", func(t *testing.T) {
		e.decide(reqID, true)
		if r := e.poll(e.agent, id); r.Status != http.StatusOK {
			t.Errorf("poll right after approval: %d %s", r.Status, r.Body)
		}
	})
}

// jwks fetches the server's public keys.
func (e *testEnv) jwks() jose.JSONWebKeySet {
	e.t.Helper()
	r := e.send(http.MethodGet, "/jwks.json", "", "", "")
	var set jose.JSONWebKeySet
	if r.Status != http.StatusOK {
		e.t.Fatalf("jwks: %d %s", r.Status, r.Body)
	}
	if err := json.Unmarshal(r.Body, &set); err != nil {
		e.t.Fatal(err)
	}
	return set
}

// verifyJWT checks a token's signature against /jwks.json, as a resource
// server would, and returns its header and claims.
func (e *testEnv) verifyJWT(t *testing.T, token string, alg jose.SignatureAlgorithm) (jose.Header, map[string]any) {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{alg})
	if err != nil {
		t.Fatalf("parse %s token: %v", alg, err)
	}
	h := tok.Headers[0]
	if h.KeyID == "" {
		t.Fatal("no kid")
	}
	set := e.jwks()
	keys := set.Key(h.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q: %d keys in the JWKS", h.KeyID, len(keys))
	}
	var claims map[string]any
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("signature: %v", err)
	}
	return h, claims
}

func TestTokenSuccess(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	id, reqID := e.authorize(e.agent, paymentEUR, nil)
	e.decide(reqID, true)
	before := time.Now().Unix()
	r := e.poll(e.agent, id)
	if r.Status != http.StatusOK {
		t.Fatalf("status = %d; body %s", r.Status, r.Body)
	}
	wantNoStoreJSON(t, r)
	var body map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	m := r.JSON(t)
	wantKeys(t, m, "access_token", "token_type", "expires_in", "id_token", "authorization_details", "scope")
	if m["scope"] != "openid" {
		t.Errorf("scope = %v, want openid", m["scope"])
	}
	if m["token_type"] != "Bearer" {
		t.Errorf("token_type = %v", m["token_type"])
	}
	expiresIn, _ := m["expires_in"].(float64)
	if expiresIn <= 0 || expiresIn > 300 {
		t.Errorf("expires_in = %v, want (0, 300]", m["expires_in"])
	}
	canonical, err := jcs.Transform([]byte(paymentEUR))
	if err != nil {
		t.Fatal(err)
	}
	if string(body["authorization_details"]) != string(canonical) {
		t.Errorf("authorization_details = %s, want the canonical %s", body["authorization_details"], canonical)
	}
	sum := sha256.Sum256(canonical)
	wantHash := base64.RawURLEncoding.EncodeToString(sum[:])
	var decidedAt int64
	if err := e.db.Get(&decidedAt, `SELECT floor(extract(epoch FROM decided_at))::bigint FROM requests WHERE id = $1`, reqID); err != nil {
		t.Fatal(err)
	}

	accessToken, _ := m["access_token"].(string)
	t.Run("access token", func(t *testing.T) {
		h, c := e.verifyJWT(t, accessToken, jose.ES256)
		if h.Algorithm != "ES256" {
			t.Errorf("alg = %s", h.Algorithm)
		}
		if typ := h.ExtraHeaders[jose.HeaderType]; typ != "at+jwt" {
			t.Errorf("typ = %v, want at+jwt (RFC 9068 §2.1)", typ)
		}
		want := map[string]any{
			"iss":                        e.srv.URL,
			"sub":                        e.user.ID,
			"client_id":                  e.agent.ID,
			"act":                        map[string]any{"sub": e.agent.ID},
			"aud":                        testAudience,
			"txn":                        reqID,
			"scope":                      "openid",
			"authorization_details_hash": wantHash,
			"acr":                        approvals.ACRApproval,
			"amr":                        []any{"user"},
			"auth_time":                  float64(decidedAt),
		}
		for k, v := range want {
			if !reflect.DeepEqual(c[k], v) {
				t.Errorf("%s = %#v, want %#v", k, c[k], v)
			}
		}
		var wantDetails any
		_ = json.Unmarshal(canonical, &wantDetails)
		if !reflect.DeepEqual(c["authorization_details"], wantDetails) {
			t.Errorf("authorization_details = %v", c["authorization_details"])
		}
		if jti, _ := c["jti"].(string); len(jti) < 16 {
			t.Errorf("jti = %q", jti)
		}
		iat, _ := c["iat"].(float64)
		exp, _ := c["exp"].(float64)
		if int64(iat) < before-1 || int64(iat) > time.Now().Unix()+1 {
			t.Errorf("iat = %v, not now", iat)
		}
		if exp <= iat || exp > iat+300 {
			t.Errorf("exp = %v, iat = %v: want iat < exp <= iat+300", exp, iat)
		}
		if exp-iat != expiresIn {
			t.Errorf("exp-iat = %v, expires_in = %v", exp-iat, expiresIn)
		}
		wantKeys(t, c, "iss", "sub", "aud", "client_id", "act", "iat", "exp", "jti", "txn", "scope",
			"authorization_details", "authorization_details_hash", "acr", "amr", "auth_time")
	})
	t.Run("id token", func(t *testing.T) {
		idToken, _ := m["id_token"].(string)
		h, c := e.verifyJWT(t, idToken, jose.ES256)
		if typ := h.ExtraHeaders[jose.HeaderType]; typ != "JWT" {
			t.Errorf("typ = %v", typ)
		}
		if c["aud"] != e.agent.ID {
			t.Errorf("aud = %v, want the client_id %s", c["aud"], e.agent.ID)
		}
		if c["iss"] != e.srv.URL || c["sub"] != e.user.ID {
			t.Errorf("iss = %v, sub = %v", c["iss"], c["sub"])
		}
		// OpenID Connect Core §3.1.3.6: left half of SHA-256 of the token.
		s := sha256.Sum256([]byte(accessToken))
		if want := base64.RawURLEncoding.EncodeToString(s[:16]); c["at_hash"] != want {
			t.Errorf("at_hash = %v, want %s", c["at_hash"], want)
		}
		if c["urn:openid:params:jwt:claim:auth_req_id"] != id {
			t.Errorf("auth_req_id claim = %v, want %s", c["urn:openid:params:jwt:claim:auth_req_id"], id)
		}
		if c["auth_time"] != float64(decidedAt) {
			t.Errorf("auth_time = %v, want %d", c["auth_time"], decidedAt)
		}
		if _, ok := c["email"]; ok {
			t.Error("email without the email scope")
		}
	})
	t.Run("the token is handed out once", func(t *testing.T) {
		e.resetPoll(reqID)
		wantOAuthError(t, e.poll(e.agent, id), 400, "invalid_grant")
	})
	t.Run("client_secret_post", func(t *testing.T) {
		id, reqID := e.authorize(e.post, paymentEUR, url.Values{"scope": {"openid email"}, "resource": {testAudience}})
		e.decide(reqID, true)
		r := e.poll(e.post, id)
		if r.Status != http.StatusOK {
			t.Fatalf("status = %d; body %s", r.Status, r.Body)
		}
		m := r.JSON(t)
		_, c := e.verifyJWT(t, m["access_token"].(string), jose.ES256)
		if c["client_id"] != e.post.ID || c["aud"] != testAudience || c["scope"] != "openid email" {
			t.Errorf("client_id %v aud %v scope %v", c["client_id"], c["aud"], c["scope"])
		}
		_, idc := e.verifyJWT(t, m["id_token"].(string), jose.ES256)
		if idc["email"] != "alice@example.com" {
			t.Errorf("email = %v with the email scope", idc["email"])
		}
	})
	t.Run("token lifetime capped by the request's expiry", func(t *testing.T) {
		id, reqID := e.authorize(e.agent, paymentEUR, url.Values{"requested_expiry": {"60"}})
		e.decide(reqID, true)
		r := e.poll(e.agent, id)
		if r.Status != http.StatusOK {
			t.Fatalf("status = %d; body %s", r.Status, r.Body)
		}
		if got := r.JSON(t)["expires_in"].(float64); got > 60 || got <= 0 {
			t.Errorf("expires_in = %v, want at most the 60 s left on the request", got)
		}
	})
}

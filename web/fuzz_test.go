package web

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign/approvals"
)

// Placeholders in fuzz inputs, replaced by the fuzz env's real values, so
// that the fuzzer starts from requests that get past client authentication
// (and stored corpus files stay valid across runs).
const (
	phBasic     = "{BASIC}"       // Authorization: Basic of the basic agent
	phPostBasic = "{POST_BASIC}"  // Basic of the client_secret_post agent (wrong method)
	phPostID    = "{POST_ID}"     // client_id of the client_secret_post agent
	phPostSec   = "{POST_SECRET}" // its secret
	phPending   = "{PENDING}"     // auth_req_id of a pending request
	phApproved  = "{APPROVED}"    // auth_req_id of an approved request (the first success spends it)
	phDenied    = "{DENIED}"      // auth_req_id of a denied request
	phDetails   = "{DETAILS}"     // paymentEUR, form-encoded
	phRSBasic   = "{RS_BASIC}"    // Authorization: Basic of the resource server
	phToken     = "{TOKEN}"       // an access token for paymentEUR (the first redeem spends it)
	phHash      = "{HASH}"        // its authorization_details_hash
)

// fuzzEnv is one server for a whole fuzz run, with the values the
// placeholders stand for.
type fuzzEnv struct {
	*testEnv
	hc   *http.Client
	repl *strings.Replacer
}

func newFuzzEnv(f *testing.F) *fuzzEnv {
	e := newTestEnv(f)
	ctx := context.Background()
	if _, err := e.svc.Store().CreateUser(ctx, approvals.NewUser{Email: "carol@example.com", Name: "Carol"}); err != nil {
		f.Fatal(err)
	}
	if err := e.svc.Store().SetUserStatus(ctx, "carol@example.com", "suspended"); err != nil {
		f.Fatal(err)
	}
	pending, _ := e.authorize(e.agent, paymentEUR, nil)
	approved, approvedID := e.authorize(e.agent, paymentEUR, nil)
	e.decide(approvedID, true)
	denied, deniedID := e.authorize(e.agent, paymentEUR, nil)
	e.decide(deniedID, false)
	token, _ := e.token(paymentEUR)
	var hash string
	if err := e.db.Get(&hash, `SELECT details_hash FROM requests WHERE id = $1`, approvedID); err != nil {
		f.Fatal(err)
	}
	return &fuzzEnv{
		testEnv: e,
		hc:      &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
		repl: strings.NewReplacer(
			phBasic, basicAuth(e.agent.ID, e.agent.Secret),
			phPostBasic, basicAuth(e.post.ID, e.post.Secret),
			phPostID, url.QueryEscape(e.post.ID),
			phPostSec, url.QueryEscape(e.post.Secret),
			phPending, pending,
			phApproved, approved,
			phDenied, denied,
			phDetails, url.QueryEscape(paymentEUR),
			phRSBasic, basicAuth(e.rs.ID, e.rs.Secret),
			phToken, token,
			phHash, hash,
		),
	}
}

// headerValue drops what net/http would refuse to send in a header value
// (control characters other than tab).
func headerValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// post sends one fuzz input and returns the answer.
func (fe *fuzzEnv) post(t *testing.T, path, contentType, authorization, body string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, fe.srv.URL+path, strings.NewReader(fe.repl.Replace(body)))
	if err != nil {
		t.Fatal(err)
	}
	// Raw bytes: net/http sends header values byte for byte.
	if ct := headerValue(contentType); ct != "" {
		req.Header["Content-Type"] = []string{ct}
	}
	if a := headerValue(fe.repl.Replace(authorization)); a != "" {
		req.Header["Authorization"] = []string{a}
	}
	resp, err := fe.hc.Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// checkOAuthAnswer is what every answer of an OAuth endpoint must be: no
// 5xx, Cache-Control no-store, a JSON object that is either the success
// (with exactly successKeys) or an OAuth error whose code is allowed at this
// endpoint and whose status fits the code.
func checkOAuthAnswer(t *testing.T, r response, path string, allowed []string, successKeys ...string) {
	t.Helper()
	if r.Status >= 500 {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control = %q", cc)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %q", err, r.Body)
	}
	if r.Status == http.StatusOK {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, successKeys) {
			t.Fatalf("success with keys %v, want %v", keys, successKeys)
		}
		return
	}
	code, _ := m["error"].(string)
	if !slices.Contains(allowed, code) {
		t.Fatalf("error %q is not one this endpoint may answer; body %s", m["error"], r.Body)
	}
	desc, _ := m["error_description"].(string)
	if msg := descriptionProblem(desc); msg != "" {
		t.Fatalf("error_description %q: %s", desc, msg)
	}
	want := http.StatusBadRequest
	switch {
	case code == "invalid_client":
		want = http.StatusUnauthorized
	case code == "access_denied" && path == "/bc-authorize":
		want = http.StatusForbidden
	}
	if r.Status != want {
		t.Fatalf("%s with status %d, want %d", code, r.Status, want)
	}
	if r.Status == http.StatusUnauthorized && r.Header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
}

const formType = "application/x-www-form-urlencoded"

// bcAuthorizeCodes are the errors of CIBA §13 (and RFC 8707's invalid_target).
var bcAuthorizeCodes = []string{"invalid_request", "invalid_scope", "expired_login_hint_token", "unknown_user_id",
	"unauthorized_client", "missing_user_code", "invalid_user_code", "invalid_binding_message", "invalid_client",
	"access_denied", "invalid_authorization_details", "invalid_target"}

// tokenCodes are the errors of CIBA §11 and RFC 6749 §5.2.
var tokenCodes = []string{"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
	"unsupported_grant_type", "invalid_scope", "authorization_pending", "slow_down", "access_denied", "expired_token"}

func FuzzBCAuthorizeForm(f *testing.F) {
	fe := newFuzzEnv(f)
	valid := "scope=openid&login_hint=alice%40example.com&authorization_details=" + phDetails
	seeds := []struct{ contentType, authorization, body string }{
		{formType, phBasic, valid},
		{formType, phBasic, valid + "&binding_message=Pay+500+EUR&requested_expiry=120&acr_values=urn%3Acountersign%3Aacr%3Aapproval"},
		{formType + "; charset=UTF-8", phBasic, valid + "&resource=https%3A%2F%2Fapi.example.com"},
		{formType, "", valid + "&client_id=" + phPostID + "&client_secret=" + phPostSec},
		{formType, phPostBasic, valid},
		{formType, "", valid},
		{formType, "Basic Zm9vOmJhcg==", valid},
		{formType, "Basic !!!", valid},
		{formType, phBasic, valid + "&scope=openid"},
		{formType, phBasic, valid + "&login_hint_token=x"},
		{formType, phBasic, "scope=openid&id_token_hint=eyJ.e30.x&authorization_details=" + phDetails},
		{formType, phBasic, "scope=email&login_hint=alice%40example.com&authorization_details=" + phDetails},
		{formType, phBasic, "scope=openid&login_hint=mallory%40example.com&authorization_details=" + phDetails},
		{formType, phBasic, "scope=openid&login_hint=carol%40example.com&authorization_details=" + phDetails},
		{formType, phBasic, valid + "&binding_message=%07"},
		{formType, phBasic, valid + "&requested_expiry=-1"},
		{formType, phBasic, valid + "&request=eyJ.e30."},
		{formType, phBasic, valid + "&resource=https%3A%2F%2Fevil.example"},
		{formType, phBasic, "scope=openid&login_hint=alice%40example.com&authorization_details=%5B%7B%22type%22%3A%22x%22%7D%5D"},
		{formType, phBasic, "scope=openid&login_hint=alice%40example.com&authorization_details=%5B%5D"},
		{"application/json", phBasic, `{"scope":"openid"}`},
		{"", phBasic, valid},
		{formType, phBasic, "%zz"},
		// Regressions: each was a 500 before the fix.
		{formType, phBasic, valid + "&requested_expiry=9223372036854775807"},
		{formType, phBasic, "scope=openid&login_hint=%00alice%40example.com&authorization_details=" + phDetails},
		{formType, phBasic, valid + "&acr_values=%C3"},
		{formType, phBasic, valid + "&client_notification_token=%FF"},
		{formType, "Basic " + base64.StdEncoding.EncodeToString([]byte("%FF:x")), valid},
		{formType, "", valid + "&client_id=%FF&client_secret=x"},
		{formType, phBasic, valid + "&%22=1&%22=2"},
	}
	for _, s := range seeds {
		f.Add(s.contentType, s.authorization, s.body)
	}
	f.Fuzz(func(t *testing.T, contentType, authorization, body string) {
		r := fe.post(t, "/bc-authorize", contentType, authorization, body)
		checkOAuthAnswer(t, r, "/bc-authorize", bcAuthorizeCodes, "approval_url", "auth_req_id", "expires_in", "interval")
	})
}

func FuzzTokenForm(f *testing.F) {
	fe := newFuzzEnv(f)
	grant := "grant_type=" + url.QueryEscape(GrantTypeCIBA)
	seeds := []struct{ contentType, authorization, body string }{
		{formType, phBasic, grant + "&auth_req_id=" + phPending},
		{formType, phBasic, grant + "&auth_req_id=" + phApproved},
		{formType, phBasic, grant + "&auth_req_id=" + phDenied},
		{formType, phBasic, grant + "&auth_req_id=AAAA"},
		{formType, phBasic, grant},
		{formType, phBasic, "auth_req_id=" + phPending},
		{formType, phBasic, "grant_type=authorization_code&code=x"},
		{formType, phBasic, grant + "&auth_req_id=" + phPending + "&auth_req_id=" + phPending},
		{formType, "", grant + "&auth_req_id=" + phPending + "&client_id=" + phPostID + "&client_secret=" + phPostSec},
		{formType, phPostBasic, grant + "&auth_req_id=" + phPending},
		{formType, "", grant + "&auth_req_id=" + phPending},
		{formType, "Bearer x", grant + "&auth_req_id=" + phPending},
		{formType, phBasic, grant + "&auth_req_id=" + phPending + "&client_secret=x"},
		{formType, "", grant + "&client_assertion_type=x&client_assertion=y"},
		{"application/json", phBasic, `{"grant_type":"` + GrantTypeCIBA + `"}`},
		{"text/plain", phBasic, grant},
		{formType + "; charset=ISO-8859-1", phBasic, grant + "&auth_req_id=" + phPending},
		// Regressions.
		{"", "Basic " + base64.StdEncoding.EncodeToString([]byte("\xff\x00:x")), grant},
		{formType, phBasic, grant + "&auth_req_id=%FF"},
	}
	for _, s := range seeds {
		f.Add(s.contentType, s.authorization, s.body)
	}
	f.Fuzz(func(t *testing.T, contentType, authorization, body string) {
		r := fe.post(t, "/token", contentType, authorization, body)
		checkOAuthAnswer(t, r, "/token", tokenCodes, "access_token", "authorization_details", "expires_in", "id_token", "scope", "token_type")
	})
}

// FuzzResourceServerForms sends arbitrary requests to the endpoints resource
// servers call: /redeem, /introspect and /revoke (which agents call too).
// Every answer is a well-formed success of the endpoint or one of its OAuth
// errors, never a 5xx.
func FuzzResourceServerForms(f *testing.F) {
	fe := newFuzzEnv(f)
	seeds := []struct {
		endpoint                         uint8
		contentType, authorization, body string
	}{
		{0, formType, phRSBasic, "token=" + phToken + "&authorization_details=" + phDetails},
		{0, formType, phRSBasic, "token=" + phToken + "&authorization_details_hash=" + phHash},
		{0, formType, phRSBasic, "token=" + phToken + "&authorization_details=%5B%5D"},
		{0, formType, phRSBasic, "token=" + phToken + "&authorization_details=" + phDetails + "&authorization_details_hash=" + phHash},
		{0, formType, phRSBasic, "token=" + phToken + "&authorization_details=%5B%7B%22type%22%3A1%7D%5D"},
		{0, formType, phRSBasic, "token=x.y.z&authorization_details_hash=" + phHash},
		{0, formType, phBasic, "token=" + phToken + "&authorization_details_hash=" + phHash},
		{1, formType, phRSBasic, "token=" + phToken},
		{1, formType, phRSBasic, "token=" + phToken + "&token_type_hint=refresh_token"},
		{1, formType, "", "token=" + phToken},
		{2, formType, phBasic, "token=" + phToken},
		{2, formType, phRSBasic, "token=" + phToken + "&token_type_hint=access_token"},
		{2, formType, phRSBasic, "token="},
		{2, "application/json", phRSBasic, `{"token":"x"}`},
	}
	for _, s := range seeds {
		f.Add(s.endpoint, s.contentType, s.authorization, s.body)
	}
	reasons := []string{"already_redeemed", "transaction_mismatch", "audience_mismatch", "expired", "revoked", "invalid_token"}
	f.Fuzz(func(t *testing.T, endpoint uint8, contentType, authorization, body string) {
		path := [...]string{"/redeem", "/introspect", "/revoke"}[endpoint%3]
		r := fe.post(t, path, contentType, authorization, body)
		if r.Status >= 500 {
			t.Fatalf("%s: status %d: %s", path, r.Status, r.Body)
		}
		if r.Status != http.StatusOK {
			checkOAuthAnswer(t, r, path, []string{"invalid_request", "invalid_client", "unauthorized_client", "invalid_authorization_details"})
			return
		}
		if path == "/revoke" {
			if len(r.Body) != 0 {
				t.Fatalf("/revoke answered 200 with a body: %q", r.Body)
			}
			return
		}
		var m map[string]any
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Fatalf("%s: not a JSON object: %q", path, r.Body)
		}
		active, ok := m["active"].(bool)
		reason, _ := m["reason"].(string)
		switch {
		case !ok:
			t.Fatalf("%s: no active member: %s", path, r.Body)
		case !active && path == "/redeem" && (len(m) != 2 || !slices.Contains(reasons, reason)):
			t.Fatalf("/redeem inactive answer %s", r.Body)
		case !active && path == "/introspect" && len(m) != 1:
			t.Fatalf("/introspect inactive answer %s, want only active:false (RFC 7662 §2.2)", r.Body)
		case active && (m["txn"] == nil || m["authorization_details_hash"] == nil):
			t.Fatalf("%s: active without claims: %s", path, r.Body)
		}
	})
}

package web

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/countersign/countersign/approvals"
)

// The fatigue guards over HTTP: an identical call gets the same
// auth_req_id, and a call over the pending limit access_denied (403 at
// the backchannel endpoint) with a Retry-After.
func TestFatigueGuardsOverHTTP(t *testing.T) {
	e := newTestEnvWith(t, func(c *approvals.Config) {
		c.Fatigue = &approvals.Fatigue{JoinIdentical: true, MaxPendingPerUser: 1}
	})
	form := url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"}, "authorization_details": {paymentEUR}}
	first := e.postForm("/bc-authorize", &e.agent, form)
	second := e.postForm("/bc-authorize", &e.agent, form)
	if first.Status != http.StatusOK || second.Status != http.StatusOK {
		t.Fatalf("identical calls: %d %s / %d %s", first.Status, first.Body, second.Status, second.Body)
	}
	if a, b := first.JSON(t)["auth_req_id"], second.JSON(t)["auth_req_id"]; a != b {
		t.Errorf("identical calls got auth_req_ids %v and %v, want one", a, b)
	}
	if exp := second.JSON(t)["expires_in"].(float64); exp <= 0 {
		t.Errorf("the joined call's expires_in is %v", exp)
	}

	other := url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"},
		"authorization_details": {`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"501.00"},"creditorName":"Alice Smith","creditorAccount":{"iban":"DE89370400440532013000"}}]`}}
	r := e.postForm("/bc-authorize", &e.agent, other)
	m := wantOAuthError(t, r, http.StatusForbidden, "access_denied")
	if d, _ := m["error_description"].(string); d == "" {
		t.Error("no error_description for the pending limit")
	}
	if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || s <= 0 {
		t.Errorf("Retry-After %q over the pending limit, want seconds", r.Header.Get("Retry-After"))
	}
}

package web

import (
	"net/http"
	"net/url"
	"testing"
)

// TestFlowSmoke walks the whole poll-mode flow once.
func TestFlowSmoke(t *testing.T) {
	e := newTestEnv(t)
	id, reqID := e.authorize(e.agent, paymentEUR, nil)
	if r := e.poll(e.agent, id); r.Status != http.StatusBadRequest || r.JSON(t)["error"] != "authorization_pending" {
		t.Fatalf("first poll: %d %s", r.Status, r.Body)
	}
	e.decide(reqID, true)
	e.resetPoll(reqID)
	r := e.poll(e.agent, id)
	if r.Status != http.StatusOK {
		t.Fatalf("poll after approval: %d %s", r.Status, r.Body)
	}
	tok := r.JSON(t)["access_token"].(string)
	red := e.postForm("/redeem", &e.rs, url.Values{"token": {tok}, "authorization_details": {paymentEUR}})
	if red.Status != http.StatusOK || red.JSON(t)["active"] != true {
		t.Fatalf("redeem: %d %s", red.Status, red.Body)
	}
	again := e.postForm("/redeem", &e.rs, url.Values{"token": {tok}, "authorization_details": {paymentEUR}})
	if again.JSON(t)["reason"] != "already_redeemed" {
		t.Fatalf("second redeem: %s", again.Body)
	}
}

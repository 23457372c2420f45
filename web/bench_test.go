package web

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// BenchmarkFlow runs whole flows one after another, as one agent and one
// resource server see them over HTTP: bc-authorize, the user's approval
// (through the domain API, as the approver web will call it), the token
// poll, and the redeem. It reports flows/s and the mean time of each step.
//
// Every iteration is a fresh request that has never been polled, so its
// first poll is never too soon: no poll timing needs resetting.
func BenchmarkFlow(b *testing.B) {
	e := newTestEnv(b)
	var authorize, decide, token, redeem time.Duration
	flows := 0
	for b.Loop() {
		t0 := time.Now()
		authReqID, reqID := e.authorize(e.agent, paymentEUR, nil)
		t1 := time.Now()
		e.decide(reqID, true)
		t2 := time.Now()
		r := e.poll(e.agent, authReqID)
		t3 := time.Now()
		if r.Status != http.StatusOK {
			b.Fatalf("token: %d %s", r.Status, r.Body)
		}
		tok, _ := r.JSON(b)["access_token"].(string)
		red := e.postForm("/redeem", &e.rs, url.Values{"token": {tok}, "authorization_details": {paymentEUR}})
		t4 := time.Now()
		if red.Status != http.StatusOK || red.JSON(b)["active"] != true {
			b.Fatalf("redeem: %d %s", red.Status, red.Body)
		}
		authorize += t1.Sub(t0)
		decide += t2.Sub(t1)
		token += t3.Sub(t2)
		redeem += t4.Sub(t3)
		flows++
	}
	b.ReportMetric(float64(flows)/b.Elapsed().Seconds(), "flows/s")
	for unit, d := range map[string]time.Duration{"ns/authorize": authorize, "ns/decide": decide, "ns/token": token, "ns/redeem": redeem} {
		b.ReportMetric(float64(d.Nanoseconds())/float64(flows), unit)
	}
}

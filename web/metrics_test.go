package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"testing"
)

// TestMetrics scrapes /metrics before and after a few flows: the request,
// OAuth error, decision, review and token counters move.
func TestMetrics(t *testing.T) {
	e := newTestEnv(t)
	ms := httptest.NewServer(MetricsHandler(e.metrics, true))
	defer ms.Close()
	scrape := func() string {
		t.Helper()
		resp, err := http.Get(ms.URL + "/metrics")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape: %v %v", resp, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	value := func(text, series string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+]+)$`).FindStringSubmatch(text)
		if m == nil {
			return 0
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	series := []string{
		`countersign_http_requests_total{code="200",route="POST /bc-authorize"}`,
		`countersign_http_requests_total{code="200",route="POST /token"}`,
		`countersign_oauth_errors_total{error="authorization_pending",route="POST /token"}`,
		`countersign_decisions_total{outcome="approve",rule="all"}`,
		`countersign_reviews_total{state="approved",verdict="approve"}`,
		`countersign_tokens_issued_total`,
		`countersign_tokens_redeemed_total`,
	}
	before := scrape()
	for range 3 {
		id, reqID := e.authorize(e.agent, paymentEUR, nil)
		if r := e.poll(e.agent, id); r.Status != http.StatusBadRequest {
			t.Fatalf("first poll: %d %s", r.Status, r.Body)
		}
		e.decide(reqID, true)
		e.resetPoll(reqID)
		r := e.poll(e.agent, id)
		if r.Status != http.StatusOK {
			t.Fatalf("token: %d %s", r.Status, r.Body)
		}
		red := e.postForm("/redeem", &e.rs, url.Values{"token": {r.JSON(t)["access_token"].(string)}, "authorization_details": {paymentEUR}})
		if red.JSON(t)["active"] != true {
			t.Fatalf("redeem: %s", red.Body)
		}
	}
	after := scrape()
	for _, s := range series {
		if d := value(after, s) - value(before, s); d != 3 {
			t.Errorf("%s moved by %v, want 3", s, d)
		}
	}
	for _, s := range []string{"countersign_http_request_duration_seconds_count{route=\"POST /redeem\"}"} {
		if value(after, s) == 0 {
			t.Errorf("%s missing or zero", s)
		}
	}
	if resp, err := http.Get(ms.URL + "/debug/pprof/"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("pprof index: %v %v", resp, err)
	}
	// The command line may hold --kek or a database password.
	if resp, err := http.Get(ms.URL + "/debug/pprof/cmdline"); err != nil || resp.StatusCode == http.StatusOK {
		t.Errorf("pprof cmdline is served: %v %v", resp, err)
	}
}

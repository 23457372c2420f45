package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"sync"
	"testing"

	"github.com/countersign/countersign/approvals"
)

// racers is how many clients race for one token.
const racers = 50

// raceClient returns an HTTP client that keeps a connection per racer, so
// that from the second round on the racers' requests leave together instead
// of queueing behind TCP handshakes.
func raceClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConns: racers, MaxIdleConnsPerHost: racers}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// reply is one racer's answer.
type reply struct {
	Status int
	Body   map[string]any
	Raw    []byte
	Err    error
}

// fire sends every request at once: all goroutines wait at one barrier.
func fire(hc *http.Client, reqs []*http.Request) []reply {
	out := make([]reply, len(reqs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() {
			<-start
			out[i] = send(hc, req)
		})
	}
	close(start)
	wg.Wait()
	return out
}

func send(hc *http.Client, req *http.Request) reply {
	resp, err := hc.Do(req)
	if err != nil {
		return reply{Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{Status: resp.StatusCode, Err: err}
	}
	r := reply{Status: resp.StatusCode, Raw: raw}
	r.Err = json.Unmarshal(raw, &r.Body)
	return r
}

// limitPool gives the server the connection pool size production uses
// (cmd/countersign), which also keeps 50 racers within the max_connections
// of a PostgreSQL shared with other test processes.
func (e *testEnv) limitPool() { e.db.SetMaxOpenConns(32) }

// TestTokenPollRace: 50 agents' polls of one approved request arrive at the
// same instant, each respecting the interval. Exactly one gets the token; the
// rest get invalid_grant (CIBA §11: the auth_req_id is spent), never
// slow_down and never a server error. The winner's token is the one
// recorded: it redeems.
func TestTokenPollRace(t *testing.T) {
	e := newTestEnv(t)
	e.limitPool()
	hc := raceClient(t)
	for round := range 5 {
		authReqID, reqID := e.authorize(e.agent, paymentEUR, nil)
		e.decide(reqID, true)
		e.resetPoll(reqID)
		reqs := make([]*http.Request, racers)
		for i := range reqs {
			reqs[i] = e.formRequest("/token", &e.agent, url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {authReqID}})
		}
		var tokens []string
		refused := 0
		for i, r := range fire(hc, reqs) {
			switch {
			case r.Err != nil:
				t.Errorf("round %d, racer %d: %d %s: %v", round, i, r.Status, r.Raw, r.Err)
			case r.Status == http.StatusOK:
				tok, _ := r.Body["access_token"].(string)
				if tok == "" {
					t.Errorf("round %d, racer %d: 200 without an access_token: %s", round, i, r.Raw)
				}
				tokens = append(tokens, tok)
			case r.Status == http.StatusBadRequest && r.Body["error"] == approvals.CodeInvalidGrant:
				refused++
			default:
				t.Errorf("round %d, racer %d: %d %s, want 200 or 400 invalid_grant", round, i, r.Status, r.Raw)
			}
		}
		if len(tokens) != 1 || refused != racers-1 {
			t.Fatalf("round %d: %d tokens and %d invalid_grant, want 1 and %d", round, len(tokens), refused, racers-1)
		}
		red := e.postForm("/redeem", &e.rs, url.Values{"token": {tokens[0]}, "authorization_details": {paymentEUR}})
		if red.Status != http.StatusOK || red.JSON(t)["active"] != true {
			t.Fatalf("round %d: the winning token does not redeem: %d %s", round, red.Status, red.Body)
		}
	}
}

// TestRedeemRace: 50 resource-server calls spend one token at the same
// instant. Exactly one is told active:true; the rest already_redeemed.
func TestRedeemRace(t *testing.T) {
	e := newTestEnv(t)
	e.limitPool()
	hc := raceClient(t)
	spent := map[string]any{"active": false, "reason": approvals.ReasonAlreadyRedeemed}
	for round := range 5 {
		tok, reqID := e.token(paymentEUR)
		reqs := make([]*http.Request, racers)
		for i := range reqs {
			reqs[i] = e.formRequest("/redeem", &e.rs, url.Values{"token": {tok}, "authorization_details": {paymentEUR}})
		}
		active, already := 0, 0
		for i, r := range fire(hc, reqs) {
			switch {
			case r.Err != nil || r.Status != http.StatusOK:
				t.Errorf("round %d, racer %d: %d %s: %v", round, i, r.Status, r.Raw, r.Err)
			case r.Body["active"] == true:
				active++
				if r.Body["txn"] != reqID {
					t.Errorf("round %d, racer %d: active for txn %v, want %s", round, i, r.Body["txn"], reqID)
				}
			case reflect.DeepEqual(r.Body, spent):
				already++
			default:
				t.Errorf("round %d, racer %d: %s, want active or already_redeemed", round, i, r.Raw)
			}
		}
		if active != 1 || already != racers-1 {
			t.Fatalf("round %d: %d active and %d already_redeemed, want 1 and %d", round, active, already, racers-1)
		}
		r, err := e.svc.Store().Request(t.Context(), reqID)
		if err != nil {
			t.Fatal(err)
		}
		if r.State != approvals.StateRedeemed || r.RedeemedBy == nil || *r.RedeemedBy != e.rs.ID {
			t.Fatalf("round %d: request is %s, redeemed by %v; want redeemed by %s", round, r.State, r.RedeemedBy, e.rs.ID)
		}
	}
}

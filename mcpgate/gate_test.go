package mcpgate

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/countersign/countersign/client"
	"github.com/countersign/countersign/internal/testserver"
	"github.com/countersign/countersign/protocol"
)

// TestAllow: a call policy allows runs at once, at every revision and over
// every transport, and the ungated tool runs without Countersign.
func TestAllow(t *testing.T) {
	cases := []struct {
		tr       transport
		revision string
		opts     func() *mcp.ClientOptions
	}{
		{inMemory, rev20260728, func() *mcp.ClientOptions { return urlCapable(&mcp.ClientOptions{}) }},
		{stateless, rev20260728, func() *mcp.ClientOptions { return urlCapable(&mcp.ClientOptions{}) }},
		{inMemory, rev20251125, func() *mcp.ClientOptions { return urlCapable(&mcp.ClientOptions{}) }},
		{streamable, rev20251125, func() *mcp.ClientOptions { return &mcp.ClientOptions{} }},
		{stateless, rev20251125, func() *mcp.ClientOptions { return &mcp.ClientOptions{} }},
		{streamable, rev20250618, func() *mcp.ClientOptions { return &mcp.ClientOptions{} }},
	}
	for _, c := range cases {
		t.Run(string(c.tr)+" "+c.revision, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			cs := e.connect(c.tr, c.revision, c.opts(), "")
			res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "balance"})
			if err != nil || res.IsError || text(res) != "balance 1000.00 EUR" {
				t.Fatalf("balance: %v %q", err, text(res))
			}
			e.wantRequests(0)
			e.wantRan(cs.CallTool(t.Context(), callParams(payArgs{Amount: "10.00", Creditor: "ACME"})))
			e.wantRuns(1)
			e.wantRequests(1)
		})
	}
}

// TestInputRequired: at 2026-07-28 the raw answer is input_required with
// the approval URL and a requestState; after approval the retry with that
// state runs the tool, and only one approval was ever asked for.
func TestInputRequired(t *testing.T) {
	for _, tr := range []transport{inMemory, stateless} {
		t.Run(string(tr), func(t *testing.T) {
			e := newEnv(t, envOptions{})
			cs := e.connect(tr, rev20260728, urlCapable(&mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true}}), "")
			res, err := cs.CallTool(t.Context(), callParams(human))
			p := e.inputRequest(res, err)
			state := res.RequestState
			e.wantRuns(0)
			e.wantRequests(1)

			e.cs.Approve(t, testserver.RequestID(p.URL))
			retry := callParams(human)
			retry.RequestState = state
			retry.InputResponses = mcp.InputResponseMap{inputKey: &mcp.ElicitResult{Action: "accept"}}
			e.wantRan(cs.CallTool(t.Context(), retry))
			e.wantRuns(1)
			e.wantRequests(1)
		})
	}
}

// TestInputRequiredAutomatic: the go-sdk client's own multi round-trip
// handling (elicitation handler, retry with the state) ends with the tool's
// result, and one approval.
func TestInputRequiredAutomatic(t *testing.T) {
	e := newEnv(t, envOptions{pendingWait: 2 * time.Second})
	elicited := 0
	cs := e.connect(inMemory, rev20260728, urlCapable(&mcp.ClientOptions{
		ElicitationHandler: func(_ context.Context, r *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			elicited++
			e.wantApprovalURL(r.Params)
			if elicited == 1 {
				e.cs.Approve(t, testserver.RequestID(r.Params.URL))
			}
			return &mcp.ElicitResult{Action: "accept"}, nil
		},
	}), "")
	e.wantRan(cs.CallTool(t.Context(), callParams(human)))
	if elicited != 1 {
		t.Errorf("the client was asked %d times, want once", elicited)
	}
	e.wantRuns(1)
	e.wantRequests(1)
}

// TestInputRequiredPending: a retry while the approval is pending waits
// (polling at the server's interval, not spinning) and then answers
// input_required again with the same state; it asks for nothing new.
func TestInputRequiredPending(t *testing.T) {
	const wait = 2500 * time.Millisecond
	e := newEnv(t, envOptions{pendingWait: wait})
	cs := e.connect(inMemory, rev20260728, urlCapable(&mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true}}), "")
	res, err := cs.CallTool(t.Context(), callParams(human))
	p := e.inputRequest(res, err)
	state := res.RequestState

	polls := e.polls.Load()
	start := time.Now()
	retry := callParams(human)
	retry.RequestState = state
	res2, err := cs.CallTool(t.Context(), retry)
	took := time.Since(start)
	p2 := e.inputRequest(res2, err)
	if res2.RequestState != state || p2.URL != p.URL {
		t.Errorf("the pending retry answered state %q url %s, want the same %q %s", res2.RequestState, p2.URL, state, p.URL)
	}
	if took < wait-time.Second || took > wait+2*time.Second {
		t.Errorf("the pending retry answered after %v, want about %v", took, wait)
	}
	// The test server's interval is 1 s: about 2 polls in 2.5 s.
	if n := e.polls.Load() - polls; n < 1 || n > 3 {
		t.Errorf("the pending retry polled %d times in %v, want 1 to 3", n, took)
	}
	e.wantRuns(0)
	e.wantRequests(1)

	// A fresh call with the same arguments resumes the same approval.
	res3, err := cs.CallTool(t.Context(), callParams(human))
	if p3 := e.inputRequest(res3, err); p3.URL != p.URL || res3.RequestState != state {
		t.Errorf("the repeated call got %s %q, want the pending approval's", p3.URL, res3.RequestState)
	}
	e.wantRequests(1)
}

// TestRequestStateRefused: a requestState that is forged, stale, or issued
// for other arguments or another user resumes nothing: the call is refused,
// the tool does not run and no approval is asked for.
func TestRequestStateRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := e.connect(stateless, rev20260728, urlCapable(&mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true}}), "alice")
	bob := e.connect(stateless, rev20260728, urlCapable(&mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true}}), "bob")
	res, err := alice.CallTool(t.Context(), callParams(human))
	p := e.inputRequest(res, err)
	state := res.RequestState
	e.cs.Approve(t, testserver.RequestID(p.URL)) // so that only the checks stand in the way

	s, err := e.gate.sealer.open(state, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stale := s
	stale.Expiry = time.Now().Add(-time.Second).Unix()
	other := sealer{key: []byte("another key of thirty-two bytes!")}
	forged := []byte(state)
	forged[len(forged)-2] ^= 1
	payload, _, _ := strings.Cut(strings.TrimPrefix(state, "v1."), ".")

	cases := []struct {
		name    string
		cs      *mcp.ClientSession
		args    payArgs
		state   string
		invalid bool // a JSON-RPC invalid params error; else a tool error
		want    string
	}{
		{"forged MAC", alice, human, string(forged), true, "MAC"},
		{"other key", alice, human, other.seal(s), true, "MAC"},
		{"no MAC", alice, human, "v1." + payload, true, "malformed"},
		{"other version", alice, human, "v2" + strings.TrimPrefix(state, "v1"), true, "encoding"},
		{"stale", alice, human, e.gate.sealer.seal(stale), false, "expired"},
		{"other arguments", alice, payArgs{Amount: "9999.00", Creditor: "ACME"}, state, true, "other arguments"},
		{"other user", bob, human, state, true, "another user"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			retry := callParams(c.args)
			retry.RequestState = c.state
			res, err := c.cs.CallTool(t.Context(), retry)
			if c.invalid {
				var we *jsonrpc.Error
				if !errors.As(err, &we) || we.Code != jsonrpc.CodeInvalidParams || !strings.Contains(we.Message, c.want) {
					t.Fatalf("got %v %+v, want invalid params saying %q", err, res, c.want)
				}
			} else {
				e.wantToolError(ans(res, err), c.want)
			}
			e.wantRuns(0)
			e.wantRequests(1)
		})
	}
	// The genuine state still resumes the approval.
	retry := callParams(human)
	retry.RequestState = state
	e.wantRan(alice.CallTool(t.Context(), retry))
	e.wantRequests(1)
}

// TestDenyExpire: a denial ends in a tool error with the reason, an expired
// request in one saying it expired, at every form.
func TestDenyExpire(t *testing.T) {
	t.Run("deny input_required", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		cs := e.connect(inMemory, rev20260728, urlCapable(&mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true}}), "")
		res, err := cs.CallTool(t.Context(), callParams(human))
		p := e.inputRequest(res, err)
		e.cs.Deny(t, testserver.RequestID(p.URL), "not this month")
		retry := callParams(human)
		retry.RequestState = res.RequestState
		e.wantToolError(ans(cs.CallTool(t.Context(), retry)), "denied", "the request was denied")
		e.wantRuns(0)
	})
	t.Run("deny at admission", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		cs := e.connect(inMemory, rev20260728, urlCapable(&mcp.ClientOptions{}), "")
		e.wantToolError(ans(cs.CallTool(t.Context(), callParams(payArgs{Amount: "10.00", Creditor: "Mallory"}))), "denied", "Payments to Mallory are blocked")
		e.wantRuns(0)
	})
	t.Run("decline input_required", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		cs := e.connect(inMemory, rev20260728, urlCapable(&mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true}}), "")
		res, err := cs.CallTool(t.Context(), callParams(human))
		p := e.inputRequest(res, err)
		retry := callParams(human)
		retry.RequestState = res.RequestState
		retry.InputResponses = mcp.InputResponseMap{inputKey: &mcp.ElicitResult{Action: "decline"}}
		e.wantToolError(ans(cs.CallTool(t.Context(), retry)), "declined")
		if r := e.cs.Request(t, testserver.RequestID(p.URL)); r.State == "pending" {
			t.Errorf("the declined request is %s, want withdrawn", r.State)
		}
		e.wantRuns(0)
	})
	t.Run("expire tool error", func(t *testing.T) {
		e := newEnv(t, envOptions{expiry: 2 * time.Second})
		cs := e.connect(inMemory, rev20251125, &mcp.ClientOptions{}, "")
		e.wantToolError(ans(cs.CallTool(t.Context(), callParams(human))), "approval needed")
		time.Sleep(2500 * time.Millisecond)
		e.wantToolError(ans(cs.CallTool(t.Context(), callParams(human))), "expired")
		e.wantRuns(0)
		e.wantRequests(1)
	})
	t.Run("expire input_required", func(t *testing.T) {
		e := newEnv(t, envOptions{expiry: 2 * time.Second})
		cs := e.connect(inMemory, rev20260728, urlCapable(&mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true}}), "")
		res, err := cs.CallTool(t.Context(), callParams(human))
		e.inputRequest(res, err)
		time.Sleep(2500 * time.Millisecond)
		retry := callParams(human)
		retry.RequestState = res.RequestState
		e.wantToolError(ans(cs.CallTool(t.Context(), retry)), "expired")
		e.wantRuns(0)
	})
}

// TestElicit: at 2025-11-25 a client with URL elicitation gets
// elicitation/create with mode url, the approval URL and an elicitationId,
// then notifications/elicitation/complete once the user approved, and the
// tool's result.
func TestElicit(t *testing.T) {
	for _, tr := range []transport{inMemory, streamable} {
		for _, deny := range []bool{false, true} {
			name := string(tr) + " approve"
			if deny {
				name = string(tr) + " deny"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, envOptions{})
				elicited := make(chan *mcp.ElicitParams, 4)
				completed := make(chan string, 4)
				cs := e.connect(tr, rev20251125, urlCapable(&mcp.ClientOptions{
					ElicitationHandler: func(_ context.Context, r *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
						elicited <- r.Params
						return &mcp.ElicitResult{Action: "accept"}, nil
					},
					ElicitationCompleteHandler: func(_ context.Context, r *mcp.ElicitationCompleteNotificationRequest) {
						completed <- r.Params.ElicitationID
					},
				}), "")
				done := make(chan answer, 1)
				go func() {
					res, err := cs.CallTool(context.Background(), callParams(human))
					done <- answer{res, err}
				}()
				var p *mcp.ElicitParams
				select {
				case p = <-elicited:
				case a := <-done:
					t.Fatalf("the call ended without elicitation: %v %+v", a.err, a.res)
				case <-time.After(10 * time.Second):
					t.Fatal("no elicitation/create")
				}
				e.wantApprovalURL(p)
				if p.ElicitationID == "" {
					t.Fatal("the elicitation has no elicitationId")
				}
				if deny {
					e.cs.Deny(t, testserver.RequestID(p.URL), "not this month")
				} else {
					e.cs.Approve(t, testserver.RequestID(p.URL))
				}
				a := <-done
				select {
				case id := <-completed:
					if id != p.ElicitationID {
						t.Errorf("completed %q, want %q", id, p.ElicitationID)
					}
				case <-time.After(5 * time.Second):
					t.Error("no notifications/elicitation/complete")
				}
				if deny {
					e.wantToolError(a, "denied")
					e.wantRuns(0)
				} else {
					e.wantRan(a.res, a.err)
					e.wantRuns(1)
				}
				e.wantRequests(1)
			})
		}
	}
}

// TestURLElicitationRequired: on a stateless transport a 2025-11-25 call
// gets error -32042 listing the elicitation; a retry while pending gets the
// same one; the retry after approval runs the tool.
func TestURLElicitationRequired(t *testing.T) {
	for _, o := range []envOptions{{stateless: true, pendingWait: 1500 * time.Millisecond}, {pendingWait: 1500 * time.Millisecond}} {
		e := newEnv(t, o)
		cs := e.connect(stateless, rev20251125, urlCapable(&mcp.ClientOptions{}), "")
		elicitation := func() *mcp.ElicitParams {
			t.Helper()
			res, err := cs.CallTool(t.Context(), callParams(human))
			var we *jsonrpc.Error
			if !errors.As(err, &we) || we.Code != mcp.CodeURLElicitationRequired {
				t.Fatalf("got %v %+v, want error -32042", err, res)
			}
			var data struct {
				Elicitations []*mcp.ElicitParams `json:"elicitations"`
			}
			if err := json.Unmarshal(we.Data, &data); err != nil || len(data.Elicitations) != 1 {
				t.Fatalf("error data %s, want one elicitation", we.Data)
			}
			p := data.Elicitations[0]
			e.wantApprovalURL(p)
			if p.ElicitationID == "" || !strings.Contains(we.Message, p.URL) {
				t.Errorf("elicitation %+v in %q: want an elicitationId and the URL in the message", p, we.Message)
			}
			return p
		}
		p := elicitation()
		if p2 := elicitation(); p2.ElicitationID != p.ElicitationID || p2.URL != p.URL {
			t.Errorf("the pending retry got %+v, want %+v", p2, p)
		}
		e.wantRequests(1)
		e.cs.Approve(t, testserver.RequestID(p.URL))
		e.wantRan(cs.CallTool(t.Context(), callParams(human)))
		e.wantRuns(1)
		e.wantRequests(1)
	}
}

// TestNoURLElicitation: a client that declared no URL elicitation gets a
// tool error with the approval URL and the binding message; the same call
// after approval runs the tool, and one approval was asked for.
func TestNoURLElicitation(t *testing.T) {
	cases := []struct {
		tr       transport
		revision string
	}{
		{inMemory, rev20251125}, {streamable, rev20251125}, {streamable, rev20250618}, {inMemory, rev20260728},
	}
	for _, c := range cases {
		t.Run(string(c.tr)+" "+c.revision, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			cs := e.connect(c.tr, c.revision, &mcp.ClientOptions{}, "")
			msg := e.wantToolError(ans(cs.CallTool(t.Context(), callParams(human))), e.cs.URL+"/approve/", `binding message "MCP `, "pay 250.00 EUR to ACME")
			u := msg[strings.Index(msg, e.cs.URL+"/approve/"):]
			u = u[:strings.IndexAny(u, " ;")]
			e.wantRuns(0)
			e.cs.Approve(t, testserver.RequestID(u))
			e.wantRan(cs.CallTool(t.Context(), callParams(human)))
			e.wantRuns(1)
			e.wantRequests(1)
		})
	}
}

// TestRedeemFirst: the tool runs only after /redeem spent the token for
// exactly the call's details; a redeem for other details (refused by the
// server, the token unspent) leaves it unrun.
func TestRedeemFirst(t *testing.T) {
	var redeemed []string
	e := newEnv(t, envOptions{redeem: func(r *client.Redeemer) func(context.Context, string, any) (*protocol.AccessTokenClaims, error) {
		return func(ctx context.Context, token string, details any) (*protocol.AccessTokenClaims, error) {
			redeemed = append(redeemed, string(mustJSON(details)))
			if strings.Contains(string(mustJSON(details)), `"amount":"11.00"`) {
				details = payArgs{Amount: "12.00", Creditor: "ACME"}.details()
			}
			return r.Redeem(ctx, token, details)
		}
	}})
	cs := e.connect(inMemory, rev20251125, &mcp.ClientOptions{}, "")
	e.wantToolError(ans(cs.CallTool(t.Context(), callParams(payArgs{Amount: "11.00", Creditor: "ACME"}))),
		"approved, but redeeming its token failed", "transaction_mismatch")
	e.wantRuns(0)
	e.wantRan(cs.CallTool(t.Context(), callParams(payArgs{Amount: "10.00", Creditor: "ACME"})))
	e.wantRuns(1)
	if len(redeemed) != 2 || redeemed[1] != string(mustJSON(payArgs{Amount: "10.00", Creditor: "ACME"}.details())) {
		t.Errorf("redeemed %q, want the calls' details", redeemed)
	}
}

// TestConcurrentCalls: the same call arriving twice at once asks once, and
// the approval's token runs the tool once however many retries wait for it.
func TestConcurrentCalls(t *testing.T) {
	e := newEnv(t, envOptions{})
	cs := e.connect(inMemory, rev20251125, &mcp.ClientOptions{}, "")
	both := func() [2]answer {
		var out [2]answer
		var wg sync.WaitGroup
		for i := range out {
			wg.Go(func() { out[i] = ans(cs.CallTool(t.Context(), callParams(human))) })
		}
		wg.Wait()
		return out
	}
	first := both()
	m0, m1 := e.wantToolError(first[0], "approval needed"), e.wantToolError(first[1], "approval needed")
	if m0 != m1 {
		t.Errorf("two calls at once were answered\n%s\n%s\nwant the same approval", m0, m1)
	}
	e.wantRequests(1)
	u := regexp.MustCompile(regexp.QuoteMeta(e.cs.URL) + `/approve/[^ ;]+`).FindString(m0)
	e.cs.Approve(t, testserver.RequestID(u))
	ran, used := 0, 0
	for _, a := range both() {
		switch {
		case a.err == nil && !a.res.IsError:
			ran++
		case a.err == nil && strings.Contains(text(a.res), "already used by another call"):
			used++
		default:
			t.Errorf("retry answered %v %q", a.err, text(a.res))
		}
	}
	if ran != 1 || used != 1 {
		t.Errorf("of two retries %d ran and %d were told the approval was used, want 1 and 1", ran, used)
	}
	e.wantRuns(1)
	e.wantRequests(1)
}

// TestElicitExpire: at 2025-11-25 an elicited approval nobody decides ends,
// once the request expired, in the complete notification and a tool error
// saying it expired.
func TestElicitExpire(t *testing.T) {
	e := newEnv(t, envOptions{expiry: 2 * time.Second})
	completed := make(chan string, 1)
	var elicited string
	cs := e.connect(inMemory, rev20251125, urlCapable(&mcp.ClientOptions{
		ElicitationHandler: func(_ context.Context, r *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			elicited = r.Params.ElicitationID
			return &mcp.ElicitResult{Action: "accept"}, nil
		},
		ElicitationCompleteHandler: func(_ context.Context, r *mcp.ElicitationCompleteNotificationRequest) {
			completed <- r.Params.ElicitationID
		},
	}), "")
	e.wantToolError(ans(cs.CallTool(t.Context(), callParams(human))), "expired")
	select {
	case id := <-completed:
		if id == "" || id != elicited {
			t.Errorf("completed %q, want the elicitation %q", id, elicited)
		}
	case <-time.After(5 * time.Second):
		t.Error("no notifications/elicitation/complete")
	}
	e.wantRuns(0)
	e.wantRequests(1)
}

package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approvals"
)

// requestsFixture is the evidence fixture's database (a step-up request
// approved with a passkey) with that request's token collected and
// redeemed and its consent page viewed, plus a ping agent's request that
// Alice approved (its ping queued), one she denied, and one of Mallory's
// that waits and was made two days ago.
type requestsFixture struct {
	evidenceFixture
	url                       string
	svc                       *approvals.Service
	pinger                    approvals.Agent
	pinged, denied, mallories string
}

func newRequestsFixture(t *testing.T) requestsFixture {
	t.Helper()
	f := requestsFixture{evidenceFixture: newEvidenceFixture(t)}
	for _, kv := range f.env {
		if v, ok := strings.CutPrefix(kv, "DATABASE_URL="); ok {
			f.url = v
		}
	}
	ctx := context.Background()
	store := approvals.NewStore(f.db)
	kek := []byte(strings.Repeat("k", 32))
	keys, err := approvals.NewKeyStore(f.db, kek, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	f.svc = approvals.NewService(store, approvals.NewTypeStore(store), keys, approvals.Config{Issuer: "https://countersign.test", KEK: kek})
	agent, err := store.Agent(ctx, f.request.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Viewed(ctx, f.request.ID, f.user, "ses_test"); err != nil {
		t.Fatal(err)
	}
	handle, err := f.svc.AuthReqID(f.request.ID)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := f.svc.Token(ctx, agent, handle)
	if err != nil {
		t.Fatal(err)
	}
	servers, err := store.ResourceServers(ctx)
	if err != nil || len(servers) != 1 {
		t.Fatalf("resource servers %v %v", servers, err)
	}
	if red, err := f.svc.Redeem(ctx, servers[0], tr.AccessToken, []byte(f.request.DetailsCanonical), ""); err != nil || !red.Active {
		t.Fatalf("redeem: %+v %v", red, err)
	}

	if f.pinger, _, err = store.CreateAgent(ctx, approvals.NewAgent{Name: "Pinger", Domain: "ping.example.com", Types: []string{"payment_initiation"},
		DeliveryMode: approvals.DeliveryPing, NotifyURL: "https://ping.example.com/cb"}); err != nil {
		t.Fatal(err)
	}
	ask := func(agent approvals.Agent, hint, amount string) string {
		c, err := f.svc.Authorize(ctx, agent, approvals.AuthRequest{Scope: "openid", LoginHint: hint, ClientNotificationToken: "cnt-secret-1234",
			AuthorizationDetails: []byte(`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"` + amount + `"},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}]`)})
		if err != nil || c.Request.State != approvals.StatePending {
			t.Fatalf("request: %v %v", c.Request.State, err)
		}
		return c.Request.ID
	}
	review := func(id string, v approvals.Verdict) {
		if _, err := f.svc.Review(ctx, id, approvals.Reviewer{UserID: f.user.ID, AMR: []string{"hwk", "user"}},
			approvals.ReviewInput{Verdict: v, Reason: "not this one"}); err != nil {
			t.Fatal(err)
		}
	}
	f.pinged = ask(f.pinger, "alice@example.com", "500.00")
	review(f.pinged, approvals.VerdictApprove)
	f.denied = ask(agent, "alice@example.com", "600.00")
	review(f.denied, approvals.VerdictDeny)
	f.mallories = ask(agent, "mallory@example.com", "700.00")
	if _, err := f.db.Exec(`UPDATE requests SET created_at = now() - interval '2 days', expires_at = now() + interval '1 hour' WHERE id = $1`, f.mallories); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRequestsShow: requests show prints a request's whole timeline from
// the trail — who asked, what, the details hash, the rule and policy version
// that decided, the view, the review and its step-up evidence, the token's
// issue and redemption, and a ping's notification — and --json the same as
// one object; an unknown id exits 1 and a malformed one 2, each saying so.
func TestRequestsShow(t *testing.T) {
	f := newRequestsFixture(t)
	tl, err := f.svc.Timeline(context.Background(), f.request.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(tl.Summaries) != 1 || !strings.Contains(tl.Summaries[0], "Bob") {
		t.Fatalf("summaries %q", tl.Summaries)
	}

	out, errOut, code := inProcess(t, f.url, "requests", "show", f.request.ID)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	var evidenceID int64
	if err := f.db.Get(&evidenceID, `SELECT id FROM step_up_evidence WHERE request_id = $1`, f.request.ID); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Invoice bot (" + f.request.AgentID + ")", "alice@example.com (" + f.user.ID + ")", "payment_initiation",
		tl.Summaries[0], f.request.DetailsHash, "policy version 1, rule", "step_up",
		"request.created", "asked for payment_initiation",
		"request.viewed", "consent page viewed in session ses_test",
		"review.recorded", "reviewed: approve", "with step-up evidence",
		"evidence.recorded", "passkey", "assertion sha256",
		"request.approved", "token.issued", "token issued, jti", "token.redeemed", "resource_server:",
		"user:" + f.user.ID + " (alice@example.com)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("requests show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "DE89370400440532013000") {
		t.Errorf("requests show prints the creditor's IBAN in full:\n%s", out)
	}

	out, errOut, code = inProcess(t, f.url, "requests", "show", "--json", f.request.ID)
	if code != 0 {
		t.Fatalf("--json: exit %d\n%s%s", code, out, errOut)
	}
	var got struct {
		Request struct {
			ID          string `json:"id"`
			State       string `json:"state"`
			DetailsHash string `json:"authorization_details_hash"`
			PolicyRule  string `json:"policy_rule"`
		} `json:"request"`
		Summaries []string `json:"summaries"`
		Events    []struct {
			Kind      string          `json:"kind"`
			Actor     string          `json:"actor"`
			ActorName string          `json:"actor_name"`
			Body      json.RawMessage `json:"body"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	var kinds []string
	for _, e := range got.Events {
		kinds = append(kinds, e.Kind)
	}
	// (The fixture views the page after the approval.)
	want := []string{approvals.KindRequestCreated, approvals.KindReviewRecorded, approvals.KindEvidenceRecorded,
		approvals.KindRequestApproved, approvals.KindRequestViewed, approvals.KindTokenIssued, approvals.KindTokenRedeemed}
	if !slices.Equal(kinds, want) {
		t.Errorf("--json events %v, want %v", kinds, want)
	}
	if got.Request.ID != f.request.ID || got.Request.State != string(approvals.StateRedeemed) || got.Request.DetailsHash != f.request.DetailsHash ||
		got.Request.PolicyRule == "" || len(got.Summaries) != 1 {
		t.Errorf("--json request %+v summaries %q", got.Request, got.Summaries)
	}
	if len(got.Events) > 2 && (got.Events[1].ActorName != "alice@example.com" || !strings.Contains(string(got.Events[2].Body), `"assertion_sha256": `)) {
		t.Errorf("review by %q, evidence %s", got.Events[1].ActorName, got.Events[2].Body)
	}

	// The ping agent's request: its notification is on its timeline.
	out, _, code = inProcess(t, f.url, "requests", "show", f.pinged)
	if code != 0 || !strings.Contains(out, "notification.queued") || !strings.Contains(out, "ping queued (outbox row") ||
		strings.Contains(out, "cnt-secret-1234") || strings.Contains(out, "ping.example.com/cb") {
		t.Errorf("ping request's timeline (exit %d):\n%s", code, out)
	}

	for _, tc := range []struct {
		name string
		args []string
		exit int
		msg  string
	}{
		{"unknown id", []string{"requests", "show", "0b6f3c9e-1f5e-4c8a-9d7b-2a4e6c8f0a1b"}, 1, "there is no request 0b6f3c9e-1f5e-4c8a-9d7b-2a4e6c8f0a1b"},
		{"malformed id", []string{"requests", "show", "not-a-uuid"}, 2, `"not-a-uuid" is not a request id`},
		{"no id", []string{"requests", "show"}, 2, "want a REQUEST_ID"},
		{"unknown subcommand", []string{"requests", "delete"}, 2, `unknown subcommand "delete"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := inProcess(t, f.url, tc.args...)
			if code != tc.exit || !strings.Contains(errOut, tc.msg) || out != "" {
				t.Errorf("exit %d, want %d; stderr %q, want %q; stdout %q", code, tc.exit, errOut, tc.msg, out)
			}
		})
	}
}

// TestRequestsList: requests list selects by state, agent, user, type and
// creation time, newest first, at most --limit; --json prints JSON Lines;
// bad filters exit 2 with a message.
func TestRequestsList(t *testing.T) {
	f := newRequestsFixture(t)
	all := []string{f.denied, f.pinged, f.request.ID, f.mallories} // newest first
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	ids := func(t *testing.T, args ...string) []string {
		t.Helper()
		out, errOut, code := inProcess(t, f.url, append([]string{"requests", "list", "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("exit %d\n%s%s", code, out, errOut)
		}
		got := []string{}
		for line := range strings.Lines(out) {
			var r approvals.RequestInfo
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("not JSON Lines: %v\n%s", err, out)
			}
			got = append(got, r.ID)
		}
		return got
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"all", nil, all},
		{"state redeemed", []string{"--state", "redeemed"}, []string{f.request.ID}},
		{"state approved", []string{"--state", "approved"}, []string{f.pinged}},
		{"state denied", []string{"--state", "denied"}, []string{f.denied}},
		{"state pending", []string{"--state", "pending"}, []string{f.mallories}},
		{"state expired", []string{"--state", "expired"}, []string{}},
		{"agent", []string{"--agent", f.pinger.ID}, []string{f.pinged}},
		{"user by email", []string{"--user", "Mallory@example.com"}, []string{f.mallories}},
		{"user by id", []string{"--user", f.user.ID}, []string{f.denied, f.pinged, f.request.ID}},
		{"type", []string{"--type", "payment_initiation"}, all},
		{"type without requests", []string{"--type", "code_merge"}, []string{}},
		{"since a duration", []string{"--since", "24h"}, all[:3]},
		{"since days", []string{"--since", "3d"}, all},
		{"until a duration", []string{"--until", "1d"}, []string{f.mallories}},
		{"since RFC 3339", []string{"--since", future}, []string{}},
		{"limit", []string{"--limit", "2"}, all[:2]},
		{"filters together", []string{"--user", "alice@example.com", "--state", "denied", "--since", "1h"}, []string{f.denied}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ids(t, tc.args...); !slices.Equal(got, tc.want) {
				t.Errorf("requests list %v: %v, want %v", tc.args, got, tc.want)
			}
		})
	}

	out, errOut, code := inProcess(t, f.url, "requests", "list", "--state", "denied")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], f.denied) ||
		!strings.Contains(lines[1], "alice@example.com") || !strings.Contains(lines[1], "Invoice bot") {
		t.Errorf("table (exit %d):\n%s%s", code, out, errOut)
	}

	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"unknown state", []string{"--state", "done"}, `state "done" is not one of pending`},
		{"bad since", []string{"--since", "yesterday"}, `--since: "yesterday" is neither`},
		{"bad until", []string{"--until", "-5h"}, "--until:"},
		{"until before since", []string{"--since", "1h", "--until", "2h"}, "until must be after since"},
		{"zero limit", []string{"--limit", "0"}, "--limit must be at least 1"},
		{"huge limit", []string{"--limit", "1000000"}, "the limit is 1 to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := inProcess(t, f.url, append([]string{"requests", "list"}, tc.args...)...)
			if code != 2 || !strings.Contains(errOut, tc.msg) || out != "" {
				t.Errorf("exit %d, want 2; stderr %q, want %q; stdout %q", code, errOut, tc.msg, out)
			}
		})
	}
}

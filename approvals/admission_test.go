package approvals

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// pay is one payment_initiation element.
func pay(amount, currency string) string {
	return fmt.Sprintf(`{"type":"payment_initiation","instructedAmount":{"currency":%q,"amount":%q},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}`, currency, amount)
}

func details(elements ...string) string { return "[" + strings.Join(elements, ",") + "]" }

// TestDryRunEqualsLive runs a table of sample requests through policy
// dry-run and through live admission under the same (demo) policy, agent and
// user, and asserts the same outcome, rule and reason. Dry-run goes first,
// so both see the same history; the live requests build that history up.
func TestDryRunEqualsLive(t *testing.T) {
	f := newRaceFixture(t)
	ctx := context.Background()
	source, err := os.ReadFile("../examples/demo/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Policies().Apply(ctx, "policy.yaml", source); err != nil {
		t.Fatal(err)
	}
	all := []string{"payment_initiation", "database_operation", "code_merge", "email_send"}
	agent, _, err := f.store.CreateAgent(ctx, NewAgent{Name: "Demo", Domain: "agent.example.com", Types: all})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.store.CreateResourceServer(ctx, NewResourceServer{Name: "Mail", Audience: "https://mail.example.com", Types: []string{"email_send"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.CreateUser(ctx, NewUser{Email: "fresh@example.com", Groups: []string{"maintainers"}}); err != nil {
		t.Fatal(err)
	}
	db := func(op, database string) string {
		return fmt.Sprintf(`{"type":"database_operation","operation":%q,"database":%q,"table":"users","estimated_rows":10,"statement_sha256":"%s"}`, op, database, strings.Repeat("a", 64))
	}
	merge := func(branch, checks string) string {
		return fmt.Sprintf(`{"type":"code_merge","repository":"acme/app","base_branch":%q,"pull_request":7,"checks":%q}`, branch, checks)
	}
	mail := func(to string) string {
		return fmt.Sprintf(`{"type":"email_send","recipients":[%q],"subject":"Hello"}`, to)
	}
	samples := []struct {
		name, details, user string
		binding             string
		expiry              int
		acr                 []string
	}{
		{name: "small EUR", details: details(pay("20.00", "EUR"))},
		{name: "edge EUR 100", details: details(pay("100", "EUR"))},
		{name: "EUR 100.01", details: details(pay("100.01", "EUR"))},
		{name: "EUR 500", details: details(pay("500.00", "EUR"))},
		{name: "EUR 5000", details: details(pay("5000", "EUR"))},
		{name: "EUR 10000", details: details(pay("10000", "EUR"))},
		{name: "EUR 10000.01", details: details(pay("10000.01", "EUR"))},
		{name: "split 2x60", details: details(pay("60", "EUR"), pay("60", "EUR"))},
		{name: "split 2x6000", details: details(pay("6000", "EUR"), pay("6000", "EUR"))},
		{name: "split 16x7", details: details(pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"), pay("7", "EUR"))},
		{name: "mixed currencies", details: details(pay("50", "EUR"), pay("50", "USD"))},
		{name: "USD small", details: details(pay("20", "USD"))},
		{name: "KWD three decimals", details: details(pay("9999.999", "KWD"))},
		{name: "with binding message and expiry", details: details(pay("20", "EUR")), binding: "Invoice 42", expiry: 60},
		{name: "acr step-up", details: details(pay("20", "EUR")), acr: []string{ACRStepUp}},
		{name: "fresh user", details: details(pay("20", "EUR")), user: "fresh@example.com"},
		{name: "select", details: details(db("SELECT", "prod_main"))},
		{name: "drop on prod", details: details(db("DROP", "prod_main"))},
		{name: "update", details: details(db("UPDATE", "staging"))},
		{name: "merge main", details: details(merge("main", "passed"))},
		{name: "merge feature", details: details(merge("feature/x", "passed"))},
		{name: "merge failed checks", details: details(merge("main", "failed"))},
		{name: "internal mail", details: details(mail("bob@example.com"))},
		{name: "external mail", details: details(mail("ceo@evil.example"))},
		{name: "drop on Prod_main", details: details(db("DROP", "Prod_main"))},
		{name: "merge refs/heads/main", details: details(merge("refs/heads/main", "passed"))},
		{name: "merge Main", details: details(merge("Main", "passed"))},
		{name: "payment and merge", details: details(pay("20", "EUR"), merge("main", "passed"))},
	}
	// Enough history for the velocity rule to matter in later samples.
	for range 10 {
		if _, err := f.svc.Authorize(ctx, agent, AuthRequest{Scope: "openid", LoginHint: f.user.Email,
			AuthorizationDetails: []byte(details(pay("20.00", "EUR")))}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range samples {
		t.Run(s.name, func(t *testing.T) {
			user := s.user
			if user == "" {
				user = f.user.Email
			}
			params := AuthRequest{Scope: "openid", LoginHint: user, AuthorizationDetails: []byte(s.details),
				BindingMessage: s.binding, RequestedExpiry: s.expiry, ACRValues: s.acr}
			dry, err := f.svc.DryRun(ctx, "policy.yaml", source, DryRunRequest{AgentID: agent.ID, UserHint: user, Params: params})
			if err != nil {
				t.Fatalf("dry-run: %v", err)
			}
			var live Request
			c, err := f.svc.Authorize(ctx, agent, params)
			var ref *Refusal
			switch {
			case err == nil:
				live = c.Request
			case errors.As(err, &ref) && ref.Code == CodeAccessDenied:
				if err := f.db.GetContext(ctx, &live, `SELECT `+requestColumns+` FROM requests WHERE agent_id = $1 ORDER BY created_at DESC LIMIT 1`, agent.ID); err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatalf("live: %v", err)
			}
			got := dry.Requirement
			if got.Kind.String() != live.Outcome || got.RuleID != live.PolicyRule || got.Reason != live.PolicyReason ||
				got.StepUp != live.StepUp || got.User != live.UserRequired || len(got.Quorums) != len(live.Quorum) {
				t.Errorf("dry-run %s/%s %q step_up %v user %v quorums %v; live %s/%s %q step_up %v user %v quorums %v",
					got.Kind, got.RuleID, got.Reason, got.StepUp, got.User, got.Quorums,
					live.Outcome, live.PolicyRule, live.PolicyReason, live.StepUp, live.UserRequired, live.Quorum)
			}
		})
	}
}

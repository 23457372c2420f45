package approvals

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/countersign/countersign/approvals/policy"
	"github.com/countersign/countersign/rar"
)

// TestAuthorizeRefusesMalformedAmounts: at /bc-authorize an amount that is
// not plainly a non-negative decimal is refused with
// invalid_authorization_details naming the field, whatever the type's schema
// says about it: "pay" declares /price as its amount and constrains nothing
// else, so what is refused here, rar's parser refused.
func TestAuthorizeRefusesMalformedAmounts(t *testing.T) {
	f := newRaceFixture(t)
	agent := f.payAgent(t)
	for _, amount := range []string{`"NaN"`, `"Inf"`, `"-5000"`, `"12abc"`, `"1_000"`, `"1e3"`, `"1e400"`, `""`, `"+5"`,
		`"99999999999999999999"`, `"0.001"`, `5000`} {
		t.Run(amount, func(t *testing.T) {
			_, err := f.ask(t, agent, []byte(`[{"type":"pay","price":{"currency":"EUR","amount":`+amount+`}}]`))
			var ref *Refusal
			if !errors.As(err, &ref) || ref.Code != CodeInvalidAuthorizationDetails || !strings.Contains(ref.Description, "authorization_details[0]/price/amount: amount") {
				t.Fatalf("err = %v, want invalid_authorization_details naming /price/amount", err)
			}
		})
	}
}

// payAgent registers the type "pay" and an agent that may ask for it.
func (f raceFixture) payAgent(t *testing.T) Agent {
	t.Helper()
	ctx := context.Background()
	typ, err := rar.ParseTypeFile([]byte(`
name: pay
max_lifetime: 5m
summary: 'Pay {{money .price}}'
amount: /price
schema: {type: object}
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Types().Apply(ctx, []rar.Type{typ}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.store.CreateResourceServer(ctx, NewResourceServer{Name: "Pay API", Audience: "https://pay.example.com", Types: []string{"pay"}}); err != nil {
		t.Fatal(err)
	}
	ag, _, err := f.store.CreateAgent(ctx, NewAgent{Name: "Pay bot", Domain: "pay.example.com", Types: []string{"pay"}})
	if err != nil {
		t.Fatal(err)
	}
	return ag
}

// TestMixedCurrencies: a request paying in EUR and USD has no
// request.amount — reading it fails closed, deciding the strictest outcome,
// where adding 60 EUR and 70 USD as 130 would have approved — while
// request.amounts holds both sums, exactly as stored; dry-run sees the same.
func TestMixedCurrencies(t *testing.T) {
	f := newRaceFixture(t)
	agent := f.payAgent(t)
	const rules = `
types:
  pay:
    - {id: both, when: 'request.amounts == {"EUR": 60.0, "USD": 70.0}', outcome: allow}
    - {id: small, when: 'request.amount <= 200', outcome: approve}
    - {id: never, when: 'false', outcome: step_up}
    - {id: rest, outcome: {deny: no}}
`
	pay := func(els ...string) []byte {
		for i, e := range els {
			cur, amount, _ := strings.Cut(e, " ")
			els[i] = `{"type":"pay","price":{"currency":"` + cur + `","amount":"` + amount + `"}}`
		}
		return []byte("[" + strings.Join(els, ",") + "]")
	}
	tests := []struct {
		name    string
		policy  string
		details []byte
		outcome string
		rule    string
		amounts Amounts
	}{
		{"request.amounts holds each currency", rules, pay("EUR 20.00", "USD 70.00", "EUR 40"), "allow", "both", Amounts{"EUR": "60.00", "USD": "70.00"}},
		{"request.amount in one currency", rules, pay("EUR 100.10", "EUR 99.90"), "approve", "small", Amounts{"EUR": "200.00"}},
		{"request.amount in two currencies fails closed", strings.Replace(rules, "60.0", "61.0", 1), pay("EUR 60", "USD 70"), "deny", "small", Amounts{"EUR": "60.00", "USD": "70.00"}},
		{"no amounts", rules, []byte(`[{"type":"pay"}]`), "approve", "small", Amounts{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if _, err := f.svc.Policies().Apply(ctx, "p.yaml", []byte(tc.policy)); err != nil {
				t.Fatal(err)
			}
			c, err := f.ask(t, agent, tc.details)
			var ref *Refusal
			switch {
			case tc.outcome == "deny" && errors.As(err, &ref) && ref.Code == CodeAccessDenied:
				if err := f.db.Get(&c.Request, `SELECT `+requestColumns+` FROM requests WHERE agent_id = $1 ORDER BY created_at DESC LIMIT 1`, agent.ID); err != nil {
					t.Fatal(err)
				}
			case err != nil:
				t.Fatal(err)
			}
			r := c.Request
			if r.Outcome != tc.outcome || r.PolicyRule != tc.rule {
				t.Errorf("outcome %s by %q (%s), want %s by %q", r.Outcome, r.PolicyRule, r.PolicyReason, tc.outcome, tc.rule)
			}
			if len(r.Amounts) != len(tc.amounts) {
				t.Errorf("stored amounts %v, want %v", r.Amounts, tc.amounts)
			}
			for cur, a := range tc.amounts {
				if r.Amounts[cur] != a {
					t.Errorf("stored amounts %v, want %v", r.Amounts, tc.amounts)
				}
			}
			dry, err := f.svc.DryRun(ctx, "p.yaml", []byte(tc.policy), DryRunRequest{AgentID: agent.ID, UserHint: "alice@example.com",
				Params: AuthRequest{AuthorizationDetails: tc.details}})
			if err != nil {
				t.Fatal(err)
			}
			if dry.Requirement.Kind.String() != tc.outcome || dry.Elements[0].RuleID != tc.rule {
				t.Errorf("dry-run decided %s by %q, want %s by %q", dry.Requirement.Kind, dry.Elements[0].RuleID, tc.outcome, tc.rule)
			}
		})
	}
}

// TestVelocitySumsPerCurrency: the velocity sums are kept per currency and
// added exactly (ten payments of 0.10 EUR are 1.00 EUR, which adding doubles
// would make 0.9999999999999999); recent.*.sum is not defined across
// currencies, and a rule reading it fails closed.
func TestVelocitySumsPerCurrency(t *testing.T) {
	f := newRaceFixture(t)
	ctx := context.Background()
	if _, err := f.svc.Policies().Apply(ctx, "p.yaml", []byte(`
types:
  payment_initiation:
    - {id: small_total, when: 'recent.agent.hour.total.sum < 100', outcome: allow}
    - {id: never, when: 'false', outcome: step_up}
    - {id: rest, outcome: approve}
`)); err != nil {
		t.Fatal(err)
	}
	ask := func(amount, currency string) Request {
		t.Helper()
		c, err := f.ask(t, f.agent, payment(amount, currency))
		if err != nil {
			t.Fatal(err)
		}
		return c.Request
	}
	for i := range 10 {
		if r := ask("0.10", "EUR"); r.Outcome != "allow" {
			t.Fatalf("payment %d of 0.10 EUR: %s by %s, want allow: one currency so far", i+1, r.Outcome, r.PolicyRule)
		}
	}
	if r := ask("7.00", "USD"); r.Outcome != "allow" {
		t.Fatalf("a USD payment after EUR ones: %s by %s, want allow: the sum was in one currency", r.Outcome, r.PolicyRule)
	}
	if r := ask("0.10", "EUR"); r.Outcome != "step_up" || r.PolicyRule != "small_total" {
		t.Errorf("after a USD payment: %s by %q, want step_up by small_total (recent sum undefined)", r.Outcome, r.PolicyRule)
	}
	rec, err := f.store.recent(ctx, f.db, f.agent.ID, f.user.ID, []string{"payment_initiation"}, true)
	if err != nil {
		t.Fatal(err)
	}
	r := rec["payment_initiation"]
	want := map[string]float64{"EUR": 1.10, "USD": 7}
	for _, tally := range []policy.Tally{r.Agent.Hour.Total, r.Agent.Day.Total, r.User.Hour.Total, r.User.Day.Total} {
		if tally.Count != 12 || len(tally.Sums) != 2 || tally.Sums["EUR"] != want["EUR"] || tally.Sums["USD"] != want["USD"] {
			t.Errorf("total %+v, want 12 requests and sums %v", tally, want)
		}
	}
	if a := r.Agent.Hour.Allowed; a.Count != 11 || len(a.Sums) != 2 || a.Sums["EUR"] != 1.0 || a.Sums["USD"] != 7 {
		t.Errorf("allowed %+v, want 11 requests: exactly 1.00 EUR and 7.00 USD", a)
	}
}

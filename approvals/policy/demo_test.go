package policy

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/rar"
)

// demoSet compiles examples/demo/policy.yaml.
func demoSet(t *testing.T) *Set {
	t.Helper()
	const name = "../../examples/demo/policy.yaml"
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseFile(name, data)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// demoRegistry compiles the demo types.
func demoRegistry(t *testing.T) *rar.Registry {
	t.Helper()
	types, err := demo.TypeDefinitions()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := rar.Compile(types)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// demoElement validates one authorization_details element against the demo
// types, exactly as a request would be, and returns it decoded.
func demoElement(t *testing.T, raw string) rar.Element {
	t.Helper()
	d, err := demoRegistry(t).Parse([]byte("[" + raw + "]"))
	if err != nil {
		t.Fatalf("sample element is invalid: %v", err)
	}
	return d.Elements[0]
}

func TestDemoPolicy(t *testing.T) {
	s := demoSet(t)
	if got, want := s.Types(), []string{"code_merge", "database_operation", "email_send", "payment_initiation"}; !slices.Equal(got, want) {
		t.Fatalf("types %v, want %v", got, want)
	}
	payment := func(amount, currency string) string {
		return `{"type":"payment_initiation","instructedAmount":{"currency":"` + currency + `","amount":"` + amount + `"},
			"creditorName":"ACME Supplies GmbH","creditorAccount":{"iban":"DE89370400440532013000"},"remittanceInformation":"Invoice 2024-117"}`
	}
	database := func(op, db string) string {
		return `{"type":"database_operation","operation":"` + op + `","database":"` + db + `","table":"orders",
			"estimated_rows":1200,"statement_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}`
	}
	merge := func(base, checks string) string {
		return `{"type":"code_merge","repository":"countersign/countersign","base_branch":"` + base + `","pull_request":42,"checks":"` + checks + `"}`
	}
	email := func(recipients string) string {
		return `{"type":"email_send","recipients":[` + recipients + `],"subject":"Q3 figures"}`
	}
	tests := []struct {
		name    string
		element string
		recent  int64 // payments by this agent in the last hour
		want    Outcome
		rule    string
		reason  string
	}{
		{"payment over 10,000", payment("10000.01", "EUR"), 0, stepUp, "large_payment", "Payments over 10,000 need a passkey"},
		{"payment over 10,000 in another currency", payment("25000", "USD"), 0, stepUp, "large_payment", "Payments over 10,000 need a passkey"},
		{"payment of exactly 10,000", payment("10000.00", "EUR"), 0, approve, "payment", "Payments need approval"},
		{"large payment after many", payment("20000", "EUR"), 50, stepUp, "large_payment", "Payments over 10,000 need a passkey"},
		{"small EUR payment", payment("42.50", "EUR"), 0, allow, "small_eur_payment", "Payments of up to 100 EUR are allowed"},
		{"EUR payment of exactly 100", payment("100.00", "EUR"), 0, allow, "small_eur_payment", "Payments of up to 100 EUR are allowed"},
		{"EUR payment just over 100", payment("100.01", "EUR"), 0, approve, "payment", "Payments need approval"},
		{"small USD payment", payment("42.50", "USD"), 0, approve, "payment", "Payments need approval"},
		{"10th payment in the hour", payment("42.50", "EUR"), 9, allow, "small_eur_payment", "Payments of up to 100 EUR are allowed"},
		{"11th payment in the hour", payment("42.50", "EUR"), 10, approve, "payment_velocity", "More than 10 payments by this agent in an hour need approval"},

		{"DROP on production", database("DROP", "prod_orders"), 0, Outcome{Kind: Deny, Reason: "Destructive operations on production are not allowed"}, "destructive_on_production", "Destructive operations on production are not allowed"},
		{"TRUNCATE on production", database("TRUNCATE", "production"), 0, Outcome{Kind: Deny, Reason: "Destructive operations on production are not allowed"}, "destructive_on_production", "Destructive operations on production are not allowed"},
		{"DROP on staging", database("DROP", "staging"), 0, approve, "database_change", "Changes to a database need approval"},
		{"DROP on a name containing prod", database("DROP", "myprod"), 0, approve, "database_change", "Changes to a database need approval"},
		{"SELECT on production", database("SELECT", "prod_orders"), 0, allow, "read_only", "Reading data is allowed"},
		{"DELETE on production", database("DELETE", "prod_orders"), 0, approve, "database_change", "Changes to a database need approval"},

		{"merge with failed checks", merge("main", "failed"), 0, Outcome{Kind: Deny, Reason: "Only pull requests whose checks passed can be merged"}, "checks_not_passed", "Only pull requests whose checks passed can be merged"},
		{"merge with pending checks", merge("release", "pending"), 0, Outcome{Kind: Deny, Reason: "Only pull requests whose checks passed can be merged"}, "checks_not_passed", "Only pull requests whose checks passed can be merged"},
		{"merge into main", merge("main", "passed"), 0, quorum(2, "maintainers", false), "merge_into_main", "Merges into main need two maintainers"},
		{"merge into a feature branch", merge("feature/x", "passed"), 0, approve, "merge", "Merges need approval"},

		{"email to an external domain", email(`"ops@example.com","ana@partner.test"`), 0, approve, "external_recipients", "Mail to addresses outside example.com needs approval"},
		{"internal email", email(`"ops@example.com"`), 0, allow, "internal_mail", "Internal mail is allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			el := demoElement(t, tt.element)
			in := Input{Details: el.Value, Request: wholeRequest(el), Recent: Recent{Agent: Windows{Hour: Counts{Total: Tally{Count: tt.recent}}}}}
			d := s.Evaluate(el.Type, in)
			if d.Outcome != tt.want || d.RuleID != tt.rule || d.Reason != tt.reason || d.Err != nil {
				t.Errorf("got %+v, want %v by %s (%q)", d, tt.want, tt.rule, tt.reason)
			}
		})
	}
}

// TestDemoVelocity is issue 6's acceptance scenario: ten auto-allowed small
// payments by one agent, then the eleventh needs approval; another agent is
// unaffected. The caller counts earlier requests, as the store would.
func TestDemoVelocity(t *testing.T) {
	s := demoSet(t)
	el := demoElement(t, `{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"19.99"},
		"creditorName":"Coffee Ltd","creditorAccount":{"iban":"DE89370400440532013000"}}`)
	history := map[string]*Counts{"agt_a": {}, "agt_b": {}}
	decide := func(agent string) Kind {
		d := s.Evaluate(el.Type, Input{Details: el.Value, Request: wholeRequest(el), Agent: Agent{ID: agent}, Recent: Recent{Agent: Windows{Hour: *history[agent]}}})
		if d.Err != nil {
			t.Fatal(d.Err)
		}
		h := history[agent]
		count := func(t *Tally) {
			t.Count++
			if t.Sums == nil {
				t.Sums = map[string]float64{}
			}
			t.Sums["EUR"] += 19.99
		}
		count(&h.Total)
		if d.Outcome.Kind == Allow {
			count(&h.Allowed)
		} else {
			count(&h.Pending)
		}
		return d.Outcome.Kind
	}
	for i := 1; i <= 10; i++ {
		if k := decide("agt_a"); k != Allow {
			t.Fatalf("payment %d of agent a: %v, want allow", i, k)
		}
	}
	if k := decide("agt_a"); k != Approve {
		t.Errorf("payment 11 of agent a: %v, want approve", k)
	}
	if k := decide("agt_a"); k != Approve {
		t.Errorf("payment 12 of agent a: %v, want approve", k)
	}
	if k := decide("agt_b"); k != Allow {
		t.Errorf("payment 1 of agent b: %v, want allow", k)
	}
}

// TestDemoRequest combines the demo decisions for a request with several
// elements.
func TestDemoRequest(t *testing.T) {
	s := demoSet(t)
	elements := []string{
		`{"type":"code_merge","repository":"countersign/countersign","base_branch":"main","pull_request":7,"checks":"passed"}`,
		`{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"12000"},"creditorName":"ACME","creditorAccount":{"iban":"DE89370400440532013000"}}`,
		`{"type":"email_send","recipients":["a@example.com"],"subject":"hi"}`,
	}
	var ds []Decision
	for _, raw := range elements {
		el := demoElement(t, raw)
		ds = append(ds, s.Evaluate(el.Type, Input{Details: el.Value, Request: wholeRequest(el)}))
	}
	r := Combine(ds, nil)
	if r.Kind != Quorum || !r.StepUp || !r.User || len(r.Quorums) != 1 || r.Quorums[0] != (QuorumRequirement{Group: "maintainers", N: 2}) {
		t.Errorf("got %+v, want 2 maintainers and the user, all with step-up", r)
	}
	if r.ACR() != ACRStepUp {
		t.Errorf("ACR() = %q", r.ACR())
	}
}

// wholeRequest is the request-level view of a request of one element, as
// the caller computes it: request.amounts holds the element's amount.
func wholeRequest(el rar.Element) Request {
	r := Request{Elements: 1}
	if a, ok := el.Amount(); ok {
		r.Amounts = map[string]float64{a.Currency: a.Float64()}
	}
	return r
}

// TestDemoWalkArounds: admins copy the demo policy, so it must hold against
// the ways an agent can describe the same action so that a rule misses it:
// case, alternative spellings of a name, a count the agent claims instead
// of one the rule derives, and an amount in a currency the thresholds do not
// speak of. Each case is refused when the request is parsed, or decided as
// strictly as its plain form.
func TestDemoWalkArounds(t *testing.T) {
	s, reg := demoSet(t), demoRegistry(t)
	database := func(op, db string) string {
		return `{"type":"database_operation","operation":"` + op + `","database":"` + db + `","table":"orders",
			"estimated_rows":1200,"statement_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}`
	}
	merge := func(base string) string {
		return `{"type":"code_merge","repository":"countersign/countersign","base_branch":"` + base + `","pull_request":42,"checks":"passed"}`
	}
	email := func(recipients string) string {
		return `{"type":"email_send","recipients":[` + recipients + `],"subject":"Q3 figures"}`
	}
	payment := func(amount, currency string) string {
		return `{"type":"payment_initiation","instructedAmount":{"currency":"` + currency + `","amount":"` + amount + `"},
			"creditorName":"ACME","creditorAccount":{"iban":"DE89370400440532013000"}}`
	}
	deny := Outcome{Kind: Deny, Reason: "Destructive operations on production are not allowed"}
	maintainers := quorum(2, "maintainers", false)
	tests := []struct {
		name     string
		elements []string
		refused  string // the JSON pointer a parse refusal names; "" when the request parses
		want     Outcome
		rule     string
	}{
		{"DROP on Prod_main", []string{database("DROP", "Prod_main")}, "", deny, "destructive_on_production"},
		{"TRUNCATE on PRODUCTION", []string{database("TRUNCATE", "PRODUCTION")}, "", deny, "destructive_on_production"},
		{"drop in lower case", []string{database("drop", "prod_main")}, "/operation", Outcome{}, ""},

		{"merge into Main", []string{merge("Main")}, "", maintainers, "merge_into_main"},
		{"merge into MAIN", []string{merge("MAIN")}, "", maintainers, "merge_into_main"},
		{"merge into refs/heads/main", []string{merge("refs/heads/main")}, "", maintainers, "merge_into_main"},
		{"merge into refs/heads/Main", []string{merge("refs/heads/Main")}, "", maintainers, "merge_into_main"},
		{"merge into heads/main", []string{merge("heads/main")}, "", maintainers, "merge_into_main"},
		{"merge into refs/heads//main", []string{merge("refs/heads//main")}, "/base_branch", Outcome{}, ""},
		{"merge into /main", []string{merge("/main")}, "/base_branch", Outcome{}, ""},
		{"merge into main/", []string{merge("main/")}, "/base_branch", Outcome{}, ""},
		{"merge into a branch named like main", []string{merge("main-backup")}, "", approve, "merge"},

		{"mail to an outside address", []string{email(`"ops@example.com","ceo@evil.example"`)}, "", approve, "external_recipients"},
		{"mail claiming no external domains", []string{`{"type":"email_send","recipients":["ceo@evil.example"],"external_domains":0,"subject":"hi"}`},
			"/external_domains", Outcome{}, ""},
		{"mail to a subdomain", []string{email(`"ops@mail.example.com"`)}, "", approve, "external_recipients"},
		{"mail to a look-alike domain", []string{email(`"ops@example.com.evil.example"`)}, "", approve, "external_recipients"},
		{"mail to an internal address in capitals errs strict", []string{email(`"OPS@EXAMPLE.COM"`)}, "", approve, "external_recipients"},

		{"KWD 9,999.999", []string{payment("9999.999", "KWD")}, "", stepUp, "unlisted_currency"},
		{"JPY 1,000,000", []string{payment("1000000", "JPY")}, "", stepUp, "unlisted_currency"},
		{"a small KWD payment", []string{payment("10.000", "KWD")}, "", stepUp, "unlisted_currency"},
		{"EUR and USD together", []string{payment("60.00", "EUR"), payment("60.00", "USD")}, "", stepUp, "several_currencies"},
		{"EUR split across elements", []string{payment("6000", "EUR"), payment("6000", "EUR")}, "", stepUp, "large_payment"},
		{"USD over 10,000", []string{payment("10000.01", "USD")}, "", stepUp, "large_payment"},
		{"small GBP payment", []string{payment("50.00", "GBP")}, "", approve, "payment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := reg.Parse([]byte("[" + strings.Join(tt.elements, ",") + "]"))
			if tt.refused != "" {
				var fe *rar.FieldError
				if !errors.As(err, &fe) || fe.Path != tt.refused {
					t.Fatalf("Parse: %v, want a refusal naming %s", err, tt.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			req := Request{Elements: int64(len(d.Elements)), Amounts: map[string]float64{}}
			for _, a := range d.Totals() {
				req.Amounts[a.Currency] = a.Float64()
			}
			var ds []Decision
			for _, el := range d.Elements {
				ds = append(ds, s.Evaluate(el.Type, Input{Details: el.Value, Request: req}))
			}
			got := ds[0]
			if got.Outcome != tt.want || got.RuleID != tt.rule || got.Err != nil {
				t.Errorf("got %+v, want %v by %s", got, tt.want, tt.rule)
			}
			if r := Combine(ds, nil); r.Kind == Allow && tt.want.Kind != Allow {
				t.Errorf("the request is allowed: %+v", r)
			}
		})
	}
}

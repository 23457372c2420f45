package policy

import (
	"os"
	"slices"
	"strconv"
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

// demoElement validates one authorization_details element against the demo
// types, exactly as a request would be, and returns it decoded.
func demoElement(t *testing.T, raw string) rar.Element {
	t.Helper()
	types, err := demo.TypeDefinitions()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := rar.Compile(types)
	if err != nil {
		t.Fatal(err)
	}
	d, err := reg.Parse([]byte("[" + raw + "]"))
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
	email := func(external int) string {
		return `{"type":"email_send","recipients":["ops@example.com","ana@partner.test"],"external_domains":` + strconv.Itoa(external) + `,"subject":"Q3 figures"}`
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

		{"email to an external domain", email(1), 0, approve, "external_recipients", "Mail to external domains needs approval"},
		{"internal email", email(0), 0, allow, "internal_mail", "Internal mail is allowed"},
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
		`{"type":"email_send","recipients":["a@example.com"],"external_domains":0,"subject":"hi"}`,
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

package policy

import (
	"fmt"
	"strings"
	"testing"
)

// benchPolicy is 20 rules for one type, only the last of which matches the
// benchmark's element: a mix of amount, string, list, map and velocity
// conditions of the kind admins write.
func benchPolicy() string {
	var b strings.Builder
	b.WriteString("types:\n  payment_initiation:\n")
	conds := []string{
		`amount(details.instructedAmount) > 1000000`,
		`currency(details.instructedAmount) == "JPY" && amount(details.instructedAmount) > 5000`,
		`details.creditorName.startsWith("Evil")`,
		`has(details.remittanceInformation) && details.remittanceInformation.contains("crypto")`,
		`recent.agent.hour.total.count > 100`,
		`recent.agent.day.total.sum + amount(details.instructedAmount) > 500000`,
		`recent.user.hour.denied.count > 3`,
		`agent.labels["tier"] == "untrusted"`,
		`"frozen" in user.groups`,
		`request.hour < 6 || request.hour > 22`,
		`request.weekday == 0 && amount(details.instructedAmount) > 2000`,
		`details.creditorAccount.iban.startsWith("KP")`,
		`recent.agent.hour.pending.count > 20`,
		`recent.user.day.approved.sum > 1000000`,
		`agent.domain.endsWith(".test") && !("finance" in user.roles)`,
		`"urn:countersign:acr:step-up" in request.acr_values && recent.agent.hour.denied.count > 0`,
		`details.instructedAmount.currency in ["RUB", "BYN", "IRR"]`,
		`request.requested_expiry > 3600`,
		`user.roles.exists(r, r == "intern") && amount(details.instructedAmount) > 100`,
		`currency(details.instructedAmount) == "EUR" && amount(details.instructedAmount) <= 100 && recent.agent.hour.total.count < 10`,
	}
	for i, c := range conds {
		fmt.Fprintf(&b, "    - id: r%02d\n      when: '%s'\n      outcome: approve\n", i+1, strings.ReplaceAll(c, "'", "''"))
	}
	return b.String()
}

func BenchmarkEvaluate(b *testing.B) {
	f, err := ParseFile("bench.yaml", []byte(benchPolicy()))
	if err != nil {
		b.Fatal(err)
	}
	s, err := Compile(f)
	if err != nil {
		b.Fatal(err)
	}
	in := Input{
		Details: samplePayment("42.00", "EUR"),
		Agent:   Agent{ID: "agt_1", Name: "Invoice bot", Domain: "bots.example.com", Labels: map[string]string{"tier": "trusted"}},
		User:    User{ID: "usr_1", Roles: []string{"finance", "admin"}, Groups: []string{"maintainers"}},
		Request: Request{BindingMessage: "PAY-1234", RequestedExpiry: 300, Hour: 14, Weekday: 3},
		Recent:  Recent{Agent: Windows{Hour: Counts{Total: Tally{Count: 4, Sums: map[string]float64{"EUR": 120}}}}},
	}
	if d := s.Evaluate("payment_initiation", in); d.RuleID != "r20" || d.Err != nil {
		b.Fatalf("decision %+v, want rule r20", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.Evaluate("payment_initiation", in)
	}
}

func samplePayment(amount, currency string) map[string]any {
	return map[string]any{
		"type":                  "payment_initiation",
		"instructedAmount":      map[string]any{"currency": currency, "amount": amount},
		"creditorName":          "ACME Supplies GmbH",
		"creditorAccount":       map[string]any{"iban": "DE89370400440532013000"},
		"remittanceInformation": "Invoice 2024-117",
	}
}

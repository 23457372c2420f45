package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

func mustSet(t testing.TB, src string) *Set {
	t.Helper()
	f, err := ParseFile("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("ParseFile: %v", err)
	}
	s, err := Compile(f)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

// kindPolicy has one rule per outcome, chosen by details.want.
const kindPolicy = `
types:
  t:
    - id: r_allow
      when: details.want == "allow"
      outcome: allow
      reason: allowed
    - id: r_approve
      when: details.want == "approve"
      outcome: approve
      reason: needs approval
    - id: r_step_up
      when: details.want == "step_up"
      outcome: step_up
      reason: needs a passkey
    - id: r_quorum
      when: details.want == "quorum"
      outcome: {quorum: {n: 2, group: sre, requester_counts: true}}
      reason: needs two SREs
    - id: r_deny
      when: details.want == "deny"
      outcome: {deny: not like this}
`

func TestEvaluateOutcomes(t *testing.T) {
	s := mustSet(t, kindPolicy)
	tests := []struct {
		name string
		want string
		out  Outcome
		rule string
		why  string
	}{
		{"allow", "allow", Outcome{Kind: Allow}, "r_allow", "allowed"},
		{"approve", "approve", Outcome{Kind: Approve}, "r_approve", "needs approval"},
		{"step_up", "step_up", Outcome{Kind: StepUp}, "r_step_up", "needs a passkey"},
		{"quorum", "quorum", Outcome{Kind: Quorum, N: 2, Group: "sre", RequesterCounts: true}, "r_quorum", "needs two SREs"},
		{"deny with its reason", "deny", Outcome{Kind: Deny, Reason: "not like this"}, "r_deny", "not like this"},
		{"no match denies", "other", Outcome{Kind: Deny}, "", ReasonNoMatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := s.Evaluate("t", Input{Details: map[string]any{"want": tt.want}})
			if d.Outcome != tt.out || d.RuleID != tt.rule || d.Reason != tt.why || d.Err != nil || d.Type != "t" {
				t.Errorf("got %+v, want outcome %v rule %q reason %q", d, tt.out, tt.rule, tt.why)
			}
		})
	}
}

func TestEvaluateOrder(t *testing.T) {
	s := mustSet(t, `
types:
  t:
    - id: first
      when: details.n > 10
      outcome: step_up
    - id: second
      when: details.n > 5
      outcome: approve
    - id: third
      when: details.n > 0
      outcome: allow
    - id: catch_all
      outcome: {deny: too small}
    - id: unreachable
      when: "true"
      outcome: allow
`)
	tests := []struct {
		name string
		n    any
		rule string
	}{
		{"first of three matching wins", json.Number("11"), "first"},
		{"second when the first does not hold", json.Number("6"), "second"},
		{"double compared with int", 5.5, "second"},
		{"third", json.Number("1"), "third"},
		{"rule without when matches", json.Number("0"), "catch_all"},
		{"negative", json.Number("-3.5"), "catch_all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := s.Evaluate("t", Input{Details: map[string]any{"n": tt.n}})
			if d.RuleID != tt.rule || d.Err != nil {
				t.Errorf("got %+v, want rule %s", d, tt.rule)
			}
		})
	}
}

func TestEvaluateUnknownType(t *testing.T) {
	s := mustSet(t, kindPolicy)
	d := s.Evaluate("payment_initiation", Input{Details: map[string]any{"want": "allow"}})
	if d.Outcome.Kind != Deny || d.RuleID != "" || d.Reason != ReasonNoMatch {
		t.Errorf("got %+v, want a no-match deny", d)
	}
}

func TestEvaluateFailsClosed(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		want   Outcome
		rule   string
	}{
		{
			name: "strictest of the set is quorum with the largest n",
			policy: `
types:
  t:
    - {id: ok, when: details.x == 7, outcome: allow}
    - {id: q2, when: details.x == 2, outcome: {quorum: {n: 2, group: a}}}
    - {id: q3, when: details.x == 3, outcome: {quorum: {n: 3, group: b}}}
    - {id: broken, when: details.missing.field > 1, outcome: allow}
    - {id: s, when: details.x == 4, outcome: step_up}
    - {id: rest, outcome: approve}
`,
			want: Outcome{Kind: Quorum, N: 3, Group: "b"},
			rule: "broken",
		},
		{
			name: "a deny in the set wins",
			policy: `
types:
  t:
    - {id: broken, when: details.missing.field > 1, outcome: allow}
    - {id: d, when: details.x == 9, outcome: {deny: no}}
    - {id: rest, outcome: allow}
`,
			want: Outcome{Kind: Deny},
			rule: "broken",
		},
		{
			name: "all allow is raised to approve, never allow",
			policy: `
types:
  t:
    - {id: broken, when: details.missing.field > 1, outcome: allow}
    - {id: rest, when: "true", outcome: allow}
`,
			want: Outcome{Kind: Approve},
			rule: "broken",
		},
		{
			name: "without a catch-all the no-match deny is reachable",
			policy: `
types:
  t:
    - {id: broken, when: details.missing.field > 1, outcome: allow}
    - {id: small, when: details.x < 5, outcome: approve}
`,
			want: Outcome{Kind: Deny},
			rule: "broken",
		},
		{
			name: "type error",
			policy: `
types:
  t:
    - {id: broken, when: details.x + "a" == "1a", outcome: allow}
    - {id: rest, outcome: step_up}
`,
			want: Outcome{Kind: StepUp},
			rule: "broken",
		},
		{
			name: "amount that is not a decimal string",
			policy: `
types:
  t:
    - {id: broken, when: amount(details.bad) < 100, outcome: allow}
    - {id: rest, outcome: approve}
`,
			want: Outcome{Kind: Approve},
			rule: "broken",
		},
		{
			name: "an earlier matching rule is not affected",
			policy: `
types:
  t:
    - {id: first, when: details.x == 1, outcome: allow}
    - {id: broken, when: details.missing.field > 1, outcome: allow}
    - {id: rest, outcome: {deny: no}}
`,
			want: Outcome{Kind: Allow},
			rule: "first",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustSet(t, tt.policy)
			d := s.Evaluate("t", Input{Details: map[string]any{"x": json.Number("1"), "bad": map[string]any{"amount": "1e3", "currency": "EUR"}}})
			if d.Outcome != tt.want || d.RuleID != tt.rule {
				t.Fatalf("got %+v, want %v from rule %s", d, tt.want, tt.rule)
			}
			if tt.rule == "broken" {
				if d.Err == nil || !strings.Contains(d.Err.Error(), `rule "broken"`) {
					t.Errorf("Err = %v, want an error naming the rule", d.Err)
				}
				if !strings.Contains(d.Reason, "broken") {
					t.Errorf("Reason = %q, want it to name the rule", d.Reason)
				}
			} else if d.Err != nil {
				t.Errorf("Err = %v, want nil", d.Err)
			}
		})
	}
}

// TestEvaluateManyRules crosses the 32-rule chunks the rules are folded
// into, with the failing and the matching rule in a later chunk.
func TestEvaluateManyRules(t *testing.T) {
	var b strings.Builder
	b.WriteString("types:\n  t:\n")
	for i := range 70 {
		when := "details.n == " + strconv.Itoa(i)
		if i == 50 {
			when = "details.n == 50 && details.missing > 0"
		}
		b.WriteString("    - {id: r" + strconv.Itoa(i) + ", when: '" + when + "', outcome: approve}\n")
	}
	s := mustSet(t, b.String())
	tests := []struct {
		n    int
		rule string
		err  bool
	}{{0, "r0", false}, {31, "r31", false}, {32, "r32", false}, {49, "r49", false}, {50, "r50", true}, {69, "r69", false}, {70, "", false}}
	for _, tt := range tests {
		t.Run("n="+strconv.Itoa(tt.n), func(t *testing.T) {
			d := s.Evaluate("t", Input{Details: map[string]any{"n": json.Number(strconv.Itoa(tt.n))}})
			if d.RuleID != tt.rule || (d.Err != nil) != tt.err {
				t.Errorf("got %+v, want rule %q (error %v)", d, tt.rule, tt.err)
			}
			if tt.err && d.Outcome.Kind != Deny {
				t.Errorf("outcome %v, want deny (no catch-all)", d.Outcome)
			}
		})
	}
}

func TestEvaluateVariables(t *testing.T) {
	in := Input{
		Details: map[string]any{
			"type":  "t",
			"items": []any{map[string]any{"n": json.Number("3")}, "x"},
			"price": map[string]any{"amount": "10000.50", "currency": "EUR"},
			"lines": []any{
				map[string]any{"amount": "2.50", "currency": "EUR"},
				map[string]any{"amount": "7", "currency": "EUR", "note": map[string]any{"text": "x"}},
			},
		},
		Agent:   Agent{ID: "agt_1", Name: "Bot", Domain: "bots.example.com", Labels: map[string]string{"team": "payments"}},
		User:    User{ID: "usr_1", Roles: []string{"finance"}, Groups: []string{"maintainers", "sre"}},
		Request: Request{BindingMessage: "PAY-1", ACRValues: []string{ACRStepUp}, RequestedExpiry: 120, Hour: 23, Weekday: 6},
		Recent: Recent{
			Agent: Windows{Hour: Counts{Total: Tally{Count: 10, Sums: map[string]float64{"EUR": 1000}}, Allowed: Tally{Count: 7}, Pending: Tally{Count: 1}}},
			User:  Windows{Day: Counts{Approved: Tally{Count: 2, Sums: map[string]float64{"USD": 50.25}}, Denied: Tally{Count: 3}}},
		},
	}
	conds := []string{
		`details.type == "t"`,
		`details.items[0].n == 3 && details.items[1] == "x" && size(details.items) == 2`,
		`amount(details.price) == 10000.5 && currency(details.price) == "EUR"`,
		`amount("0.5") == 0.5 && amount("12") == 12.0 && amount("12") > 11 && details.type != ""`,
		`has(details.price) && !has(details.nothing)`,
		`agent.id == "agt_1" && agent.name == "Bot" && agent.domain.endsWith(".example.com") && agent.labels["team"] == "payments"`,
		`user.id == "usr_1" && "finance" in user.roles && user.groups.exists(g, g == "sre")`,
		`request.binding_message == "PAY-1" && "urn:countersign:acr:step-up" in request.acr_values`,
		`request.requested_expiry == 120 && request.hour == 23 && request.weekday == 6`,
		`recent.agent.hour.total.count == 10 && recent.agent.hour.total.sum == 1000.0`,
		`recent.agent.hour.allowed.count == 7 && recent.agent.hour.pending.count == 1 && recent.agent.day.total.count == 0`,
		`recent.user.day.approved.count == 2 && recent.user.day.approved.sum == 50.25 && recent.user.day.denied.count == 3`,
		`recent.agent.hour.total.sums == {"EUR": 1000.0} && recent.user.day.approved.sums["USD"] == 50.25 && !("EUR" in recent.user.day.approved.sums)`,
		`request.binding_message.lowerAscii() == "pay-1"`,
		// The element's objects: remembered members and amounts, nested
		// objects in lists, and the map operations rules rarely use.
		`amount(details.price) + amount(details.price) == 20001.0 && details.price.currency == "EUR"`,
		`details.type == "t" && details.price.amount == "10000.50" && details.price.currency == "EUR" && details.type == "t"`,
		`details.lines.exists(l, amount(l) > 5) && !details.lines.all(l, amount(l) > 5)`,
		`details.lines[1].note.text == "x" && has(details.lines[1].note) && !has(details.lines[0].note)`,
		`details.price == {"amount": "10000.50", "currency": "EUR"} && details.price != {"amount": "1"}`,
		`size(details.price) == 2 && "currency" in details.price && !("iban" in details.price)`,
		`details.price.exists(k, k == "currency") && details.exists(k, k == "lines") && details.price["amount"] == "10000.50"`,
		// Whole structs still read through the struct variables.
		`has(recent.agent.hour) && recent.agent.hour.total.count == 10 && recent.agent.hour.total == recent.agent.hour.total`,
	}
	for _, c := range conds {
		t.Run(c, func(t *testing.T) {
			s := mustSet(t, "types:\n  t:\n    - id: c\n      when: '"+strings.ReplaceAll(c, "'", "''")+"'\n      outcome: allow\n")
			if d := s.Evaluate("t", in); d.RuleID != "c" || d.Err != nil {
				t.Errorf("condition does not hold: %+v", d)
			}
			// The same condition must not hold for an empty input (so the
			// test can fail): it errs or is false.
			if d := s.Evaluate("t", Input{}); d.RuleID == "c" && d.Err == nil {
				t.Errorf("condition holds for an empty input")
			}
		})
	}
}

// TestAmount: amount() reads amounts with rar's parser, the one that
// validated the request; anything else is an evaluation error, which fails
// closed, never a number read some other way.
func TestAmount(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"10000.50", 10000.5, true},
		{"0", 0, true},
		{"0.0001", 0.0001, true},
		{"123", 123, true},
		{"", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1e3", 0, false},
		{"1.", 0, false},
		{".5", 0, false},
		{"1.2.3", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"1 000", 0, false},
		{"1_000", 0, false},
		{"12abc", 0, false},
	}
	s := mustSet(t, `
types:
  bare:
    - {id: r, when: 'amount(details.s) == details.want', outcome: allow}
    - {id: rest, outcome: approve}
  object:
    - {id: r, when: 'amount(details.o) == details.want', outcome: allow}
    - {id: rest, outcome: approve}
`)
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			in := Input{Details: map[string]any{"s": tt.in, "o": map[string]any{"amount": tt.in, "currency": "CLF"}, "want": tt.want}}
			for _, typ := range []string{"bare", "object"} {
				d := s.Evaluate(typ, in)
				if tt.ok && (d.RuleID != "r" || d.Err != nil) {
					t.Errorf("%s: amount(%q) != %v: %+v", typ, tt.in, tt.want, d)
				}
				if !tt.ok && (d.Err == nil || d.Outcome.Kind != Approve) {
					t.Errorf("%s: amount(%q) is not an evaluation error: %+v", typ, tt.in, d)
				}
			}
		})
	}
}

// TestEvaluateConcurrent shares one Set between goroutines, as the server
// does; run with -race.
func TestEvaluateConcurrent(t *testing.T) {
	s := mustSet(t, kindPolicy)
	wants := []string{"allow", "approve", "step_up", "quorum", "deny", "none"}
	done := make(chan error)
	for g := range 4 {
		go func() {
			var err error
			for i := range 200 {
				want := wants[(g+i)%len(wants)]
				d := s.Evaluate("t", Input{Details: map[string]any{"want": want}})
				if got := d.Outcome.Kind.String(); got != want && !(want == "none" && got == "deny") {
					err = fmt.Errorf("goroutine %d: %s decided %s", g, want, got)
				}
			}
			done <- err
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

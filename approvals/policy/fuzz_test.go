package policy

import (
	"bytes"
	"encoding/json"
	"testing"
)

// fuzzPolicy reads the element in every way the package supports: nested
// members, amount() and currency(), lists of objects, and the map
// operations that go through cel-go's own map (iteration, equality, size).
const fuzzPolicy = `
types:
  t:
    - id: amounts
      when: amount(details.a) > 10 && currency(details.a) == "EUR"
      outcome: step_up
    - id: lists
      when: details.l.exists(x, amount(x) > 5) || size(details.l) > 3
      outcome: approve
    - id: maps
      when: 'details.m == {"k": "v"} || details.m.exists(k, k == "x") || "y" in details.m'
      outcome: {quorum: {n: 2, group: g}}
    - id: nested
      when: has(details.n.o) && details.n.o.p == 1
      outcome: {deny: nested}
    - id: rest
      outcome: allow
`

// FuzzEvaluate: any JSON object evaluates without panicking; a failure never
// allows; and evaluation keeps no state, so an element decides the same
// before and after others were evaluated (the activation and its objects are
// reused between evaluations).
func FuzzEvaluate(f *testing.F) {
	for _, seed := range []string{
		`{"a":{"amount":"12.5","currency":"EUR"}}`,
		`{"a":{"amount":"1","currency":"EUR"},"l":[{"amount":"7"},{"amount":"x"}]}`,
		`{"a":{"amount":"1"},"l":[],"m":{"k":"v"}}`,
		`{"a":{"amount":"1","currency":"USD"},"l":[1,2,3,4],"m":{"x":1}}`,
		`{"a":{"amount":"1","currency":"USD"},"l":[],"m":{},"n":{"o":{"p":1}}}`,
		`{"a":"12"}`,
		`{}`,
	} {
		f.Add(seed, `{"a":{"amount":"99","currency":"EUR"}}`)
	}
	s := mustSet(f, fuzzPolicy)
	f.Fuzz(func(t *testing.T, first, second string) {
		a, ok := decodeObject(first)
		b, ok2 := decodeObject(second)
		if !ok || !ok2 {
			return
		}
		da := s.Evaluate("t", Input{Details: a})
		if da.Err != nil && da.Outcome.Kind == Allow {
			t.Fatalf("a failed evaluation allowed: %+v", da)
		}
		s.Evaluate("t", Input{Details: b})
		if again := s.Evaluate("t", Input{Details: a}); again.RuleID != da.RuleID || again.Outcome != da.Outcome || (again.Err == nil) != (da.Err == nil) {
			t.Fatalf("the same element decided %+v, then %+v", da, again)
		}
	})
}

func decodeObject(s string) (map[string]any, bool) {
	d := json.NewDecoder(bytes.NewReader([]byte(s)))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil || m == nil {
		return nil, false
	}
	return m, true
}

package policy

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestLeafVariables gives every leaf field of the context a value of its own
// and checks that a rule reading it by its path sees exactly that value: a
// leaf the activation does not resolve, or resolves from the wrong field,
// fails here.
func TestLeafVariables(t *testing.T) {
	var in Input
	conds := map[string]string{}
	n := 0
	var fill func(prefix string, v reflect.Value)
	fill = func(prefix string, v reflect.Value) {
		for i := range v.NumField() {
			tag := v.Type().Field(i).Tag.Get("cel")
			if tag == "" {
				continue
			}
			path, f := prefix+"."+tag, v.Field(i)
			n++
			switch f.Kind() {
			case reflect.Struct:
				fill(path, f)
			case reflect.String:
				f.SetString("s:" + path)
				conds[path] = fmt.Sprintf("%s == %q", path, "s:"+path)
			case reflect.Int64:
				f.SetInt(int64(n))
				conds[path] = fmt.Sprintf("%s == %d", path, n)
			case reflect.Float64:
				f.SetFloat(float64(n) + 0.5)
				conds[path] = fmt.Sprintf("%s == %d.5", path, n)
			case reflect.Slice:
				f.Set(reflect.ValueOf([]string{"l:" + path}))
				conds[path] = fmt.Sprintf("%s == [%q]", path, "l:"+path)
			case reflect.Map:
				if f.Type().Elem().Kind() == reflect.Float64 {
					// A map of sums per currency; its derived leaves read
					// the one currency.
					f.Set(reflect.ValueOf(map[string]float64{"C" + fmt.Sprint(n): float64(n) + 0.5}))
					conds[path] = fmt.Sprintf("%s == {'C%d': %d.5}", path, n, n)
					for leaf := range derived[v.Type()] {
						dpath := prefix + "." + leaf
						if leaf == "currency" {
							conds[dpath] = fmt.Sprintf("%s == 'C%d'", dpath, n)
						} else {
							conds[dpath] = fmt.Sprintf("%s == %d.5", dpath, n)
						}
					}
					continue
				}
				f.Set(reflect.ValueOf(map[string]string{"k": "m:" + path}))
				conds[path] = fmt.Sprintf("%s == {'k': %q}", path, "m:"+path)
			default:
				t.Fatalf("%s: unexpected kind %v", path, f.Kind())
			}
		}
	}
	root := reflect.ValueOf(&in).Elem()
	for _, name := range []string{"agent", "user", "request", "recent"} {
		fill(name, root.FieldByName(strings.ToUpper(name[:1])+name[1:]))
	}

	var declared []string
	for _, name := range []string{"agent", "user", "request", "recent"} {
		for path := range leaves(name, root.FieldByName(strings.ToUpper(name[:1])+name[1:]).Type()) {
			declared = append(declared, path)
		}
	}
	if len(declared) != len(conds) || len(declared) < 40 {
		t.Fatalf("%d leaves declared, %d fields filled", len(declared), len(conds))
	}
	for _, path := range declared {
		cond, ok := conds[path]
		if !ok {
			t.Errorf("%s: declared but not a field", path)
			continue
		}
		t.Run(path, func(t *testing.T) {
			s := mustSet(t, "types:\n  t:\n    - id: c\n      when: '"+strings.ReplaceAll(cond, "'", "''")+"'\n      outcome: allow\n")
			if d := s.Evaluate("t", in); d.RuleID != "c" || d.Err != nil {
				t.Errorf("%s does not hold: %+v", cond, d)
			}
			if d := s.Evaluate("t", Input{}); d.RuleID == "c" {
				t.Errorf("%s holds for an empty input", cond)
			}
		})
	}
}

// TestOneCurrencyLeaves: request.amount, request.currency and recent's sum
// are 0 and "" without amounts, the one currency's while there is one, and
// an evaluation error — the strictest outcome, never a sum of currencies —
// while there are several; request.amounts and the sums maps hold each.
func TestOneCurrencyLeaves(t *testing.T) {
	one := map[string]float64{"EUR": 60}
	two := map[string]float64{"EUR": 60, "USD": 70}
	tests := []struct {
		name string
		cond string
		in   Input
		err  bool
	}{
		{"request.amount without amounts", `request.amount == 0.0 && request.currency == ""`, Input{}, false},
		{"request.amount in one currency", `request.amount == 60.0 && request.currency == "EUR"`, Input{Request: Request{Amounts: one}}, false},
		{"request.amount in two currencies", `request.amount > 100`, Input{Request: Request{Amounts: two}}, true},
		{"request.amount below a limit in two currencies", `request.amount <= 100`, Input{Request: Request{Amounts: two}}, true},
		{"request.currency in two currencies", `request.currency == "EUR"`, Input{Request: Request{Amounts: two}}, true},
		{"request.amounts in two currencies", `request.amounts == {"EUR": 60.0, "USD": 70.0} && size(request.amounts) == 2`, Input{Request: Request{Amounts: two}}, false},
		{"a currency the request lacks", `request.amounts["JPY"] < 1`, Input{Request: Request{Amounts: two}}, true},
		{"recent sum without amounts", `recent.agent.day.total.sum == 0.0 && size(recent.agent.day.total.sums) == 0`, Input{}, false},
		{"recent sum in one currency", `recent.user.hour.approved.sum == 60.0`, Input{Recent: Recent{User: Windows{Hour: Counts{Approved: Tally{Count: 1, Sums: one}}}}}, false},
		{"recent sum in two currencies", `recent.user.hour.approved.sum < 1000`, Input{Recent: Recent{User: Windows{Hour: Counts{Approved: Tally{Count: 2, Sums: two}}}}}, true},
		{"recent sums in two currencies", `recent.user.hour.approved.sums["USD"] == 70.0`, Input{Recent: Recent{User: Windows{Hour: Counts{Approved: Tally{Count: 2, Sums: two}}}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustSet(t, "types:\n  t:\n    - id: c\n      when: '"+strings.ReplaceAll(tt.cond, "'", "''")+"'\n      outcome: allow\n"+
				"    - {id: strict, when: 'false', outcome: step_up}\n    - {id: rest, outcome: approve}\n")
			d := s.Evaluate("t", tt.in)
			if tt.err {
				if d.Err == nil || d.RuleID != "c" || d.Outcome.Kind != StepUp {
					t.Errorf("got %+v, want an evaluation error deciding the strictest outcome (step_up)", d)
				}
				return
			}
			if d.Err != nil || d.RuleID != "c" {
				t.Errorf("got %+v, want rule c to hold", d)
			}
		})
	}
}

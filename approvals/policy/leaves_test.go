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

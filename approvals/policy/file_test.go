package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseFile(t *testing.T) {
	f, err := ParseFile("p.yaml", []byte(`# comment
types:
  payment_initiation:
    - id: big
      when: amount(details.instructedAmount) > 10000
      outcome: step_up
      reason: Payments over 10,000 need a passkey
    - id: q
      when: |
        details.x == 1
      outcome: {quorum: {n: 2, group: maintainers, requester_counts: true}}
    - id: d
      outcome: {deny: "  No.  "}
    - id: d2
      outcome: deny
      reason: Also no
  email_send: []
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &File{Name: "p.yaml", Types: map[string][]Rule{
		"payment_initiation": {
			{ID: "big", When: "amount(details.instructedAmount) > 10000", Outcome: Outcome{Kind: StepUp}, Reason: "Payments over 10,000 need a passkey", Line: 4},
			{ID: "q", When: "details.x == 1\n", Outcome: Outcome{Kind: Quorum, N: 2, Group: "maintainers", RequesterCounts: true}, Line: 8},
			{ID: "d", Outcome: Outcome{Kind: Deny, Reason: "No."}, Reason: "No.", Line: 12},
			{ID: "d2", Outcome: Outcome{Kind: Deny, Reason: "Also no"}, Reason: "Also no", Line: 14},
		},
		"email_send": {},
	}}
	for _, rules := range f.Types {
		for i := range rules {
			rules[i].src = sourceMap{}
		}
	}
	if !reflect.DeepEqual(f, want) {
		t.Errorf("got  %+v\nwant %+v", f, want)
	}
}

func TestFormat(t *testing.T) {
	src := `# Comments and layout do not matter.
types:
  z_type:
    - id: a
      when: >-
        details.x == 1 &&
        details.y == "it's"
      outcome: {quorum: {group: sre, n: 2}}
      reason: "Two SREs"
  a_type:
    - {id: d, outcome: deny, reason: 'No: "never"'}
    - id: multi
      when: |
        details.a == 1
        || details.b == 2
      outcome: allow
    - id: last
      outcome: step_up
`
	f, err := ParseFile("p.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	const want = `types:
  a_type:
    - id: d
      outcome: {deny: 'No: "never"'}
    - id: multi
      when: |
        details.a == 1
        || details.b == 2
      outcome: allow
    - id: last
      outcome: step_up
  z_type:
    - id: a
      when: details.x == 1 && details.y == "it's"
      outcome: {quorum: {n: 2, group: sre, requester_counts: false}}
      reason: Two SREs
`
	got := f.Format()
	if string(got) != want {
		t.Errorf("Format:\n%s\nwant:\n%s", got, want)
	}
	g, err := ParseFile("p.yaml", got)
	if err != nil {
		t.Fatal(err)
	}
	if string(g.Format()) != want {
		t.Errorf("Format is not stable:\n%s", g.Format())
	}
	for typ, rules := range f.Types {
		for i, r := range rules {
			h := g.Types[typ][i]
			if r.ID != h.ID || r.When != h.When || r.Outcome != h.Outcome || r.Reason != h.Reason {
				t.Errorf("rule %s/%s changed in the round trip: %+v, then %+v", typ, r.ID, r, h)
			}
		}
	}
}

func TestParseFileErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // each Error() must contain one, in order
	}{
		{"empty", ``, []string{"p.yaml: empty file"}},
		{"syntax", "types:\n  t:\n    - id: a\n     when: x\n", []string{`p.yaml:4: t rule "a": invalid YAML`}},
		{"syntax deep in a rule", "types:\n  t:\n    - id: a\n      when: x\n      outcome: allow\n    - id: b\n      when: y\n     outcome: deny\n",
			[]string{`p.yaml:8: t rule "b": invalid YAML`}},
		{"unclosed quote", "types:\n  t:\n    - id: a\n      when: 'x\n    - id: b\n      outcome: allow\n", []string{`p.yaml:4: t rule "a": invalid YAML`}},
		{"tab indentation", "types:\n\tt: []\n", []string{"p.yaml:2: invalid YAML"}},
		{"not a mapping", "- a\n", []string{"p.yaml:1:1: want a mapping, got a list"}},
		{"unknown top-level key", "types: {}\nversion: 2\n", []string{`p.yaml:2:1: unknown key "version"`}},
		{"missing types", "{}\n", []string{`p.yaml:1:1: missing key "types"`}},
		{"two documents", "types: {}\n---\ntypes: {}\n", []string{"more than one YAML document"}},
		{"rules not a list", "types:\n  t: allow\n", []string{`p.yaml:2:6: t: want a list of rules, got "allow"`}},
		{"bad type name", "types:\n  'a b': []\n", []string{`p.yaml:2:3: invalid request type name "a b"`}},
		{"unknown rule key", "types:\n  t:\n    - id: a\n      outcome: allow\n      then: deny\n",
			[]string{`p.yaml:5:7: t rule "a": unknown key "then"`}},
		{"duplicate key", "types:\n  t:\n    - id: a\n      outcome: allow\n      outcome: deny\n",
			[]string{`p.yaml:5:7: t rule "a": duplicate key "outcome"`}},
		{"missing id", "types:\n  t:\n    - outcome: allow\n", []string{`p.yaml:3:7: t rule "#1": missing key "id"`}},
		{"bad id", "types:\n  t:\n    - id: 'no spaces'\n      outcome: allow\n", []string{`p.yaml:3:11: t rule "#1": invalid rule id`}},
		{"duplicate id", "types:\n  t:\n    - {id: a, outcome: allow}\n    - {id: a, outcome: approve}\n",
			[]string{`p.yaml:4:7: t rule "a": duplicate rule id`}},
		{"missing outcome", "types:\n  t:\n    - id: a\n      when: 'true'\n", []string{`p.yaml:3:7: t rule "a": missing key "outcome"`}},
		{"unknown outcome", "types:\n  t:\n    - id: a\n      outcome: maybe\n", []string{`p.yaml:4:16: t rule "a": unknown outcome "maybe"`}},
		{"quorum without parameters", "types:\n  t:\n    - id: a\n      outcome: quorum\n", []string{`p.yaml:4:16: t rule "a": quorum needs n and group`}},
		{"quorum n zero", "types:\n  t:\n    - id: a\n      outcome: {quorum: {n: 0, group: sre}}\n", []string{`p.yaml:4:29: t rule "a": quorum: n must be`}},
		{"quorum n string", "types:\n  t:\n    - id: a\n      outcome: {quorum: {n: two, group: sre}}\n", []string{`p.yaml:4:29: t rule "a": quorum: n must be`}},
		{"quorum missing group", "types:\n  t:\n    - id: a\n      outcome: {quorum: {n: 2}}\n", []string{`t rule "a": quorum: missing key "group"`}},
		{"quorum unknown key", "types:\n  t:\n    - id: a\n      outcome: {quorum: {n: 2, group: sre, of: 3}}\n", []string{`p.yaml:4:44: t rule "a": unknown key "of"`}},
		{"requester_counts not bool", "types:\n  t:\n    - id: a\n      outcome: {quorum: {n: 2, group: sre, requester_counts: yes}}\n",
			[]string{`t rule "a": quorum: requester_counts must be true or false`}},
		{"two outcomes", "types:\n  t:\n    - id: a\n      outcome: {deny: x, quorum: {n: 1, group: g}}\n", []string{`p.yaml:4:16: t rule "a": an outcome is one of`}},
		{"deny without reason", "types:\n  t:\n    - id: a\n      outcome: deny\n", []string{`p.yaml:4:16: t rule "a": deny needs a reason`}},
		{"deny with two reasons", "types:\n  t:\n    - id: a\n      outcome: {deny: x}\n      reason: y\n", []string{`t rule "a": deny reason and rule reason differ`}},
		{"when not a string", "types:\n  t:\n    - id: a\n      when: [x]\n      outcome: allow\n", []string{`p.yaml:4:13: t rule "a": when: want a string, got a list`}},
		{"alias", "types:\n  t:\n    - &r {id: a, outcome: allow}\n    - *r\n", []string{`p.yaml:3:7: t rule "a": anchors are not allowed`, `p.yaml:4:7: t rule "#2": aliases are not allowed`}},
		{"merge key", "types:\n  t:\n    - {<<: {id: a}, outcome: allow}\n", []string{`p.yaml:3:7: t rule "#1": missing key "id"`, `p.yaml:3:8: t rule "#1": want a plain key`}},
		{"several problems at once", "types:\n  t:\n    - {id: a, outcome: maybe}\n    - {id: b, outcome: allow, x: 1}\n",
			[]string{`p.yaml:3:24: t rule "a": unknown outcome`, `p.yaml:4:31: t rule "b": unknown key "x"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFile("p.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("no error; parsed %+v", f)
			}
			if f != nil {
				t.Errorf("a file came back with the error")
			}
			checkErrors(t, err, tt.want)
		})
	}
}

func checkErrors(t *testing.T, err error, want []string) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %T is not Errors: %v", err, err)
	}
	if len(es) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(es), len(want), err)
	}
	for i, e := range es {
		if !strings.HasPrefix(e.Error(), "policy: ") || !strings.Contains(e.Error(), want[i]) {
			t.Errorf("error %d = %q, want it to contain %q", i, e.Error(), want[i])
		}
	}
	var one *Error
	if !errors.As(err, &one) || one != es[0] {
		t.Errorf("errors.As does not find the first *Error")
	}
}

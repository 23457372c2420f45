package policy

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// markerPos returns the 1-based line and column of the first "detials" in
// src: the misspelt variable every position test reports.
func markerPos(t *testing.T, src string) string {
	t.Helper()
	for i, line := range strings.Split(src, "\n") {
		if c := strings.Index(line, "detials"); c >= 0 {
			return "p.yaml:" + strconv.Itoa(i+1) + ":" + strconv.Itoa(len([]rune(line[:c]))+1) + ":"
		}
	}
	t.Fatal("no marker")
	return ""
}

// TestCompilePositions checks that a CEL error is reported where it sits in
// the YAML file, whatever style the condition is written in.
func TestCompilePositions(t *testing.T) {
	tests := []struct {
		name string
		when string // the lines after "      when:"
	}{
		{"plain", ` details.x > 1 && detials.y`},
		{"plain with a comment", ` details.x > 1 && detials.y  # why`},
		{"single-quoted", ` 'details.x == "a" || detials.y'`},
		{"double-quoted", ` "details.x == 'a' || detials.y"`},
		{"plain over two lines", " details.x == 1 &&\n        detials.y"},
		{"literal block", " |\n        details.x == 1 &&\n          detials.y\n"},
		{"literal block with a blank line", " |\n        details.x == 1 &&\n\n        detials.y\n"},
		{"folded block", " >-\n        details.x == 1 &&\n        details.z == 2 && detials.y\n"},
		{"unicode before", ` details.x == "€€€" && detials.y`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "types:\n  t:\n    - id: r\n      when:" + tt.when + "\n      outcome: allow\n"
			f, err := ParseFile("p.yaml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Compile(f)
			checkErrors(t, err, []string{"policy: " + markerPos(t, src) + ` t rule "r": undeclared reference to 'detials'`})
		})
	}
	t.Run("flow mapping", func(t *testing.T) {
		src := "types:\n  t:\n    - {id: r, when: details.x > 1 && detials.y, outcome: allow}\n"
		f, err := ParseFile("p.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Compile(f)
		checkErrors(t, err, []string{"policy: " + markerPos(t, src) + ` t rule "r": undeclared reference`})
	})
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		when string
		want string
	}{
		{"syntax error", `details.x >`, `p.yaml:4:24: t rule "r": Syntax error: mismatched input '<EOF>'`},
		{"syntax error inside", `details.x > > 1`, `p.yaml:4:25: t rule "r": Syntax error: extraneous input '>'`},
		{"unknown variable", `detail.x > 1`, `p.yaml:4:13: t rule "r": undeclared reference to 'detail'`},
		{"unknown field of recent", `recent.agent.hour.aproved.count > 1`, `p.yaml:4:30: t rule "r": undefined field 'aproved'`},
		{"unknown field of agent", `agent.label["x"] == "y"`, `p.yaml:4:18: t rule "r": undefined field 'label'`},
		{"unknown function", `amout(details.x) > 1`, `p.yaml:4:18: t rule "r": undeclared reference to 'amout'`},
		{"amount of a number", `amount(1) > 1`, `p.yaml:4:19: t rule "r": found no matching overload for 'amount'`},
		{"wrong type", `user.roles == "admin"`, `p.yaml:4:24: t rule "r": found no matching overload for '_==_'`},
		{"not a bool: dyn", `details.approved`, `p.yaml:4:13: t rule "r": condition must be a bool, not dyn`},
		{"not a bool: int", `recent.agent.hour.total.count + 1`, `p.yaml:4:13: t rule "r": condition must be a bool, not int`},
		{"not a bool: string", `'"yes"'`, `p.yaml:4:13: t rule "r": condition must be a bool, not string`},
		{"over the cost limit", `details.recipients.all(a, details.recipients.all(b, a == b))`, `p.yaml:4:13: t rule "r": condition may cost up to`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "types:\n  t:\n    - id: r\n      when: " + tt.when + "\n      outcome: allow\n"
			f, err := ParseFile("p.yaml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			s, err := Compile(f)
			if s != nil {
				t.Error("a set came back with the error")
			}
			checkErrors(t, err, []string{tt.want})
		})
	}
}

// TestCompileWithinCost shows the limit admits a pass over a list.
func TestCompileWithinCost(t *testing.T) {
	mustSet(t, `
types:
  email_send:
    - id: r
      when: details.recipients.exists(r, !r.endsWith("@example.com")) && details.subject.matches("(?i)invoice")
      outcome: approve
`)
}

func TestCompileNothingPartially(t *testing.T) {
	src := `types:
  a:
    - {id: fine, when: "true", outcome: allow}
  b:
    - {id: good, when: details.x == 1, outcome: allow}
    - {id: bad, when: details.x ==, outcome: allow}
  c:
    - {id: worse, when: "1", outcome: allow}
`
	f, err := ParseFile("p.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Compile(f)
	if s != nil {
		t.Error("a set came back with the errors")
	}
	checkErrors(t, err, []string{`p.yaml:6:35: b rule "bad": Syntax error`, `p.yaml:8:25: c rule "worse": condition must be a bool, not int`})
}

// TestCompileBuiltFile compiles a File built in code (say from the admin
// API): no positions, but the same checks.
func TestCompileBuiltFile(t *testing.T) {
	tests := []struct {
		name string
		rule Rule
		want string
	}{
		{"no id", Rule{When: "true", Outcome: Outcome{Kind: Allow}}, `policy: api: t: rule has no id`},
		{"zero outcome", Rule{ID: "r", Outcome: Outcome{}}, `policy: api: t rule "r": invalid outcome 0`},
		{"quorum without group", Rule{ID: "r", Outcome: Outcome{Kind: Quorum, N: 2}}, `quorum needs a group`},
		{"quorum n 0", Rule{ID: "r", Outcome: Outcome{Kind: Quorum, Group: "g"}}, `quorum n must be at least 1`},
		{"n on allow", Rule{ID: "r", Outcome: Outcome{Kind: Allow, N: 2}}, `belong to quorum`},
		{"deny without reason", Rule{ID: "r", Outcome: Outcome{Kind: Deny}}, `deny needs a reason`},
		{"bad CEL", Rule{ID: "r", When: "x", Outcome: Outcome{Kind: Allow}, Line: 7}, `policy: api:7: t rule "r": undeclared reference to 'x'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(&File{Name: "api", Types: map[string][]Rule{"t": {tt.rule}}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.Type != "t" {
				t.Errorf("error %#v does not name the type", e)
			}
		})
	}
	s, err := Compile(&File{Name: "api", Types: map[string][]Rule{"t": {
		{ID: "d", When: `details.x == 1`, Outcome: Outcome{Kind: Deny, Reason: "in the outcome"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Evaluate("t", Input{Details: map[string]any{"x": 1}}); d.Reason != "in the outcome" {
		t.Errorf("reason %q, want the outcome's", d.Reason)
	}
}

func TestReadsRecent(t *testing.T) {
	f, err := ParseFile("p.yaml", []byte(`types:
  a: [{id: velocity, when: "recent.agent.hour.total.count > 3", outcome: approve}, {id: rest, outcome: allow}]
  b: [{id: amount, when: "details.x == 'recent'", outcome: approve}, {id: rest, outcome: allow}]
`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	if !s.ReadsRecent("a") || s.ReadsRecent("b") || s.ReadsRecent("c") || !s.ReadsRecent("b", "a") {
		t.Fatalf("ReadsRecent: a %v, b %v, c %v", s.ReadsRecent("a"), s.ReadsRecent("b"), s.ReadsRecent("c"))
	}
}

// TestReadsRecentSums: a rule that reads only counts lets the caller skip
// the sums; a sum, the sums, or a whole window or struct (which holds them)
// does not.
func TestReadsRecentSums(t *testing.T) {
	tests := []struct {
		when string
		sums bool
	}{
		{"recent.agent.hour.total.count > 3", false},
		{"recent.agent.hour.total.count > 3 && recent.user.day.denied.count > 1", false},
		{"details.x == 'recent.sum'", false},
		{"recent.agent.hour.total.sum > 3", true},
		{`recent.user.day.approved.sums["EUR"] > 3`, true},
		{`recent.agent.hour.total.count > 3 || "EUR" in recent.agent.day.total.sums`, true},
		{"recent.agent.hour == recent.agent.day", true},
		{"recent.agent.hour.total == recent.agent.day.total", true},
		{"recent == recent", true},
	}
	for _, tt := range tests {
		t.Run(tt.when, func(t *testing.T) {
			s := mustSet(t, "types:\n  t:\n    - id: r\n      when: '"+strings.ReplaceAll(tt.when, "'", "''")+"'\n      outcome: approve\n    - {id: rest, outcome: allow}\n")
			if got := s.ReadsRecentSums("t"); got != tt.sums {
				t.Errorf("ReadsRecentSums = %v, want %v", got, tt.sums)
			}
			if s.ReadsRecentSums("other") {
				t.Error("ReadsRecentSums of a type without rules")
			}
		})
	}
}

package rar

import (
	"slices"
	"strings"
	"testing"
)

func summarizeOne(t *testing.T, r *Registry, in string) Summary {
	t.Helper()
	d, err := r.Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	s := r.Summarize(d)
	if len(s) != len(d.Elements) {
		t.Fatalf("Summarize returned %d summaries for %d elements", len(s), len(d.Elements))
	}
	return s[0]
}

func rowValue(s Summary, label string) (Row, bool) {
	for _, r := range s.Rows {
		if r.Label == label {
			return r, true
		}
	}
	return Row{}, false
}

func TestSummaryDemoTypes(t *testing.T) {
	r := testRegistry(t)
	tests := []struct {
		name     string
		in       string
		sentence string
		rows     []Row
	}{
		{"payment", arr(payment),
			"Pay 500.00 EUR to Alice Smith (DE89 …3000)",
			[]Row{{Label: "Amount", Value: "500.00 EUR"}, {Label: "Creditor", Value: "Alice Smith"}, {Label: "IBAN", Value: "DE89 3704 0044 0532 0130 00"}}},
		{"payment with reference and actions", arr(with(payment, `"creditorName"`, `"remittanceInformation":"Invoice 7","actions":["initiate","status"],"creditorName"`)),
			"Pay 500.00 EUR to Alice Smith (DE89 …3000)",
			[]Row{{Label: "Amount", Value: "500.00 EUR"}, {Label: "Creditor", Value: "Alice Smith"}, {Label: "IBAN", Value: "DE89 3704 0044 0532 0130 00"}, {Label: "Reference", Value: "Invoice 7"}, {Label: "Actions", Value: "initiate, status"}}},
		{"database", arr(with(dbOp, "1200", "1200000")),
			"DELETE on prod.users affecting about 1,200,000 rows (statement 3a7bd3e2…42dd4f1b)",
			[]Row{{Label: "Operation", Value: "DELETE"}, {Label: "Database", Value: "prod"}, {Label: "Table", Value: "users"}, {Label: "Estimated rows", Value: "1,200,000"}, {Label: "Statement SHA-256", Value: "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b"}}},
		{"database one row", arr(with(dbOp, "1200", "1")),
			"DELETE on prod.users affecting about 1 row (statement 3a7bd3e2…42dd4f1b)", nil},
		{"merge", arr(merge),
			"Merge pull request #42 into main of acme/api (checks passed)",
			[]Row{{Label: "Repository", Value: "acme/api"}, {Label: "Into branch", Value: "main"}, {Label: "Pull request", Value: "42"}, {Label: "Checks", Value: "passed"}}},
		{"email", arr(email),
			`Send "Q3 report" to ceo@example.com and auditor@partner.example`,
			[]Row{{Label: "Subject", Value: "Q3 report"}, {Label: "Recipients", Value: "ceo@example.com, auditor@partner.example"}}},
		{"email many recipients", arr(with(email, `["ceo@example.com","auditor@partner.example"]`, `["a@x.example","b@x.example","c@x.example","d@x.example","e@x.example"]`)),
			`Send "Q3 report" to a@x.example, b@x.example, c@x.example and 2 more`,
			[]Row{{Label: "Subject", Value: "Q3 report"}, {Label: "Recipients", Value: "a@x.example, b@x.example, c@x.example, d@x.example, e@x.example"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := summarizeOne(t, r, tt.in)
			if s.Sentence != tt.sentence {
				t.Errorf("Sentence = %q, want %q", s.Sentence, tt.sentence)
			}
			if tt.rows != nil && !slices.EqualFunc(s.Rows, tt.rows, rowEqual) {
				t.Errorf("Rows = %+v, want %+v", s.Rows, tt.rows)
			}
			if len(s.Warnings) != 0 {
				t.Errorf("Warnings = %q, want none", s.Warnings)
			}
		})
	}
}

func rowEqual(a, b Row) bool {
	return a.Label == b.Label && a.Value == b.Value && slices.Equal(a.Flags, b.Flags)
}

func TestSummaryDisplaySafety(t *testing.T) {
	r := testRegistry(t)
	tests := []struct {
		name     string
		creditor string // JSON string contents
		want     string // Creditor row value
		flags    []string
		warn     string // substring of a warning, "" for none
	}{
		{"right-to-left override", `Alice \u202Egnp.exe`, `Alice \u202Egnp.exe`, []string{FlagEscaped}, "direction-changing"},
		{"isolates and marks", `A\u2066B\u2069C\u200eD\u200fE\u061c`, `A\u2066B\u2069C\u200ED\u200FE\u061C`, []string{FlagEscaped}, "invisible"},
		{"zero-width", `Ali\u200bce\u200c\u200d\u2060\ufeff`, `Ali\u200Bce\u200C\u200D\u2060\uFEFF`, []string{FlagEscaped}, "invisible"},
		{"tag characters", `Alice\udb40\udc41`, `Alice\U000E0041`, []string{FlagEscaped}, "invisible"},
		{"hangul filler", `Alice\u3164`, `Alice\u3164`, []string{FlagEscaped}, "invisible"},
		{"unassigned", `Alice\u0378`, `Alice\u0378`, []string{FlagEscaped}, "invisible"},
		{"leading combining mark", `\u0338Alice`, `\u0338Alice`, []string{FlagEscaped}, "invisible"},
		{"backslash", `C:\\evil\\u202E`, `C:\\evil\\u202E`, []string{FlagEscaped}, "invisible"},
		{"control characters", `Ali\u0001ce\u0007 \u009bSmith`, `Alice Smith`, []string{FlagControlRemoved}, "control characters"},
		{"line breaks", `Alice\nSmith\r\tJr`, `Alice Smith  Jr`, []string{FlagControlRemoved}, "control characters"},
		{"Cyrillic a in Latin name", `\u0410lice Smith`, "\u0410lice Smith", []string{FlagMixedScript}, "Cyrillic, Latin"},
		{"Greek omicron", `B\u03bfb`, "B\u03bfb", []string{FlagMixedScript}, "mixes scripts"},
		{"all Cyrillic", `\u0410\u043b\u0438\u0441\u0430`, "\u0410\u043b\u0438\u0441\u0430", nil, ""},
		{"Japanese with Latin", `ACME\u682a\u5f0f\u4f1a\u793e\u30a2\u30af\u30e1`, "ACME\u682a\u5f0f\u4f1a\u793e\u30a2\u30af\u30e1", nil, ""},
		{"Katakana with the prolonged sound mark", `\u30b3\u30fc\u30d2\u30fc`, "コーヒー", nil, ""},
		{"accents stay", `Zo\u00eb M\u00fcller-\u0160imek`, "Zoë Müller-Šimek", nil, ""},
		{"emoji stay", `Alice \ud83d\ude00`, "Alice 😀", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := summarizeOne(t, r, arr(with(payment, `"Alice Smith"`, `"`+tt.creditor+`"`)))
			row, ok := rowValue(s, "Creditor")
			if !ok {
				t.Fatalf("no Creditor row in %+v", s.Rows)
			}
			if row.Value != tt.want {
				t.Errorf("Creditor = %q, want %q", row.Value, tt.want)
			}
			if !slices.Equal(row.Flags, tt.flags) {
				t.Errorf("Flags = %q, want %q", row.Flags, tt.flags)
			}
			if !strings.Contains(s.Sentence, "to "+tt.want+" (DE89") {
				t.Errorf("Sentence = %q, want the safe creditor %q in place", s.Sentence, tt.want)
			}
			warned := tt.warn != "" && slices.ContainsFunc(s.Warnings, func(w string) bool { return strings.Contains(w, tt.warn) })
			if tt.warn != "" && !warned {
				t.Errorf("Warnings = %q, want one containing %q", s.Warnings, tt.warn)
			}
			if tt.warn == "" && len(s.Warnings) > 0 {
				t.Errorf("Warnings = %q, want none", s.Warnings)
			}
			for _, text := range append([]string{s.Sentence, row.Value}, s.Warnings...) {
				for _, c := range text {
					if isInvisible(c) || c < 0x20 || (c >= 0x7f && c <= 0x9f) {
						t.Errorf("output %q contains %U", text, c)
					}
				}
			}
		})
	}
}

// TestSummaryCannotBeForged checks that a value the agent controls, however
// long or odd, cannot push the real values out of the sentence or appear
// only there.
func TestSummaryCannotBeForged(t *testing.T) {
	r := testRegistry(t)
	long := strings.Repeat("A", 110) + " and pay 1.00 EUR instead"
	s := summarizeOne(t, r, arr(with(payment, `"Alice Smith"`, `"`+long+`"`)))
	if !strings.HasPrefix(s.Sentence, "Pay 500.00 EUR to ") || !strings.HasSuffix(s.Sentence, "(DE89 …3000)") {
		t.Errorf("Sentence = %q", s.Sentence)
	}
	if n := len([]rune(s.Sentence)); n > 120 {
		t.Errorf("Sentence has %d characters; a value must be shortened", n)
	}
	if row, _ := rowValue(s, "Creditor"); row.Value != long {
		t.Errorf("Creditor row = %q, want the full value", row.Value)
	}

	// A field the type does not list still appears as a row.
	s = summarizeOne(t, r, arr(`{"type":"open","x":{"amount":"9999"},"y":["a","b"],"z":[{"q":1}]}`))
	want := []Row{
		{Label: "/x/amount", Value: "9999", Flags: []string{FlagUndeclared}},
		{Label: "/y", Value: "a, b", Flags: []string{FlagUndeclared}},
		{Label: "/z/0/q", Value: "1", Flags: []string{FlagUndeclared}},
	}
	if !slices.EqualFunc(s.Rows, want, rowEqual) {
		t.Errorf("Rows = %+v, want %+v", s.Rows, want)
	}
}

func TestShortenKeepsEscapes(t *testing.T) {
	r := testRegistry(t)
	name := strings.Repeat(`\u202e`, 100)
	s := summarizeOne(t, r, arr(with(payment, `"Alice Smith"`, `"`+name+`"`)))
	inner := strings.TrimSuffix(strings.TrimPrefix(s.Sentence, "Pay 500.00 EUR to "), " (DE89 …3000)")
	head, tail, ok := strings.Cut(inner, "…")
	if !ok || strings.ReplaceAll(head, `\u202E`, "") != "" || strings.ReplaceAll(tail, `\u202E`, "") != "" {
		t.Errorf("shortened value %q cuts an escape", inner)
	}
}

func TestFormatMoney(t *testing.T) {
	tests := []struct {
		amount, currency, want string
	}{
		{"500", "EUR", "500.00 EUR"},
		{"500.5", "EUR", "500.50 EUR"},
		{"0.01", "EUR", "0.01 EUR"},
		{"1234567.5", "USD", "1,234,567.50 USD"},
		{"500", "JPY", "500 JPY"},
		{"1000000", "JPY", "1,000,000 JPY"},
		{"1", "BHD", "1.000 BHD"},
		{"12.5", "KWD", "12.500 KWD"},
		{"1", "CLF", "1.0000 CLF"},
		{"-5", "EUR", "-5.00 EUR"},
		{"1.005", "EUR", "1.005 EUR"}, // never rounds, even if validation was skipped
		{"5.5", "XXX", "5.5 XXX"},
		{"100", "", "100"},
	}
	for _, tt := range tests {
		t.Run(tt.amount+" "+tt.currency, func(t *testing.T) {
			if got := formatMoney(tt.amount, tt.currency); got != tt.want {
				t.Errorf("formatMoney(%q, %q) = %q, want %q", tt.amount, tt.currency, got, tt.want)
			}
		})
	}
}

func TestMoneyInSummary(t *testing.T) {
	r := testRegistry(t)
	tests := []struct {
		currency, amount, want string
	}{
		{"JPY", "500", "Pay 500 JPY"},
		{"EUR", "500", "Pay 500.00 EUR"},
		{"BHD", "1.5", "Pay 1.500 BHD"},
		{"USD", "1234567.89", "Pay 1,234,567.89 USD"},
	}
	for _, tt := range tests {
		t.Run(tt.currency, func(t *testing.T) {
			s := summarizeOne(t, r, arr(with(payment, `"currency":"EUR","amount":"500.00"`, `"currency":"`+tt.currency+`","amount":"`+tt.amount+`"`)))
			if !strings.HasPrefix(s.Sentence, tt.want+" to ") {
				t.Errorf("Sentence = %q, want prefix %q", s.Sentence, tt.want)
			}
		})
	}
}

func TestSummarizeUnregisteredType(t *testing.T) {
	r := testRegistry(t)
	d, err := r.Parse([]byte(arr(merge)))
	if err != nil {
		t.Fatal(err)
	}
	other, err := Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := other.Summarize(d)[0]
	if len(s.Warnings) == 0 || len(s.Rows) != 4 {
		t.Errorf("summary of an unregistered type = %+v, want a warning and every field as a row", s)
	}
}

func TestSummaryTemplateFailure(t *testing.T) {
	typ, err := ParseTypeFile([]byte(`{"name":"nested","max_lifetime":"1m","summary":"Do {{.a.b}}","fields":[{"path":"/c","label":"C"}],"schema":{"type":"object"}}`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Compile([]Type{typ})
	if err != nil {
		t.Fatal(err)
	}
	s := summarizeOne(t, r, `[{"type":"nested","c":"x"}]`)
	if s.Sentence != "Request of type nested (see the fields)" || len(s.Warnings) != 1 || len(s.Rows) != 1 {
		t.Errorf("summary = %+v, want the fallback sentence, a warning and the rows", s)
	}
}

func TestSummaryOptionalField(t *testing.T) {
	typ, err := ParseTypeFile([]byte(`{"name":"opt","max_lifetime":"1m","summary":"Do {{.a}}{{with index . \"b\"}} with {{.}}{{end}}","schema":{"type":"object"}}`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Compile([]Type{typ})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ in, want string }{
		{`[{"type":"opt","a":"x"}]`, "Do x"},
		{`[{"type":"opt","a":"x","b":"y"}]`, "Do x with y"},
		{`[{"type":"opt","b":"y"}]`, "Request of type opt (see the fields)"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if s := summarizeOne(t, r, tt.in); s.Sentence != tt.want {
				t.Errorf("Sentence = %q, want %q", s.Sentence, tt.want)
			}
		})
	}
}

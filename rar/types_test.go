package rar

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestDemoTypes(t *testing.T) {
	r := demoRegistry(t)
	tests := []struct {
		name     string
		lifetime time.Duration
		fields   int
	}{
		{"payment_initiation", 15 * time.Minute, 4},
		{"database_operation", 10 * time.Minute, 5},
		{"code_merge", 30 * time.Minute, 4},
		{"email_send", 10 * time.Minute, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, ok := r.Type(tt.name)
			if !ok {
				t.Fatalf("type %s not registered", tt.name)
			}
			if typ.MaxLifetime != tt.lifetime || len(typ.Fields) != tt.fields || typ.Description == "" {
				t.Errorf("type = %+v, want lifetime %v and %d fields", typ, tt.lifetime, tt.fields)
			}
		})
	}
	if _, ok := r.Type("nope"); ok {
		t.Error("Type(nope) found a type")
	}
}

const minimalType = `
name: t
description: d
max_lifetime: 5m
summary: 'Do {{.x}}'
fields:
  - {path: /x, label: X}
schema:
  type: object
  properties:
    x: {type: string}
`

func TestParseTypeFileErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"unknown top-level key", minimalType + "colour: red\n", "field colour not found"},
		{"unknown field key", strings.Replace(minimalType, "label: X", "label: X, width: 3", 1), "field width not found"},
		{"duplicate key", minimalType + "name: u\n", "already defined"},
		{"two documents", minimalType + "---\n" + minimalType, "exactly one document"},
		{"empty", "", "empty"},
		{"no name", strings.Replace(minimalType, "name: t", "", 1), "name is required"},
		{"no lifetime", strings.Replace(minimalType, "max_lifetime: 5m", "", 1), "max_lifetime is required"},
		{"bad lifetime", strings.Replace(minimalType, "5m", "five minutes", 1), "max_lifetime"},
		{"no schema", minimalType[:strings.Index(minimalType, "schema:")], "schema is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTypeFile([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "rar: ") {
				t.Errorf("ParseTypeFile error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	base, err := ParseTypeFile([]byte(minimalType))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		edit   func(*Type)
		want   string
		second bool // compile base twice
	}{
		{"bad name", func(t *Type) { t.Name = "has space" }, "name must match", false},
		{"zero lifetime", func(t *Type) { t.MaxLifetime = 0 }, "max_lifetime must be positive", false},
		{"schema not JSON", func(t *Type) { t.Schema = json.RawMessage("{") }, "schema is not JSON", false},
		{"schema not object", func(t *Type) { t.Schema = json.RawMessage("true") }, "must be a JSON object", false},
		{"other draft", func(t *Type) { t.Schema = json.RawMessage(`{"$schema":"http://json-schema.org/draft-07/schema#"}`) }, "$schema must be", false},
		{"invalid schema", func(t *Type) { t.Schema = json.RawMessage(`{"type":"objekt"}`) }, `type "t": schema`, false},
		{"misspelt format", func(t *Type) { t.Schema = json.RawMessage(`{"properties":{"x":{"format":"iabn"}}}`) }, `unknown format "iabn"`, false},
		{"remote ref", func(t *Type) { t.Schema = json.RawMessage(`{"$ref":"file:///etc/passwd"}`) }, "may not load", false},
		{"bad pointer", func(t *Type) { t.Fields = []DisplayField{{Path: "x", Label: "X"}} }, "not a JSON pointer", false},
		{"root pointer", func(t *Type) { t.Fields = []DisplayField{{Path: "", Label: "X"}} }, "not a JSON pointer", false},
		{"no label", func(t *Type) { t.Fields = []DisplayField{{Path: "/x"}} }, "label is required", false},
		{"unknown field format", func(t *Type) { t.Fields = []DisplayField{{Path: "/x", Label: "X", Format: "html"}} }, `unknown format "html"`, false},
		{"bad amount pointer", func(t *Type) { t.Amount = "price" }, `amount: path "price" is not a JSON pointer`, false},
		{"amount pointer with a bad escape", func(t *Type) { t.Amount = "/a~2" }, "amount: path", false},
		{"no summary", func(t *Type) { t.Summary = "" }, "summary is required", false},
		{"template syntax", func(t *Type) { t.Summary = "Pay {{.x" }, "summary", false},
		{"unknown function", func(t *Type) { t.Summary = "Pay {{euro .x}}" }, `function "euro" not defined`, false},
		{"wrong arity", func(t *Type) { t.Summary = "Pay {{plural .x}}" }, "wrong number of args", false},
		{"defined twice", func(t *Type) {}, "defined twice", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ := base
			typ.Fields = append([]DisplayField(nil), base.Fields...)
			tt.edit(&typ)
			types := []Type{typ}
			if tt.second {
				types = append(types, base)
			}
			_, err := Compile(types)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `rar: type "`) {
				t.Errorf("Compile error = %v, want one naming the type and containing %q", err, tt.want)
			}
		})
	}
}

func TestTypeMarshalRoundTrip(t *testing.T) {
	for _, typ := range demoTypes(t) {
		t.Run(typ.Name, func(t *testing.T) {
			b, err := json.Marshal(typ)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseTypeFile(b)
			if err != nil {
				t.Fatalf("ParseTypeFile(MarshalJSON): %v\n%s", err, b)
			}
			b2, _ := json.Marshal(back)
			if !bytes.Equal(b, b2) {
				t.Errorf("round trip changed the type:\n%s\n%s", b, b2)
			}
		})
	}
}

func TestDetailsLogValue(t *testing.T) {
	r := testRegistry(t)
	d, err := r.Parse([]byte(arr(payment, merge)))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("request", "authorization_details", d)
	out := buf.String()
	if !strings.Contains(out, "types=payment_initiation,code_merge") || !strings.Contains(out, "hash="+d.Hash) {
		t.Errorf("log = %s, want types and hash", out)
	}
	for _, secret := range []string{"Alice", "DE89", "500", "acme"} {
		if strings.Contains(out, secret) {
			t.Errorf("log = %s, leaks %q", out, secret)
		}
	}
}

// TestFieldErrorQuotes: the validator's quotes around values read as
// apostrophes in the description, not as U+0022 escapes; quotes in a key
// stay escaped, so the path is unambiguous.
func TestFieldErrorQuotes(t *testing.T) {
	_, err := demoRegistry(t).Parse([]byte(`[{"type":"database_operation","operation":"select","database":"prod","table":"t","estimated_rows":1,"statement_sha256":"` + strings.Repeat("ab", 32) + `"}]`))
	if err == nil {
		t.Fatal("a lower-case operation was accepted")
	}
	msg := err.Error()
	if !strings.Contains(msg, "'SELECT'") || strings.Contains(msg, "U+0022") {
		t.Fatalf("error %q: want the allowed values in apostrophes", msg)
	}
}

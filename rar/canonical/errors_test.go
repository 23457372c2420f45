package canonical

import (
	"strings"
	"testing"
)

func TestFieldErrorString(t *testing.T) {
	tests := []struct {
		name string
		err  FieldError
		want string
	}{
		{"element field", FieldError{Index: 0, Path: "/creditorAccount/iban", Rule: "iban_checksum", Message: "IBAN check digits do not match"},
			"rar: authorization_details[0]/creditorAccount/iban: iban_checksum: IBAN check digits do not match"},
		{"whole value", FieldError{Index: -1, Rule: "max_bytes", Message: "too big"},
			"rar: authorization_details: max_bytes: too big"},
		{"hostile key", FieldError{Index: 3, Path: "/a\u202e\"b\\", Rule: "duplicate_key", Message: "duplicate key"},
			"rar: authorization_details[3]/aU+202EU+0022bU+005C: duplicate_key: duplicate key"},
		{"invalid UTF-8", FieldError{Index: 1, Path: "/\xff", Rule: "r"}, "rar: authorization_details[1]/U+FFFD: r"},
		{"long path", FieldError{Index: 0, Path: "/" + strings.Repeat("k", 1000), Rule: "r"},
			"rar: authorization_details[0]/" + strings.Repeat("k", maxErrorPart-1) + "...: r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.err.Error()
			if got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			// RFC 6749 §5.2 error_description character set.
			for _, c := range []byte(got) {
				if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
					t.Errorf("Error() contains byte %#x", c)
				}
			}
		})
	}
}

// TestParseDescription: what Description writes reads back, so a client
// learns the element, path and rule the server refused.
func TestParseDescription(t *testing.T) {
	tests := []struct {
		name string
		desc string
		want *FieldError // nil: not a field error description
	}{
		{"field", (&FieldError{Index: 0, Path: "/instructedAmount/amount", Rule: "amount", Message: "amount must be a decimal string"}).Description(),
			&FieldError{Index: 0, Path: "/instructedAmount/amount", Rule: "amount", Message: "amount must be a decimal string"}},
		{"whole value", (&FieldError{Index: -1, Rule: "max_bytes", Message: "too big: 20000 bytes"}).Description(),
			&FieldError{Index: -1, Rule: "max_bytes", Message: "too big: 20000 bytes"}},
		{"element, no message", (&FieldError{Index: 12, Path: "", Rule: "required"}).Description(),
			&FieldError{Index: 12, Rule: "required"}},
		{"escaped path", (&FieldError{Index: 3, Path: "/a\u202eb", Rule: "duplicate_key", Message: "duplicate key"}).Description(),
			&FieldError{Index: 3, Path: "/aU+202Eb", Rule: "duplicate_key", Message: "duplicate key"}},
		{"no rule", "authorization_details[1]: type payment_initiation is not allowed for this client",
			&FieldError{Index: 1, Message: "type payment_initiation is not allowed for this client"}},
		{"other text", "scope is required", nil},
		{"bad index", "authorization_details[x]/a: required", nil},
		{"index with a sign", "authorization_details[+1]/a: required", nil},
		{"no separator", "authorization_details[0]/a", nil},
		{"path without slash", "authorization_detailsX: required", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseDescription(tt.desc)
			if tt.want == nil {
				if ok {
					t.Fatalf("ParseDescription(%q) = %+v, want false", tt.desc, got)
				}
				return
			}
			if !ok || *got != *tt.want {
				t.Fatalf("ParseDescription(%q) = %+v, %v; want %+v", tt.desc, got, ok, tt.want)
			}
		})
	}
}

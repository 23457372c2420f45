package web

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestBindingMessageDisplaySafety: the binding_message is shown to the user
// as the agent sent it, so text that would look other than it is (invisible,
// format, direction-changing or look-alike characters from another script)
// is refused with invalid_binding_message; ordinary text in any one script
// passes.
func TestBindingMessageDisplaySafety(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		name, message string
		ok            bool
	}{
		{"ASCII", "Pay invoice 2024-117 (ACME Corp.)", true},
		{"backslash", `Deploy C:\builds\app`, true},
		{"German umlaut", "Zahlung an Müller", true},
		{"Japanese", "コーヒー代の支払いを承認してください", true},
		{"Japanese with Latin", "ACME株式会社へのお支払い", true},
		{"all Cyrillic", "Оплата счёта", true},
		{"emoji", "Ship it 🚀", true},

		{"three Hangul fillers", "\u3164\u3164\u3164", false},
		{"Hangul filler in text", "Pay\u3164Alice", false},
		{"Braille blank", "Pay \u2800 Alice", false},
		{"variation selector", "Approve \u2714\ufe0f", false},
		{"Cyrillic A in a Latin word", "\u0410pple Store", false},
		{"Greek omicron in a Latin word", "G\u03bfogle", false},
		{"right-to-left override", "Invoice \u202efdp.exe", false},
		{"right-to-left isolate", "Pay \u2067Alice\u2069", false},
		{"left-to-right mark", "Pay\u200e Alice", false},
		{"zero-width joiner", "Ali\u200dce", false},
		{"zero-width non-joiner", "Ali\u200cce", false},
		{"zero-width space", "Ali\u200bce", false},
		{"byte order mark", "\ufeffPay Alice", false},
		{"soft hyphen", "Pay Al\u00adice", false},
		{"tag character", "Pay Alice\U000E0041", false},
		{"unassigned", "Pay Alice\u0378", false},
		{"leading combining mark", "\u0338Pay Alice", false},
		{"control character", "pay\x07now", false},
		{"newline", "line\nbreak", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.postForm("/bc-authorize", &e.agent, url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"},
				"authorization_details": {paymentEUR}, "binding_message": {tc.message}})
			if tc.ok {
				if r.Status != http.StatusOK {
					t.Fatalf("%q: %d %s, want 200", tc.message, r.Status, r.Body)
				}
				return
			}
			m := r.JSON(t)
			if r.Status != http.StatusBadRequest || m["error"] != "invalid_binding_message" {
				t.Fatalf("%q: %d %s, want 400 invalid_binding_message", tc.message, r.Status, r.Body)
			}
			// RFC 6749 §5.2: the description is printable ASCII without quotes
			// or backslashes, so the offending character is named, not echoed.
			desc, _ := m["error_description"].(string)
			if desc == "" || strings.ContainsFunc(desc, func(c rune) bool { return c < 0x20 || c > 0x7e || c == '"' || c == '\\' }) {
				t.Errorf("error_description %q is empty or not RFC 6749 section 5.2 text", desc)
			}
		})
	}
}

package rar

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestCheckDisplayText: text passes exactly when the summaries would show it
// unchanged (a backslash aside), and the error names the rule and the
// character.
func TestCheckDisplayText(t *testing.T) {
	tests := []struct {
		name, in string
		rule     string // "" when it passes
		r        rune
		scripts  []string
	}{
		{"empty", "", "", 0, nil},
		{"ASCII", "Pay invoice 2024-117", "", 0, nil},
		{"backslash", `C:\app`, "", 0, nil},
		{"accents", "Zahlung an Müller", "", 0, nil},
		{"Japanese", "コーヒー代の支払い", "", 0, nil},
		{"Korean with Latin", "ACME 결제", "", 0, nil},
		{"all Greek", "Πληρωμή", "", 0, nil},
		{"invalid UTF-8", "Pay \xff", TextInvalidUTF8, 0xfffd, nil},
		{"tab", "Pay\tAlice", TextControl, '\t', nil},
		{"C1 control", "Pay\u009bAlice", TextControl, 0x9b, nil},
		{"Hangul filler", "\u3164\u3164\u3164", TextInvisible, 0x3164, nil},
		{"Braille blank", "\u2800", TextInvisible, 0x2800, nil},
		{"variation selector", "\u2714\ufe0f", TextInvisible, 0xfe0f, nil},
		{"right-to-left override", "a\u202eb", TextInvisible, 0x202e, nil},
		{"zero-width joiner", "a\u200db", TextInvisible, 0x200d, nil},
		{"private use", "a\ue000", TextInvisible, 0xe000, nil},
		{"leading combining mark", "\u0301a", TextInvisible, 0x301, nil},
		{"Cyrillic in Latin", "\u0410pple", TextMixedScript, 0, []string{"Cyrillic", "Latin"}},
		{"Greek in Latin", "G\u03bfogle", TextMixedScript, 0, []string{"Latin", "Greek"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDisplayText(tc.in)
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("CheckDisplayText(%q) = %v, want nil", tc.in, err)
				}
				if s := makeSafe(tc.in); !strings.Contains(tc.in, `\`) && (s.text != tc.in || len(s.flags) > 0) {
					t.Errorf("makeSafe(%q) = %+v: it passes here but would be changed or flagged", tc.in, s)
				}
				return
			}
			var te *TextError
			if !errors.As(err, &te) {
				t.Fatalf("CheckDisplayText(%q) = %v, want a *TextError", tc.in, err)
			}
			if te.Rule != tc.rule || te.Rune != tc.r || !slices.Equal(te.Scripts, tc.scripts) {
				t.Errorf("CheckDisplayText(%q) = %+v, want rule %s, rune %U, scripts %v", tc.in, te, tc.rule, tc.r, tc.scripts)
			}
			if len(makeSafe(tc.in).flags) == 0 {
				t.Errorf("makeSafe(%q) flags nothing, but CheckDisplayText refuses it", tc.in)
			}
		})
	}
}

package rar

import "errors"

// errIBANChecksum marks an IBAN whose shape is right but whose check digits
// are not; the validator reports it as rule "iban_checksum".
var errIBANChecksum = errors.New("IBAN check digits do not match")

var errIBANShape = errors.New("IBAN must be 2 capital letters, 2 check digits and 11 to 30 capital letters or digits, without spaces")

// validateIBANFormat implements the "iban" format: the electronic form of an
// ISO 13616 IBAN with valid ISO 7064 mod 97-10 check digits. Non-strings are
// left to the "type" keyword.
func validateIBANFormat(v any) error {
	s, ok := v.(string)
	if !ok {
		return nil
	}
	return checkIBAN(s)
}

func checkIBAN(s string) error {
	if len(s) < 15 || len(s) > 34 {
		return errIBANShape
	}
	for i := range len(s) {
		c := s[i]
		switch {
		case i < 2 && (c < 'A' || c > 'Z'):
			return errIBANShape
		case i >= 2 && i < 4 && (c < '0' || c > '9'):
			return errIBANShape
		case i >= 4 && !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'):
			return errIBANShape
		}
	}
	// ISO 13616-1 §B: move the first four characters to the end, replace
	// letters by 10..35, and the number mod 97 must be 1.
	rem := 0
	for i := range len(s) {
		c := s[(i+4)%len(s)]
		if c >= 'A' {
			rem = (rem*100 + int(c-'A'+10)) % 97
		} else {
			rem = (rem*10 + int(c-'0')) % 97
		}
	}
	if rem != 1 {
		return errIBANChecksum
	}
	return nil
}

package rar

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Every amount the server reads goes through the one parser below: a type's
// declared amount, each field shown as money and the risk rules' amount().
// So what the approver sees, what the rules compare and what the velocity
// counts add up are one number, and an amount that is not plainly one is
// refused where it enters rather than read as something else.

// maxMinorDigits bounds an amount written in its currency's minor units:
// fewer than 10^17 of them (15 digits before the point in EUR, 17 in JPY), so
// that the amounts of a whole request add up exactly in an int64.
const (
	maxMinorDigits = 17
	maxMinor       = 100_000_000_000_000_000 // 10^maxMinorDigits
)

// A request's sum in one currency, MaxElements amounts below maxMinor, fits
// an int64 (this constant would be negative, and not compile, otherwise).
const _ uint64 = math.MaxInt64/MaxElements - maxMinor

// Amount is a sum of money: a non-negative decimal in an ISO 4217 currency,
// kept exactly as a whole number of the currency's minor units.
type Amount struct {
	Currency string // ISO 4217 alphabetic code, e.g. "EUR"
	Minor    int64  // in minor units: 500.00 EUR is 50000, 500 JPY is 500, 1.250 BHD is 1250
}

// String writes the amount in major units with as many decimals as the
// currency has minor units: "500.00", "500", "1.250".
func (a Amount) String() string {
	exp := currencies[a.Currency].exponent
	s := strconv.FormatInt(a.Minor, 10)
	if exp == 0 {
		return s
	}
	if len(s) <= exp {
		s = strings.Repeat("0", exp-len(s)+1) + s
	}
	return s[:len(s)-exp] + "." + s[len(s)-exp:]
}

// Float64 is the amount in major units as a double, for comparisons: the
// double nearest the exact value (a single rounding, as the minor units are
// below 2^53 for any amount under 90 trillion EUR).
func (a Amount) Float64() float64 {
	return float64(a.Minor) / pow10[currencies[a.Currency].exponent]
}

var pow10 = [...]float64{1, 10, 100, 1000, 10000}

// ParseAmount reads amount in currency as RFC 9396 §2 and ISO 20022 write
// amounts: a string of digits with an optional fraction ("500.00", "0.5",
// "12"); no sign, exponent, spaces, separators or leading zeros; at most as
// many decimals as the currency has minor units (ISO 4217) and fewer than
// 10^17 minor units. currency is an active ISO 4217 code with minor units.
func ParseAmount(amount, currency string) (Amount, error) {
	a, fe := parseAmount(amount, currency)
	if fe != nil {
		return Amount{}, errors.New("rar: " + strings.TrimPrefix(fe.Path, "/") + ": " + fe.Message)
	}
	return a, nil
}

// ParseDecimal reads a bare decimal string by the same rules as
// ParseAmount, without a currency to bound its decimals: at most 17 digits
// in all. It returns the nearest double.
func ParseDecimal(s string) (float64, error) {
	whole, frac, ok := splitDecimal(s)
	if !ok {
		return 0, errors.New("rar: amount: " + decimalMessage(s))
	}
	if len(whole)+len(frac) > maxMinorDigits {
		return 0, fmt.Errorf("rar: amount: has more than %d digits", maxMinorDigits)
	}
	// The syntax is a subset of what ParseFloat reads, and it rounds once.
	return strconv.ParseFloat(s, 64)
}

// amountObject reads an amount object, {"currency": "EUR", "amount":
// "500.00"}. A failure is a *FieldError whose Path names the failing member
// relative to the object ("" for the object itself) and whose Index is 0.
func amountObject(v any) (Amount, *FieldError) {
	m, ok := v.(map[string]any)
	if !ok {
		return Amount{}, &FieldError{Rule: "type", Message: "money must be an object with currency and amount"}
	}
	code, _ := m["currency"].(string)
	if _, ok := currencies[code]; !ok {
		return Amount{}, &FieldError{Path: "/currency", Rule: "currency", Message: errCurrency.Error()}
	}
	// A JSON number would reach us through a double (RFC 8785 §3.2.2.3):
	// amounts are strings, as RFC 9396 §2 writes them.
	s, ok := m["amount"].(string)
	if !ok {
		return Amount{}, &FieldError{Path: "/amount", Rule: "amount", Message: decimalMessage("")}
	}
	return parseAmount(s, code)
}

// parseAmount is ParseAmount, failing with a *FieldError as amountObject
// does.
func parseAmount(s, code string) (Amount, *FieldError) {
	cur, ok := currencies[code]
	if !ok {
		return Amount{}, &FieldError{Path: "/currency", Rule: "currency", Message: errCurrency.Error()}
	}
	whole, frac, ok := splitDecimal(s)
	if !ok {
		return Amount{}, &FieldError{Path: "/amount", Rule: "amount", Message: decimalMessage(s)}
	}
	if len(frac) > cur.exponent {
		return Amount{}, &FieldError{Path: "/amount", Rule: "amount_precision",
			Message: fmt.Sprintf("%s has %d decimal places, amount has %d", code, cur.exponent, len(frac))}
	}
	if len(whole)+cur.exponent > maxMinorDigits {
		return Amount{}, &FieldError{Path: "/amount", Rule: "amount_digits",
			Message: fmt.Sprintf("%s amounts have at most %d digits before the decimal point", code, maxMinorDigits-cur.exponent)}
	}
	var minor int64
	for _, digits := range []string{whole, frac} {
		for i := range len(digits) {
			minor = minor*10 + int64(digits[i]-'0')
		}
	}
	for range cur.exponent - len(frac) {
		minor *= 10
	}
	return Amount{Currency: code, Minor: minor}, nil
}

// splitDecimal splits a decimal string into its whole and fraction digits:
// one or more digits, without a leading zero unless the whole part is 0,
// then optionally a point and one or more digits.
func splitDecimal(s string) (whole, frac string, ok bool) {
	whole, frac, point := strings.Cut(s, ".")
	if !allDigits(whole) || (point && !allDigits(frac)) || (len(whole) > 1 && whole[0] == '0') {
		return "", "", false
	}
	return whole, frac, true
}

func allDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// decimalMessage says what is wrong with s, which is not a decimal string,
// without repeating it.
func decimalMessage(s string) string {
	if strings.HasPrefix(s, "-") {
		return "must not be negative"
	}
	return `must be a decimal string such as "500.00": digits, optionally a point and more digits`
}

// Amount returns the element's amount: the member its type declares as its
// amount ([Type.Amount]), when the type declares one and the element has it.
func (e Element) Amount() (Amount, bool) {
	return e.amount, e.amount.Currency != ""
}

// Totals adds up the elements' amounts per currency, exactly, in the order
// of the currency codes. Amounts of different currencies are never added. It
// is empty when no element has an amount.
func (d *Details) Totals() []Amount {
	var out []Amount
	for _, e := range d.Elements {
		a, ok := e.Amount()
		if !ok {
			continue
		}
		i, found := slices.BinarySearchFunc(out, a.Currency, func(x Amount, c string) int { return strings.Compare(x.Currency, c) })
		if found {
			out[i].Minor += a.Minor
		} else {
			out = slices.Insert(out, i, a)
		}
	}
	return out
}

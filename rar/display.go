package rar

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"unicode/utf8"
)

// rowFormats are the values DisplayField.Format may take.
var rowFormats = map[string]bool{"": true, "list": true, "money": true, "iban": true, "short": true, "number": true}

// funcMap is the summary templates' function map; see the package
// documentation. Every function accepts any value and never fails, so a
// template that compiled cannot fail on a valid element.
var funcMap = template.FuncMap{
	"money":  moneyFunc,
	"iban":   ibanFunc,
	"short":  shortFunc,
	"list":   listFunc,
	"number": numberFunc,
	"plural": pluralFunc,
}

// sentenceValueUnits caps each string inserted in a sentence; the rows show
// values in full.
const sentenceValueUnits = 64

// sentenceTree copies an element with every string made safe and shortened
// for use as template data.
func sentenceTree(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = sentenceTree(e)
		}
		return m
	case []any:
		a := make([]any, len(v))
		for i, e := range v {
			a[i] = sentenceTree(e)
		}
		return a
	case string:
		return shorten(makeSafe(v).text, sentenceValueUnits/2, sentenceValueUnits/2-1)
	}
	return v
}

// moneyFunc formats {"currency": "EUR", "amount": "500"} as "500.00 EUR".
func moneyFunc(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return plain(v)
	}
	a, err := amountObject(m)
	if err != nil {
		code, _ := m["currency"].(string)
		return strings.TrimSpace(plain(m["amount"]) + " " + code)
	}
	return formatMoney(a.String(), a.Currency)
}

// formatMoney writes a decimal amount with thousands separators and as many
// decimals as the currency's ISO 4217 minor units. It pads, never rounds:
// an amount with more decimals keeps them all.
func formatMoney(amount, code string) string {
	neg := strings.HasPrefix(amount, "-")
	amount = strings.TrimPrefix(amount, "-")
	intPart, frac, _ := strings.Cut(amount, ".")
	exp := len(frac)
	if c, ok := currencies[code]; ok {
		exp = max(exp, c.exponent)
	}
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	b.WriteString(groupThousands(intPart))
	if exp > 0 {
		b.WriteByte('.')
		b.WriteString(frac)
		b.WriteString(strings.Repeat("0", exp-len(frac)))
	}
	if code != "" {
		b.WriteByte(' ')
		b.WriteString(code)
	}
	return b.String()
}

func groupThousands(digits string) string {
	if len(digits) <= 3 {
		return digits
	}
	var b strings.Builder
	lead := len(digits) % 3
	if lead > 0 {
		b.WriteString(digits[:lead])
	}
	for i := lead; i < len(digits); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(digits[i : i+3])
	}
	return b.String()
}

// ibanFunc shortens an IBAN to its country, check digits and last four
// characters: "DE89 …3000".
func ibanFunc(v any) string {
	s, ok := v.(string)
	if !ok {
		return plain(v)
	}
	if len(s) < 12 || !isPlainASCII(s) {
		return groupIBAN(s)
	}
	return s[:4] + " …" + s[len(s)-4:]
}

// groupIBAN writes an IBAN in groups of four, its ISO 13616 print form.
func groupIBAN(s string) string {
	if !isPlainASCII(s) || strings.Contains(s, " ") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String()
}

// shortFunc shortens a long identifier in the middle: "3a7bd3e2…8f1e0c9a".
func shortFunc(v any) string {
	return shorten(plain(v), 8, 8)
}

// shorten keeps the first head and last tail units of a safe string, where
// a unit is a character or one of makeSafe's escapes, so an escape is never
// cut in half.
func shorten(s string, head, tail int) string {
	starts := unitStarts(s)
	if len(starts) <= head+tail+1 {
		return s
	}
	return s[:starts[head]] + "…" + s[starts[len(starts)-tail]:]
}

func unitStarts(s string) []int {
	var starts []int
	for i := 0; i < len(s); {
		starts = append(starts, i)
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == '\\':
			i += 2
		case s[i] == '\\' && i+6 <= len(s) && s[i+1] == 'u':
			i += 6
		case s[i] == '\\' && i+10 <= len(s) && s[i+1] == 'U':
			i += 10
		default:
			_, n := utf8.DecodeRuneInString(s[i:])
			i += n
		}
	}
	return starts
}

// listFunc joins a list readably: "a, b and c", or "a, b, c and 2 more".
func listFunc(v any) string {
	a, ok := v.([]any)
	if !ok {
		return plain(v)
	}
	const shown = 3
	items := make([]string, 0, shown)
	for i, e := range a {
		if i == shown {
			break
		}
		items = append(items, plain(e))
	}
	switch rest := len(a) - len(items); {
	case len(items) == 0:
		return ""
	case rest > 0:
		return strings.Join(items, ", ") + " and " + strconv.Itoa(rest) + " more"
	case len(items) == 1:
		return items[0]
	default:
		return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
	}
}

// numberFunc writes an integer with thousands separators: "1,200,000".
func numberFunc(v any) string {
	n, ok := v.(json.Number)
	if !ok {
		return plain(v)
	}
	s := string(n)
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return s
	}
	return s[:len(s)-len(digits)] + groupThousands(digits)
}

// pluralFunc writes a count with its noun: "1 domain", "3 domains".
func pluralFunc(n any, one, many string) string {
	if num, ok := n.(json.Number); ok && num == "1" {
		return "1 " + one
	}
	return numberFunc(n) + " " + many
}

// plain writes a value from a safe tree as text.
func plain(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return string(v)
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return "null"
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = plain(e)
		}
		return strings.Join(parts, ", ")
	case map[string]any:
		keys := slices.Sorted(maps.Keys(v))
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = makeSafe(k).text + ": " + plain(v[k])
		}
		return "{" + strings.Join(parts, "; ") + "}"
	}
	return ""
}

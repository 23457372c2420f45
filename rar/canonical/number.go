package canonical

import (
	"math"
	"strconv"

	"github.com/gowebpki/jcs"
)

// exactNumber returns the RFC 8785 §3.2.2.3 spelling of a JSON number
// literal, and false when that spelling would denote a different decimal
// value than the literal.
//
// RFC 8785 §3.2.2.3 serializes numbers as IEEE 754 doubles in their shortest
// round-trip form, so 12345678901234567890 would be hashed, stored and shown
// as 12345678901234567000. We accept a literal only when its decimal value
// equals the value of that canonical spelling: "1.0", "1e2", "0.1" and "0.5"
// are accepted, "12345678901234567890" and "0.1000000000000000055511151231257827"
// are not. What the user sees is then exactly what the agent sent.
func exactNumber(lit string) (string, bool) {
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil || math.IsInf(f, 0) {
		return "", false
	}
	canon, err := jcs.NumberToJSON(f)
	if err != nil {
		return "", false
	}
	a, ok := normDecimal(lit)
	if !ok {
		return "", false
	}
	b, ok := normDecimal(canon)
	if !ok || a != b {
		return "", false
	}
	return canon, true
}

// decimal is a number as sign, significant digits and exponent, so that
// equal values have equal decimals: value = 0.digits × 10^exp, without
// leading or trailing zeros in digits. Zero is the zero decimal whatever its
// sign.
type decimal struct {
	neg    bool
	digits [17]byte
	n      int
	exp    int
}

// normDecimal normalizes a JSON number literal. It fails for literals with
// more than 17 significant digits, which no shortest double spelling has.
func normDecimal(s string) (decimal, bool) {
	var d decimal
	i := 0
	if i < len(s) && s[i] == '-' {
		d.neg = true
		i++
	}
	pointSeen := false
	intDigits := 0 // digits before the point, counting from the first significant one
	leadingFracZeros := 0
	pendingZeros := 0 // zeros after the last non-zero digit, not yet stored
	for ; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			pointSeen = true
			continue
		}
		if c < '0' || c > '9' {
			break
		}
		if d.n == 0 && c == '0' {
			if pointSeen {
				leadingFracZeros++
			}
			continue
		}
		if !pointSeen {
			intDigits++
		}
		if c == '0' {
			pendingZeros++
			continue
		}
		if d.n+pendingZeros+1 > len(d.digits) {
			return d, false
		}
		for ; pendingZeros > 0; pendingZeros-- {
			d.digits[d.n] = '0'
			d.n++
		}
		d.digits[d.n] = c
		d.n++
	}
	if d.n == 0 {
		return decimal{}, true
	}
	exp := 0
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		neg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			neg = s[i] == '-'
			i++
		}
		for ; i < len(s); i++ {
			if exp < 1e6 { // saturate: anything this large fails elsewhere
				exp = exp*10 + int(s[i]-'0')
			}
		}
		if neg {
			exp = -exp
		}
	}
	if intDigits > 0 {
		d.exp = intDigits + exp
	} else {
		d.exp = -leadingFracZeros + exp
	}
	return d, true
}

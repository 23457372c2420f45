package canonical

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"unicode/utf8"
)

// Decode reads an authorization_details value (RFC 9396 §2) under the limits
// and rules of the package documentation and returns its elements: objects
// as map[string]any, arrays as []any, strings as string, numbers as
// json.Number in their RFC 8785 spelling, true, false and null as bool and
// nil. Any rejection is a *FieldError.
func Decode(raw []byte) ([]map[string]any, error) {
	if len(raw) > MaxBytes {
		return nil, wholeError("max_bytes", fmt.Sprintf("authorization_details is %d bytes, at most %d are allowed", len(raw), MaxBytes))
	}
	elems, ferr := decodeArray(raw)
	if ferr != nil {
		return nil, ferr
	}
	return elems, nil
}

// Canonicalize returns the RFC 8785 (JCS) form of decoded elements, as
// Decode returns them, and each element's own canonical form: read-only
// slices of the same bytes. sizeHint is the length of the raw input.
func Canonicalize(elems []map[string]any, sizeHint int) (whole []byte, each []json.RawMessage) {
	// RFC 8785 §3.2 over the whole array: "[" elements joined by "," "]".
	buf := make([]byte, 0, sizeHint+16)
	each = make([]json.RawMessage, len(elems))
	buf = append(buf, '[')
	for i, v := range elems {
		if i > 0 {
			buf = append(buf, ',')
		}
		start := len(buf)
		buf = appendCanonical(buf, v)
		each[i] = buf[start:len(buf):len(buf)]
	}
	buf = append(buf, ']')
	return buf[:len(buf):len(buf)], each
}

// Transform returns the canonical form of an authorization_details value:
// Decode, then Canonicalize.
func Transform(raw []byte) ([]byte, error) {
	elems, err := Decode(raw)
	if err != nil {
		return nil, err
	}
	whole, _ := Canonicalize(elems, len(raw))
	return whole, nil
}

// DetailsHash returns the authorization_details_hash of raw: Hash of its
// canonical form. It is what the server puts in the token's
// authorization_details_hash claim and compares at /redeem, whatever the
// request types registered. Any rejection is a *FieldError.
func DetailsHash(raw []byte) (string, error) {
	c, err := Transform(raw)
	if err != nil {
		return "", err
	}
	return Hash(c), nil
}

// Hash returns the authorization_details_hash of a canonical form: base64url
// without padding (RFC 4648 §5) of its SHA-256 digest.
func Hash(canonical []byte) string {
	sum := sha256.Sum256(canonical)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// appendCanonical writes a decoded value in RFC 8785 (JCS) form. The tree
// comes from decoder, so its numbers are already in their §3.2.2.3 spelling
// and its strings are valid UTF-8; tests compare the output with
// github.com/gowebpki/jcs.
func appendCanonical(b []byte, v any) []byte {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		// RFC 8785 §3.2.3: members sorted by their names as arrays of UTF-16
		// code units.
		slices.SortFunc(keys, compareUTF16)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCanonicalString(b, k)
			b = append(b, ':')
			b = appendCanonical(b, v[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCanonical(b, e)
		}
		return append(b, ']')
	case string:
		return appendCanonicalString(b, v)
	case json.Number:
		return append(b, v...)
	case bool:
		if v {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	case nil:
		return append(b, "null"...)
	}
	panic("rar: appendCanonical: unexpected type") // unreachable: the decoder builds the tree
}

// appendCanonicalString follows RFC 8785 §3.2.2.2: only '"', '\\' and
// control characters are escaped, with the short forms where JSON has them
// and lowercase \u00xx otherwise; everything else is written as UTF-8.
func appendCanonicalString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// compareUTF16 orders strings by their UTF-16 code units. UTF-8 byte order
// equals code point order, which differs from UTF-16 order only between
// supplementary characters (surrogate pairs, 0xD800-0xDFFF) and U+E000-U+FFFF.
func compareUTF16(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			ua, ub := utf16First(ra), utf16First(rb)
			if ua == ub {
				return int(ra - rb)
			}
			return int(ua - ub)
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

// utf16First returns the first UTF-16 code unit of r. Two different
// supplementary runes with the same high surrogate order like their low
// surrogates, which order like the runes themselves.
func utf16First(r rune) rune {
	if r >= 0x10000 {
		return 0xd800 + (r-0x10000)>>10
	}
	return r
}

// Object returns the RFC 8785 (JCS) form of one JSON object, read by the
// rules of Decode — duplicate keys, invalid UTF-8, U+0000, unpaired
// surrogate escapes, nesting deeper than MaxDepth-1 and numbers whose
// canonical spelling is a different literal are rejected — but without
// Decode's size limit. The audit trail canonicalizes its events with it.
func Object(raw []byte) ([]byte, error) {
	d := decoder{data: raw, str: string(raw), elem: -1, frames: make([]frame, 0, MaxDepth)}
	d.skipSpace()
	if d.peek() != '{' {
		return nil, wholeError("type", "want a JSON object")
	}
	v, ferr := d.object(2)
	if ferr != nil {
		return nil, ferr
	}
	d.skipSpace()
	if d.pos != len(d.data) {
		return nil, wholeError("syntax", "unexpected data after the object")
	}
	return appendCanonical(make([]byte, 0, len(raw)), v), nil
}

// AppendString appends s, which must be valid UTF-8, as an RFC 8785
// string (§3.2.2.2): only '"', '\' and control characters escaped.
func AppendString(b []byte, s string) []byte { return appendCanonicalString(b, s) }

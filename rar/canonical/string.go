package canonical

import (
	"unicode/utf16"
	"unicode/utf8"
)

// string reads a string. RFC 8259 §8.1 requires UTF-8 and RFC 8785 §3.2.2.2
// forbids lone surrogates, so invalid bytes and unpaired \uD800-\uDFFF
// escapes are rejected rather than replaced.
func (d *decoder) string() (string, *FieldError) {
	d.pos++ // '"'
	start := d.pos
	// Fast path: no escapes.
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			s := d.str[start:d.pos]
			d.pos++
			return s, nil
		case c == '\\':
			return d.escapedString(start)
		case c < 0x20:
			return "", d.fail("syntax", "control character in string")
		case c < utf8.RuneSelf:
			d.pos++
		default:
			r, size := utf8.DecodeRune(d.data[d.pos:])
			if r == utf8.RuneError && size <= 1 {
				return "", d.fail("invalid_utf8", "invalid UTF-8 in string")
			}
			d.pos += size
		}
	}
	return "", d.fail("syntax", "unterminated string")
}

func (d *decoder) escapedString(start int) (string, *FieldError) {
	b := append(d.buf[:0], d.data[start:d.pos]...)
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			d.pos++
			d.buf = b
			return string(b), nil
		case c == '\\':
			r, err := d.escape()
			if err != nil {
				return "", err
			}
			b = utf8.AppendRune(b, r)
		case c < 0x20:
			return "", d.fail("syntax", "control character in string")
		case c < utf8.RuneSelf:
			b = append(b, c)
			d.pos++
		default:
			r, size := utf8.DecodeRune(d.data[d.pos:])
			if r == utf8.RuneError && size <= 1 {
				return "", d.fail("invalid_utf8", "invalid UTF-8 in string")
			}
			b = append(b, d.data[d.pos:d.pos+size]...)
			d.pos += size
		}
	}
	return "", d.fail("syntax", "unterminated string")
}

// escape reads one escape sequence starting at the backslash.
func (d *decoder) escape() (rune, *FieldError) {
	if d.pos+1 >= len(d.data) {
		return 0, d.fail("syntax", "unterminated escape")
	}
	c := d.data[d.pos+1]
	d.pos += 2
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
	default:
		d.pos -= 2
		return 0, d.fail("syntax", "invalid escape")
	}
	r, ok := d.hex4()
	if !ok {
		return 0, d.fail("syntax", "invalid \\u escape")
	}
	if r == 0 {
		// U+0000 has no place in a request a person reads, and PostgreSQL
		// text and jsonb cannot store it.
		return 0, d.fail("invalid_utf8", "U+0000 is not allowed in strings")
	}
	if !utf16.IsSurrogate(r) {
		return r, nil
	}
	if r < 0xdc00 && d.pos+1 < len(d.data) && d.data[d.pos] == '\\' && d.data[d.pos+1] == 'u' {
		d.pos += 2
		if lo, ok := d.hex4(); ok && lo >= 0xdc00 && lo <= 0xdfff {
			return utf16.DecodeRune(r, lo), nil
		}
	}
	return 0, d.fail("invalid_utf8", "unpaired surrogate escape")
}

func (d *decoder) hex4() (rune, bool) {
	if len(d.data)-d.pos < 4 {
		return 0, false
	}
	var r rune
	for _, c := range d.data[d.pos : d.pos+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	d.pos += 4
	return r, true
}

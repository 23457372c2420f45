package canonical

import (
	"encoding/json"
	"strconv"
)

// decoder reads an authorization_details value in one pass, enforcing the
// limits, rejecting duplicate keys, invalid UTF-8 and numbers that would not
// survive canonicalization, and building the decoded tree on the way.
// Objects decode to map[string]any, arrays to []any, strings to string,
// numbers to json.Number in their RFC 8785 spelling, and true, false, null to
// bool and nil.
type decoder struct {
	data   []byte
	str    string // data as one string: escape-free strings are slices of it
	pos    int
	elem   int     // index of the element being read, -1 outside elements
	frames []frame // where we are inside the current element, for errors
	buf    []byte  // scratch space for strings with escapes
}

type frame struct {
	key   string
	index int
	array bool
}

// decodeArray reads the outer array. The size limit is checked by the caller
// before anything is read.
func decodeArray(data []byte) ([]map[string]any, *FieldError) {
	d := decoder{data: data, str: string(data), elem: -1, frames: make([]frame, 0, MaxDepth)}
	d.skipSpace()
	if d.pos == len(d.data) {
		return nil, wholeError("syntax", "empty input, want a JSON array")
	}
	if d.data[d.pos] != '[' {
		return nil, wholeError("type", "authorization_details must be a JSON array")
	}
	d.pos++
	d.skipSpace()
	if d.peek() == ']' {
		return nil, wholeError("min_elements", "authorization_details must not be empty")
	}
	var elems []map[string]any
	for {
		if len(elems) == MaxElements {
			return nil, wholeError("max_elements", "at most "+strconv.Itoa(MaxElements)+" elements are allowed")
		}
		d.elem = len(elems)
		d.skipSpace()
		if d.peek() != '{' {
			if d.pos == len(d.data) {
				return nil, d.fail("syntax", "unexpected end of input")
			}
			if _, err := d.value(2); err != nil {
				return nil, err
			}
			return nil, d.failAt("type", "element must be a JSON object")
		}
		v, err := d.object(2)
		if err != nil {
			return nil, err
		}
		elems = append(elems, v)
		d.elem = -1
		d.skipSpace()
		switch d.peek() {
		case ',':
			d.pos++
			continue
		case ']':
			d.pos++
		default:
			return nil, d.fail("syntax", "want ',' or ']' after an element")
		}
		break
	}
	d.skipSpace()
	if d.pos != len(d.data) {
		return nil, wholeError("syntax", "unexpected data after the array")
	}
	return elems, nil
}

func (d *decoder) peek() byte {
	if d.pos < len(d.data) {
		return d.data[d.pos]
	}
	return 0
}

func (d *decoder) skipSpace() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// fail reports a problem at the current location inside the current element.
func (d *decoder) fail(rule, msg string) *FieldError {
	if d.elem < 0 {
		return wholeError(rule, msg)
	}
	return &FieldError{Index: d.elem, Path: d.path(), Rule: rule, Message: msg + " at byte " + strconv.Itoa(d.pos)}
}

// failAt is fail without the byte offset, for problems with a whole value.
func (d *decoder) failAt(rule, msg string) *FieldError {
	return &FieldError{Index: d.elem, Path: d.path(), Rule: rule, Message: msg}
}

func (d *decoder) path() string {
	tokens := make([]string, len(d.frames))
	for i, f := range d.frames {
		if f.array {
			tokens[i] = strconv.Itoa(f.index)
		} else {
			tokens[i] = f.key
		}
	}
	return Pointer(tokens...)
}

// value reads any JSON value at the given container depth.
func (d *decoder) value(depth int) (any, *FieldError) {
	switch c := d.peek(); {
	case c == '{':
		return d.object(depth)
	case c == '[':
		return d.array(depth)
	case c == '"':
		return d.string()
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	case d.pos == len(d.data):
		return nil, d.fail("syntax", "unexpected end of input")
	default:
		return nil, d.fail("syntax", "invalid character")
	}
}

func (d *decoder) literal(lit string) *FieldError {
	if len(d.data)-d.pos < len(lit) || string(d.data[d.pos:d.pos+len(lit)]) != lit {
		return d.fail("syntax", "invalid literal")
	}
	d.pos += len(lit)
	return nil
}

// object reads an object. RFC 8259 §4 leaves duplicate names undefined; we
// reject them at every level because two parsers could disagree about which
// one the user approved (RFC 8785 §3.1 likewise requires unique names).
func (d *decoder) object(depth int) (map[string]any, *FieldError) {
	if depth > MaxDepth {
		return nil, d.failAt("max_depth", "nesting deeper than "+strconv.Itoa(MaxDepth)+" levels")
	}
	d.pos++ // '{'
	m := make(map[string]any, 8)
	d.skipSpace()
	if d.peek() == '}' {
		d.pos++
		return m, nil
	}
	top := len(d.frames)
	for {
		// While reading a key, errors point at the object itself.
		d.frames = d.frames[:top]
		d.skipSpace()
		if d.peek() != '"' {
			return nil, d.fail("syntax", "want a string key")
		}
		k, err := d.string()
		if err != nil {
			return nil, err
		}
		d.frames = append(d.frames, frame{key: k})
		if _, dup := m[k]; dup {
			return nil, d.failAt("duplicate_key", "duplicate key")
		}
		d.skipSpace()
		if d.peek() != ':' {
			return nil, d.fail("syntax", "want ':' after a key")
		}
		d.pos++
		d.skipSpace()
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		m[k] = v
		d.skipSpace()
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			d.frames = d.frames[:top]
			return m, nil
		default:
			return nil, d.fail("syntax", "want ',' or '}' in an object")
		}
	}
}

func (d *decoder) array(depth int) ([]any, *FieldError) {
	if depth > MaxDepth {
		return nil, d.failAt("max_depth", "nesting deeper than "+strconv.Itoa(MaxDepth)+" levels")
	}
	d.pos++ // '['
	a := []any{}
	d.skipSpace()
	if d.peek() == ']' {
		d.pos++
		return a, nil
	}
	d.frames = append(d.frames, frame{array: true})
	top := len(d.frames) - 1
	for i := 0; ; i++ {
		d.frames[top].index = i
		d.skipSpace()
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		d.skipSpace()
		switch d.peek() {
		case ',':
			d.pos++
		case ']':
			d.pos++
			d.frames = d.frames[:top]
			return a, nil
		default:
			return nil, d.fail("syntax", "want ',' or ']' in an array")
		}
	}
}

// number reads a number literal (RFC 8259 §6 grammar) and returns it in its
// RFC 8785 §3.2.2.3 spelling, or rejects it when that spelling would mean a
// different value (see exactNumber).
func (d *decoder) number() (json.Number, *FieldError) {
	start := d.pos
	if d.peek() == '-' {
		d.pos++
	}
	switch c := d.peek(); {
	case c == '0':
		d.pos++
	case c >= '1' && c <= '9':
		d.digits()
	default:
		return "", d.fail("syntax", "invalid number")
	}
	if d.peek() == '.' {
		d.pos++
		if d.digits() == 0 {
			return "", d.fail("syntax", "invalid number")
		}
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.pos++
		if c := d.peek(); c == '+' || c == '-' {
			d.pos++
		}
		if d.digits() == 0 {
			return "", d.fail("syntax", "invalid number")
		}
	}
	canon, ok := exactNumber(d.str[start:d.pos])
	if !ok {
		return "", d.failAt("precision", "number cannot be represented exactly; send it as a string")
	}
	return json.Number(canon), nil
}

func (d *decoder) digits() int {
	n := 0
	for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
		d.pos++
		n++
	}
	return n
}

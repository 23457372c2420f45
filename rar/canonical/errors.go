package canonical

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// FieldError reports why an authorization_details value was rejected. Index
// is the element's position in the array, or -1 when the problem concerns the
// whole value (size, syntax outside an element, element count). Path is a
// JSON pointer (RFC 6901) within the element, "" for the element itself. Rule
// names the failed check (see the package documentation for the list).
type FieldError struct {
	Index   int
	Path    string
	Rule    string
	Message string
}

// maxErrorPart bounds each part of an error line so that a hostile key or
// value never travels back in full.
const maxErrorPart = 120

// Error returns one line suitable for an OAuth error_description.
//
// RFC 6749 §5.2: "Values for the "error_description" parameter MUST NOT
// include characters outside the set %x20-21 / %x23-5B / %x5D-7E." So
// quotes, backslashes and everything outside printable ASCII are written as
// U+XXXX, and each part is cut at a fixed length.
func (e *FieldError) Error() string { return "rar: " + e.Description() }

// Description is the error without the package prefix: the
// error_description an OAuth client is given.
func (e *FieldError) Description() string {
	var b strings.Builder
	b.WriteString("authorization_details")
	if e.Index >= 0 {
		b.WriteByte('[')
		b.WriteString(strconv.Itoa(e.Index))
		b.WriteByte(']')
	}
	writeDescriptionSafe(&b, e.Path, false)
	b.WriteString(": ")
	writeDescriptionSafe(&b, e.Rule, false)
	if e.Message != "" {
		b.WriteString(": ")
		// The validator quotes values with '"', which the description may
		// not hold; an apostrophe reads the same.
		writeDescriptionSafe(&b, e.Message, true)
	}
	return b.String()
}

// ParseDescription reads back what Description wrote: the error_description
// of an invalid_authorization_details error, for a client that wants the
// element, path and rule. It reports false for text of another form.
// Description is lossy, and so is what this returns: characters outside
// printable ASCII in Path and Message come back as U+XXXX, a part longer
// than 120 characters ends in "...", and a path that itself holds ": " is
// cut there. A description without a rule (the server's "type X is not
// allowed for this client") comes back with Rule "" and the text in Message.
func ParseDescription(desc string) (*FieldError, bool) {
	rest, ok := strings.CutPrefix(desc, "authorization_details")
	if !ok {
		return nil, false
	}
	fe := &FieldError{Index: -1}
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return nil, false
		}
		n, err := strconv.Atoi(rest[1:end])
		if err != nil || n < 0 || strconv.Itoa(n) != rest[1:end] {
			return nil, false
		}
		fe.Index, rest = n, rest[end+1:]
	}
	path, after, ok := strings.Cut(rest, ": ")
	if !ok || (path != "" && path[0] != '/') {
		return nil, false
	}
	fe.Path = path
	if rule, msg, _ := strings.Cut(after, ": "); isRuleName(rule) {
		fe.Rule, fe.Message = rule, msg
	} else {
		fe.Message = after
	}
	return fe, true
}

// isRuleName reports whether s can be a Rule: a check's name, such as
// iban_checksum or additionalProperties.
func isRuleName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// writeDescriptionSafe writes s with what RFC 6749 §5.2 does not allow in an
// error_description written as U+XXXX; with apostrophes set, a double quote
// becomes an apostrophe instead.
func writeDescriptionSafe(b *strings.Builder, s string, apostrophes bool) {
	n := 0
	for i, r := range s {
		if n >= maxErrorPart {
			if i < len(s) {
				b.WriteString("...")
			}
			return
		}
		n++
		switch {
		case r == utf8.RuneError && isInvalidAt(s, i):
			b.WriteString("U+FFFD")
		case r == '"' && apostrophes:
			b.WriteByte('\'')
		case r >= 0x20 && r <= 0x7e && r != '"' && r != '\\':
			b.WriteRune(r)
		default:
			b.WriteString("U+")
			h := strconv.FormatInt(int64(r), 16)
			for range 4 - len(h) {
				b.WriteByte('0')
			}
			b.WriteString(strings.ToUpper(h))
		}
	}
}

func isInvalidAt(s string, i int) bool {
	_, size := utf8.DecodeRuneInString(s[i:])
	return size <= 1
}

func wholeError(rule, msg string) *FieldError {
	return &FieldError{Index: -1, Rule: rule, Message: msg}
}

// Pointer builds a JSON pointer (RFC 6901 §3) from reference tokens, as
// FieldError.Path holds them.
func Pointer(tokens ...string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(escapePointerToken(t))
	}
	return b.String()
}

// escapePointerToken applies RFC 6901 §3: '~' is written "~0" and '/' "~1".
func escapePointerToken(t string) string {
	if !strings.ContainsAny(t, "~/") {
		return t
	}
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(t)
}

package rar

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Row flags.
const (
	FlagEscaped        = "escaped"         // invisible, direction-changing or unassigned characters (or a backslash) shown as escapes
	FlagControlRemoved = "control_removed" // control characters removed
	FlagMixedScript    = "mixed_script"    // letters from scripts that are not normally mixed
	FlagUndeclared     = "undeclared"      // a field the type does not list for display
)

// safe is a string made safe to show, with what was done to it.
type safe struct {
	text    string
	flags   []string
	scripts []string // when mixed: the scripts seen
}

// makeSafe prepares an agent-supplied string for display as plain text.
//
// Unicode Technical Standard #39 and the Trojan Source attacks
// (CVE-2021-42574) show how text can look different from what it is:
// direction overrides and isolates (U+202A-202E, U+2066-2069, U+200E/F,
// U+061C) reorder what follows, zero-width characters (U+200B-200D, U+2060,
// U+FEFF) hide differences, look-alike letters from other scripts imitate
// names. We never render such characters: anything that is not a visible
// character is shown as \uXXXX (never reordered), control characters are
// removed (tab, CR and LF become a space), a backslash is shown as \\ so a
// visible \u always means an escape, and mixed scripts are flagged.
func makeSafe(s string) safe {
	if isPlainASCII(s) {
		return safe{text: s}
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	var escaped, control bool
	var sc scriptSet
	for i, r := range s {
		switch {
		case r == utf8.RuneError && isInvalidAt(s, i):
			b.WriteString(`\uFFFD`)
			escaped = true
		case r == '\\':
			b.WriteString(`\\`)
			escaped = true
		case r == '\t' || r == '\n' || r == '\r':
			b.WriteByte(' ')
			control = true
		case r < 0x20 || (r >= 0x7f && r <= 0x9f):
			control = true
		case i == 0 && unicode.IsMark(r), !unicode.IsGraphic(r), isInvisible(r):
			// A leading mark would combine with the text before the value.
			writeEscape(&b, r)
			escaped = true
		default:
			b.WriteRune(r)
			if unicode.IsLetter(r) {
				sc.add(r)
			}
		}
	}
	out := safe{text: b.String()}
	if escaped {
		out.flags = append(out.flags, FlagEscaped)
	}
	if control {
		out.flags = append(out.flags, FlagControlRemoved)
	}
	if sc.mixed() {
		out.flags = append(out.flags, FlagMixedScript)
		out.scripts = sc.names()
	}
	return out
}

// The rules CheckDisplayText names in a TextError.
const (
	TextInvalidUTF8 = "invalid_utf8"
	TextControl     = "control"      // control characters, tab and line breaks included
	TextInvisible   = "invisible"    // invisible, format, direction-changing or unassigned characters
	TextMixedScript = "mixed_script" // letters from scripts that are not normally mixed
)

// TextError says why CheckDisplayText refuses a text. Rule is one of the
// Text* constants; Rune is the first character at fault (not for
// mixed_script); Scripts, for mixed_script, the scripts seen.
type TextError struct {
	Rule    string
	Rune    rune
	Scripts []string
}

func (e *TextError) Error() string { return "rar: text " + e.Description() }

// Description says what is wrong as a phrase to follow the text's name, fit
// for an OAuth error_description (RFC 6749 §5.2: printable ASCII without
// quotes or backslashes): the character at fault is named, never echoed.
func (e *TextError) Description() string {
	switch e.Rule {
	case TextInvalidUTF8:
		return "is not valid UTF-8"
	case TextControl:
		return fmt.Sprintf("contains the control character U+%04X", e.Rune)
	case TextInvisible:
		return fmt.Sprintf("contains U+%04X, an invisible, format, direction-changing or unassigned character", e.Rune)
	case TextMixedScript:
		return "mixes letters of the scripts " + strings.Join(e.Scripts, ", ") + ", which can imitate other text"
	}
	return "cannot be shown as it is"
}

// CheckDisplayText returns nil when s can be shown to a person exactly as it
// is, by the rules the summaries apply to agent-supplied values (see
// makeSafe): valid UTF-8, no control characters, nothing invisible, format,
// direction-changing or unassigned, no leading combining mark, and letters
// from one script or a mix normal in one name (UTS #39 §5.2). Otherwise it
// returns a *TextError. A backslash passes: makeSafe doubles it only so that
// its own escapes stay unambiguous.
func CheckDisplayText(s string) error {
	if isPlainASCII(s) {
		return nil
	}
	var sc scriptSet
	for i, r := range s {
		switch {
		case r == utf8.RuneError && isInvalidAt(s, i):
			return &TextError{Rule: TextInvalidUTF8, Rune: r}
		case r == '\\':
		case r < 0x20 || (r >= 0x7f && r <= 0x9f):
			return &TextError{Rule: TextControl, Rune: r}
		case i == 0 && unicode.IsMark(r), !unicode.IsGraphic(r), isInvisible(r):
			return &TextError{Rule: TextInvisible, Rune: r}
		case unicode.IsLetter(r):
			sc.add(r)
		}
	}
	if sc.mixed() {
		return &TextError{Rule: TextMixedScript, Scripts: sc.names()}
	}
	return nil
}

func isPlainASCII(s string) bool {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '\\' {
			return false
		}
	}
	return true
}

// isInvisible lists graphic characters (by Unicode category) that render as
// nothing or as blank, plus the bidi and zero-width characters, several of
// which are format characters that IsGraphic already excludes.
func isInvisible(r rune) bool {
	switch {
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true
	case r >= 0x200b && r <= 0x200d, r == 0x2060, r == 0xfeff, r == 0x00ad, r == 0x034f, r == 0x180e:
		return true
	case r == 0x115f, r == 0x1160, r == 0x3164, r == 0xffa0, r == 0x2800, r >= 0x2061 && r <= 0x2064:
		return true
	case r >= 0xfe00 && r <= 0xfe0f, r >= 0xe0100 && r <= 0xe01ef: // variation selectors
		return true
	}
	return false
}

func writeEscape(b *strings.Builder, r rune) {
	h := strings.ToUpper(strconv.FormatInt(int64(r), 16))
	if r > 0xffff {
		b.WriteString(`\U`)
		b.WriteString(strings.Repeat("0", 8-len(h)))
	} else {
		b.WriteString(`\u`)
		b.WriteString(strings.Repeat("0", 4-len(h)))
	}
	b.WriteString(h)
}

// scriptSet records the scripts of the letters in a string (UTS #24), in
// the order first seen.
type scriptSet struct {
	seen []string
}

// likelyScripts are tried before the full table, which is a map.
var likelyScripts = []string{"Latin", "Cyrillic", "Greek", "Han", "Hiragana", "Katakana", "Hangul", "Arabic", "Hebrew", "Armenian", "Georgian", "Devanagari", "Thai"}

func (s *scriptSet) add(r rune) {
	name := scriptOf(r)
	if name == "" {
		return
	}
	for _, n := range s.seen {
		if n == name {
			return
		}
	}
	s.seen = append(s.seen, name)
}

// scriptOf returns the script of letter r, or "" for a letter of the Common
// or Inherited script (such as the prolonged sound mark U+30FC), which UTS #39
// §5.1 lets go with any script.
func scriptOf(r rune) string {
	if r < utf8.RuneSelf {
		return "Latin"
	}
	for _, n := range likelyScripts {
		if unicode.Is(unicode.Scripts[n], r) {
			return n
		}
	}
	if unicode.Is(unicode.Common, r) || unicode.Is(unicode.Inherited, r) {
		return ""
	}
	for n, t := range unicode.Scripts {
		if n != "Common" && n != "Inherited" && unicode.Is(t, r) {
			return n
		}
	}
	return "Unknown"
}

// allowedMixes are the script combinations that are normal in one name,
// following the "Highly Restrictive" profile of UTS #39 §5.2.
var allowedMixes = [][]string{
	{"Latin", "Han", "Hiragana", "Katakana"},
	{"Latin", "Han", "Hangul"},
	{"Latin", "Han", "Bopomofo"},
}

func (s *scriptSet) mixed() bool {
	if len(s.seen) <= 1 {
		return false
	}
next:
	for _, allowed := range allowedMixes {
		for _, n := range s.seen {
			if !slices.Contains(allowed, n) {
				continue next
			}
		}
		return false
	}
	return true
}

func (s *scriptSet) names() []string { return s.seen }

// isInvalidAt reports whether the utf8.RuneError at s[i] stands for an
// invalid byte rather than an encoded U+FFFD.
func isInvalidAt(s string, i int) bool {
	_, size := utf8.DecodeRuneInString(s[i:])
	return size <= 1
}

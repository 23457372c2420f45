package policy

import (
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// sourceMap maps positions in a rule's CEL text back to its YAML file. The
// text may be a plain or quoted scalar (possibly folded over several lines)
// or a literal or folded block, so each run of characters that sits
// unchanged on one file line becomes a segment.
type sourceMap struct {
	line, col int // the scalar's own position (1-based), 0 if unknown
	segs      []segment
}

// segment says that the CEL text from (celLine, celCol) on sits at file
// (line, col). CEL lines are 1-based and columns 0-based code points, as in
// cel-go's common.Location; file lines and columns are 1-based, as in yaml.v3.
type segment struct {
	celLine, celCol int
	line, col       int
}

// newSourceMap aligns n.Value with the file lines it came from. Where the
// alignment fails (escape sequences in a double-quoted scalar, say) the map
// stops, and later positions are extrapolated from the last segment found.
func newSourceMap(lines []string, n *yaml.Node) sourceMap {
	m := sourceMap{line: n.Line, col: n.Column}
	block := n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0
	li := n.Line - 1 // 0-based index of the file line being matched
	first := n.Column - 1
	switch {
	case block:
		li++ // the text starts below the | or > indicator
		first = -1
	case n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0:
		first++ // after the quote
	}
	indent := -1
	if block {
		indent = blockIndent(lines, li)
	}
	for ci, cl := range strings.Split(n.Value, "\n") {
		rem := []rune(cl)
		pos := 0
		if len(rem) == 0 {
			if block {
				li++ // an empty line of a literal block
			}
			continue
		}
		for len(rem) > 0 {
			if li >= len(lines) {
				return m
			}
			raw := []rune(lines[li])
			c := first
			first = -1
			if c < 0 {
				c = indent
				if c < 0 {
					c = leadingSpace(raw)
				}
			}
			if c >= len(raw) {
				li++ // a blank line inside a folded scalar
				continue
			}
			k := commonPrefix(rem, raw[c:])
			if k == 0 {
				return m
			}
			m.segs = append(m.segs, segment{celLine: ci + 1, celCol: pos, line: li + 1, col: c + 1})
			pos += k
			rem = rem[k:]
			li++
			if len(rem) > 0 && rem[0] == ' ' { // a line break folded into a space
				rem = rem[1:]
				pos++
			}
		}
	}
	return m
}

// position returns the file position of CEL (line, col).
func (m sourceMap) position(celLine, celCol int) (line, col int) {
	var best *segment
	for i := range m.segs {
		s := &m.segs[i]
		if s.celLine == celLine && s.celCol <= celCol {
			best = s
		}
	}
	if best != nil {
		return best.line, best.col + celCol - best.celCol
	}
	if m.line == 0 {
		return 0, 0
	}
	// Unmapped: the scalar's line, plus the CEL line and column as offsets.
	if celLine <= 1 {
		return m.line, m.col + celCol
	}
	return m.line + celLine - 1, 0
}

func blockIndent(lines []string, from int) int {
	for i := from; i < len(lines); i++ {
		raw := []rune(lines[i])
		if n := leadingSpace(raw); n < len(raw) {
			return n
		}
	}
	return 0
}

func leadingSpace(r []rune) int {
	n := 0
	for n < len(r) && unicode.IsSpace(r[n]) {
		n++
	}
	return n
}

func commonPrefix(a, b []rune) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

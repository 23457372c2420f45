package policy

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem in a policy: where it is and what is wrong. Line and
// Column are 1-based positions in the file, 0 when unknown (a File built in
// code rather than parsed). Type and Rule name the request type and the rule
// id, "" when the problem lies outside them.
type Error struct {
	File   string
	Line   int
	Column int
	Type   string
	Rule   string
	Msg    string
}

// Error returns one line, e.g.
// `policy: policy.yaml:12:17: payment_initiation rule "velocity": undeclared reference to 'recnt'`.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("policy: ")
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(e.Column))
		}
	}
	if e.Type != "" {
		b.WriteString(": ")
		b.WriteString(e.Type)
	}
	if e.Rule != "" {
		b.WriteString(" rule ")
		b.WriteString(strconv.Quote(e.Rule))
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a policy, in file order. ParseFile and
// Compile return it (as error) when anything is wrong, so an admin sees all
// problems at once.
type Errors []*Error

// Error returns the problems one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each *Error.
func (es Errors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// sort puts es in file order.
func (es Errors) sort() {
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column),
			cmp.Compare(a.Type, b.Type), cmp.Compare(a.Rule, b.Rule))
	})
}

// err returns es as an error, nil when empty.
func (es Errors) err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

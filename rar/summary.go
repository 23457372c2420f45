package rar

import (
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Summary is what an approver reads for one element: a sentence, the
// ordered field table, and warnings about how the values look. All of it is
// plain text; escaping for HTML or a notification belongs to the renderer.
type Summary struct {
	Type     string
	Sentence string
	Rows     []Row
	Warnings []string
}

// Row is one line of the field table.
type Row struct {
	Label, Value string
	Flags        []string // FlagEscaped, FlagControlRemoved, FlagMixedScript, FlagUndeclared
}

// commonLabels label the RFC 9396 §2.2 common fields when a type does not
// list them.
var commonLabels = map[string]string{
	"locations":  "Locations",
	"actions":    "Actions",
	"datatypes":  "Data types",
	"identifier": "Identifier",
	"privileges": "Privileges",
}

// Summarize describes each element of d for the consent page, one Summary
// per element in order.
//
// The rows show every value the hash binds, except "type": first the type's
// display fields, then anything else the element holds (the common fields,
// or fields the schema does not close off, flagged FlagUndeclared), so the
// sentence can never be the only place a value appears.
func (r *Registry) Summarize(d *Details) []Summary {
	out := make([]Summary, len(d.Elements))
	for i, e := range d.Elements {
		out[i] = r.summarize(e)
	}
	return out
}

func (r *Registry) summarize(e Element) Summary {
	ct, ok := r.types[e.Type]
	s := Summary{Type: makeSafe(e.Type).text}
	var covered [][]string
	if ok {
		for i, f := range ct.Fields {
			v, ok := lookupPointer(e.Value, ct.pointers[i])
			if !ok {
				continue
			}
			s.addRow(f.Label, f.Format, v, nil)
			covered = append(covered, ct.pointers[i])
		}
	}
	s.addExtraRows(e.Value, nil, covered)
	if !ok {
		s.Sentence = "Request of unregistered type " + s.Type
		s.Warnings = append(s.Warnings, "This request type is not registered; it cannot be described.")
		return s
	}
	var b strings.Builder
	if err := ct.summary.Execute(&b, sentenceTree(e.Value)); err != nil {
		s.Sentence = "Request of type " + s.Type + " (see the fields)"
		s.Warnings = append(s.Warnings, "The summary could not be written; read the fields.")
		return s
	}
	s.Sentence = oneLine(b.String())
	return s
}

// addRow formats one value and records warnings for what makeSafe found.
func (s *Summary) addRow(label, format string, v any, extra []string) {
	var acc safeAcc
	tree := acc.tree(v)
	var text string
	switch format {
	case "money":
		text = moneyFunc(tree)
	case "iban":
		text = plain(tree)
		if str, ok := tree.(string); ok {
			text = groupIBAN(str)
		}
	case "short":
		text = shortFunc(tree)
	case "number":
		text = numberFunc(tree)
	default:
		text = plain(tree)
	}
	flags := append(acc.flags, extra...)
	s.Rows = append(s.Rows, Row{Label: label, Value: text, Flags: flags})
	for _, f := range acc.flags {
		switch f {
		case FlagEscaped:
			s.Warnings = append(s.Warnings, label+": contains invisible or direction-changing characters, shown as \\u escapes.")
		case FlagControlRemoved:
			s.Warnings = append(s.Warnings, label+": control characters were removed.")
		case FlagMixedScript:
			s.Warnings = append(s.Warnings, label+": mixes scripts ("+strings.Join(acc.scripts, ", ")+"); look-alike letters may imitate another name.")
		}
	}
}

// addExtraRows adds a row for every leaf not under a covered pointer.
// Arrays of scalars are one row.
func (s *Summary) addExtraRows(v any, at []string, covered [][]string) {
	for _, c := range covered {
		if hasPrefix(at, c) {
			return
		}
	}
	switch v := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if len(at) == 0 && k == "type" {
				continue
			}
			s.addExtraRows(v[k], append(slices.Clip(at), k), covered)
		}
		return
	case []any:
		if slices.ContainsFunc(v, isContainer) {
			for i, e := range v {
				s.addExtraRows(e, append(slices.Clip(at), strconv.Itoa(i)), covered)
			}
			return
		}
	}
	if len(at) == 1 {
		if label, ok := commonLabels[at[0]]; ok {
			s.addRow(label, "list", v, nil)
			return
		}
	}
	s.addRow(makeSafe(pointer(at...)).text, "", v, []string{FlagUndeclared})
}

func isContainer(v any) bool {
	switch v.(type) {
	case map[string]any, []any:
		return true
	}
	return false
}

func hasPrefix(p, prefix []string) bool {
	return len(p) >= len(prefix) && slices.Equal(p[:len(prefix)], prefix)
}

// safeAcc copies a value with its strings made safe, collecting the flags.
type safeAcc struct {
	flags   []string
	scripts []string
}

func (a *safeAcc) tree(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = a.tree(e)
		}
		return m
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = a.tree(e)
		}
		return out
	case string:
		sv := makeSafe(v)
		for _, f := range sv.flags {
			if !slices.Contains(a.flags, f) {
				a.flags = append(a.flags, f)
			}
		}
		for _, n := range sv.scripts {
			if !slices.Contains(a.scripts, n) {
				a.scripts = append(a.scripts, n)
			}
		}
		return sv.text
	}
	return v
}

// oneLine turns template output into a single line: control characters
// from the template text become spaces. Spaces inside values are kept as the
// rows show them.
func oneLine(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return ' '
		}
		return r
	}, s))
}

package policy

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// File is a parsed policy: for each request type, its rules in order.
type File struct {
	Name  string // the name given to ParseFile, used in errors
	Types map[string][]Rule
}

// Rule is one ordered rule of a request type. When is a CEL expression
// ("" means true); the first rule whose condition holds decides with its
// Outcome. Reason is the human reason recorded with every decision the rule
// makes and shown on the consent page and in the audit trail; a deny rule
// must have one (it becomes the error_description the agent sees).
type Rule struct {
	ID      string
	When    string
	Outcome Outcome
	Reason  string
	Line    int // the rule's line in the file; 0 when not parsed from a file

	src sourceMap // where When sits in the file
}

// Limits on a policy file's names and text.
const (
	MaxFileBytes = 1 << 20 // bytes of YAML
	maxReason    = 500     // bytes of a reason
)

var (
	ruleIDPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	typeNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$`) // as rar
	groupPattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$`)
	yamlLine        = regexp.MustCompile(`^line (\d+): `)
	ruleIDLine      = regexp.MustCompile(`^(\s*)-\s+id:\s*['"]?([^'"\s#]+)`)
	typeKeyLine     = regexp.MustCompile(`^(\s*)['"]?([^\s'"#:-][^\s'"#:]*)['"]?:\s*(#.*)?$`)
)

// ParseFile reads a policy file (see the package documentation for the
// format). Parsing is strict: unknown keys, duplicate keys and rule ids,
// anchors and aliases, and values of the wrong shape are errors. A non-nil
// error is [Errors], naming the file and, where it can, the type, the rule
// and the line and column of every problem.
func ParseFile(name string, data []byte) (*File, error) {
	p := &parser{name: name}
	if len(data) > MaxFileBytes {
		p.errorf(nil, "", "", "file is larger than %d bytes", MaxFileBytes)
		return nil, p.errs.err()
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(nil, "", "", "empty file: want a mapping with types")
		} else {
			p.yamlError(err, data)
		}
		return nil, p.errs.err()
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			p.yamlError(err, data)
		} else {
			p.errorf(&extra, "", "", "more than one YAML document")
		}
		return nil, p.errs.err()
	}
	p.lines = strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	f := p.file(doc.Content[0])
	if len(p.errs) > 0 {
		p.errs.sort()
		return nil, p.errs
	}
	f.Name = name
	return f, nil
}

type parser struct {
	name  string
	lines []string
	errs  Errors
}

func (p *parser) errorf(n *yaml.Node, typ, rule, format string, args ...any) {
	e := &Error{File: p.name, Type: typ, Rule: rule, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

// yamlError reports a YAML syntax error at the line where the file stops
// being YAML, in the type and rule whose text holds that line. yaml.v3 names
// the line where the enclosing block began, which can be well above the
// mistake, so the line is found here: it follows the longest prefix of the
// file that still parses.
func (p *parser) yamlError(err error, data []byte) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{File: p.name}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	}
	e.Msg = "invalid YAML: " + msg
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	if bad := firstBadLine(lines); bad > 0 {
		e.Line = bad
	}
	if e.Line > 0 && e.Line <= len(lines) {
		e.Type, e.Rule = enclosing(lines[:e.Line])
	}
	p.errs = append(p.errs, e)
}

// firstBadLine returns the line (1-based) after the longest prefix of lines
// that parses as YAML, or 0 when that cannot be told (every prefix parses,
// or the file is too long to try).
func firstBadLine(lines []string) int {
	if len(lines) > 2000 {
		return 0
	}
	lastGood := 0
	var n yaml.Node
	for i := 1; i <= len(lines); i++ {
		if yaml.Unmarshal([]byte(strings.Join(lines[:i], "\n")+"\n"), &n) == nil {
			lastGood = i
		}
	}
	if lastGood == len(lines) {
		return 0
	}
	return lastGood + 1
}

// enclosing names the request type and the rule whose text the last of
// lines belongs to, read from the text alone (the file did not parse): the
// nearest "- id: …" above, and the nearest indented key above that, at most
// as indented. A key at the top level (types:) ends the search.
func enclosing(lines []string) (typ, rule string) {
	ruleIndent := -1
	for i := len(lines) - 1; i >= 0; i-- {
		if m := ruleIDLine.FindStringSubmatch(lines[i]); m != nil && rule == "" {
			rule, ruleIndent = m[2], len(m[1])
			continue
		}
		m := typeKeyLine.FindStringSubmatch(lines[i])
		switch {
		case m == nil || (ruleIndent >= 0 && len(m[1]) > ruleIndent):
		case len(m[1]) == 0:
			return "", rule
		default:
			return m[2], rule
		}
	}
	return "", rule
}

// mapping returns the key and value nodes of a mapping, rejecting aliases,
// merge keys, duplicate keys and keys not in allowed.
func (p *parser) mapping(n *yaml.Node, typ, rule string, allowed ...string) map[string]*yaml.Node {
	if !p.plain(n, typ, rule) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, typ, rule, "want a mapping, got %s", describe(n))
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !p.plain(k, typ, rule) || !p.plain(v, typ, rule) {
			continue
		}
		if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
			p.errorf(k, typ, rule, "want a plain key, got %s", describe(k))
			continue
		}
		if _, dup := out[k.Value]; dup {
			p.errorf(k, typ, rule, "duplicate key %q", k.Value)
			continue
		}
		if allowed != nil && !slices.Contains(allowed, k.Value) {
			p.errorf(k, typ, rule, "unknown key %q (want %s)", k.Value, strings.Join(allowed, ", "))
			continue
		}
		out[k.Value] = v
	}
	return out
}

// plain rejects anchors and aliases: a policy is read by people, and every
// rule should say what it does where it stands.
func (p *parser) plain(n *yaml.Node, typ, rule string) bool {
	switch {
	case n.Kind == yaml.AliasNode:
		p.errorf(n, typ, rule, "aliases are not allowed")
		return false
	case n.Anchor != "":
		p.errorf(n, typ, rule, "anchors are not allowed")
		return false
	}
	return true
}

func (p *parser) scalar(n *yaml.Node, typ, rule, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errorf(n, typ, rule, "%s: want a string, got %s", what, describe(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) file(root *yaml.Node) *File {
	f := &File{Types: map[string][]Rule{}}
	top := p.mapping(root, "", "", "types")
	if top == nil {
		return f
	}
	types, ok := top["types"]
	if !ok {
		p.errorf(root, "", "", "missing key \"types\"")
		return f
	}
	if types.Kind == yaml.ScalarNode && types.Tag == "!!null" {
		return f // types: with nothing under it: a policy that denies everything
	}
	tm := p.mapping(types, "", "")
	if tm == nil {
		return f
	}
	for i := 0; i+1 < len(types.Content); i += 2 {
		k := types.Content[i]
		seq, ok := tm[k.Value]
		if !ok || seq != types.Content[i+1] {
			continue // already reported
		}
		typ := k.Value
		if !typeNamePattern.MatchString(typ) {
			p.errorf(k, "", "", "invalid request type name %q", truncate(typ, 80))
			continue
		}
		f.Types[typ] = p.rules(typ, seq)
	}
	return f
}

func (p *parser) rules(typ string, seq *yaml.Node) []Rule {
	if !p.plain(seq, typ, "") {
		return nil
	}
	if seq.Kind != yaml.SequenceNode {
		p.errorf(seq, typ, "", "want a list of rules, got %s", describe(seq))
		return nil
	}
	rules := make([]Rule, 0, len(seq.Content))
	seen := map[string]bool{}
	for i, n := range seq.Content {
		r, ok := p.rule(typ, i, n)
		if !ok {
			continue
		}
		if seen[r.ID] {
			p.errorf(n, typ, r.ID, "duplicate rule id")
			continue
		}
		seen[r.ID] = true
		rules = append(rules, r)
	}
	return rules
}

func (p *parser) rule(typ string, index int, n *yaml.Node) (Rule, bool) {
	r := Rule{Line: n.Line}
	// Errors name the rule by its id, or by its position when it has none.
	name := "#" + strconv.Itoa(index+1)
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "id" && v.Kind == yaml.ScalarNode && ruleIDPattern.MatchString(v.Value) {
				name = v.Value
			}
		}
	}
	m := p.mapping(n, typ, name, "id", "when", "outcome", "reason")
	if m == nil {
		return r, false
	}
	before := len(p.errs)
	if v, ok := m["id"]; !ok {
		p.errorf(n, typ, name, "missing key \"id\"")
	} else if id, ok := p.scalar(v, typ, name, "id"); ok {
		if !ruleIDPattern.MatchString(id) {
			p.errorf(v, typ, name, "invalid rule id %q (letters, digits, _ . -; at most 64)", truncate(id, 80))
		} else {
			r.ID, name = id, id
		}
	}
	if v, ok := m["when"]; ok {
		if when, ok := p.scalar(v, typ, name, "when"); ok {
			r.When = when
			r.src = newSourceMap(p.lines, v)
		}
	}
	if v, ok := m["reason"]; ok {
		if reason, ok := p.scalar(v, typ, name, "reason"); ok {
			r.Reason = strings.TrimSpace(reason)
			if len(r.Reason) > maxReason {
				p.errorf(v, typ, name, "reason is longer than %d bytes", maxReason)
			}
		}
	}
	v, ok := m["outcome"]
	if !ok {
		p.errorf(n, typ, name, "missing key \"outcome\"")
		return r, false
	}
	r.Outcome = p.outcome(typ, name, v)
	if r.Outcome.Kind == Deny {
		switch {
		case r.Outcome.Reason != "" && r.Reason != "" && r.Outcome.Reason != r.Reason:
			p.errorf(v, typ, name, "deny reason and rule reason differ; give the reason once")
		case r.Outcome.Reason == "" && r.Reason == "":
			p.errorf(v, typ, name, "deny needs a reason ({deny: \"…\"} or reason:); the agent receives it as error_description")
		}
		// Both spellings mean the same: keep the reason in both places.
		r.Reason = cmp.Or(r.Reason, r.Outcome.Reason)
		r.Outcome.Reason = r.Reason
	}
	return r, len(p.errs) == before
}

func (p *parser) outcome(typ, rule string, n *yaml.Node) Outcome {
	if n.Kind == yaml.ScalarNode {
		k, err := ParseKind(n.Value)
		switch {
		case err != nil:
			p.errorf(n, typ, rule, "unknown outcome %q (want allow, approve, step_up, quorum or deny)", truncate(n.Value, 40))
		case k == Quorum:
			p.errorf(n, typ, rule, "quorum needs n and group: {quorum: {n: 2, group: maintainers}}")
		}
		return Outcome{Kind: k}
	}
	m := p.mapping(n, typ, rule, "quorum", "deny")
	if m == nil {
		return Outcome{}
	}
	if len(m) != 1 {
		p.errorf(n, typ, rule, "an outcome is one of allow, approve, step_up, {quorum: …} or {deny: \"reason\"}")
		return Outcome{}
	}
	if v, ok := m["deny"]; ok {
		reason, _ := p.scalar(v, typ, rule, "deny")
		reason = strings.TrimSpace(reason)
		if len(reason) > maxReason {
			p.errorf(v, typ, rule, "reason is longer than %d bytes", maxReason)
		}
		return Outcome{Kind: Deny, Reason: reason}
	}
	v := m["quorum"]
	q := p.mapping(v, typ, rule, "n", "group", "requester_counts")
	if q == nil {
		return Outcome{}
	}
	o := Outcome{Kind: Quorum}
	if nv, ok := q["n"]; !ok {
		p.errorf(v, typ, rule, "quorum: missing key \"n\"")
	} else if i, err := strconv.Atoi(nv.Value); nv.Kind != yaml.ScalarNode || nv.Tag != "!!int" || err != nil || i < 1 || i > 100 {
		p.errorf(nv, typ, rule, "quorum: n must be an integer from 1 to 100")
	} else {
		o.N = i
	}
	if gv, ok := q["group"]; !ok {
		p.errorf(v, typ, rule, "quorum: missing key \"group\"")
	} else if g, ok := p.scalar(gv, typ, rule, "quorum group"); ok {
		if !groupPattern.MatchString(g) {
			p.errorf(gv, typ, rule, "quorum: invalid group name %q", truncate(g, 80))
		}
		o.Group = g
	}
	if rv, ok := q["requester_counts"]; ok {
		var b bool
		if rv.Kind != yaml.ScalarNode || rv.Tag != "!!bool" || rv.Decode(&b) != nil {
			p.errorf(rv, typ, rule, "quorum: requester_counts must be true or false")
		}
		o.RequesterCounts = b
	}
	return o
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return strconv.Quote(truncate(n.Value, 40))
	}
	return "something else"
}

// Format returns f as a policy file in canonical form: types sorted by name,
// rules in order, keys in the order id, when, outcome, reason, no comments.
// ParseFile(name, f.Format()) gives f back (positions aside), and two files
// that mean the same have the same Format, so it serves to store a version,
// to diff two versions and to tell whether applying a file changes anything.
func (f *File) Format() []byte {
	str := func(s string) *yaml.Node {
		n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
		if strings.Contains(s, "\n") {
			n.Style = yaml.LiteralStyle
		}
		return n
	}
	mapping := func(kv ...*yaml.Node) *yaml.Node {
		return &yaml.Node{Kind: yaml.MappingNode, Content: kv}
	}
	types := mapping()
	names := make([]string, 0, len(f.Types))
	for name := range f.Types {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		for _, r := range f.Types[name] {
			rule := mapping(str("id"), str(r.ID))
			if r.When != "" {
				rule.Content = append(rule.Content, str("when"), str(r.When))
			}
			var out *yaml.Node
			switch o := r.Outcome; {
			case o.Kind == Quorum:
				out = mapping(str("quorum"), &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle, Content: []*yaml.Node{
					str("n"), {Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(o.N)},
					str("group"), str(o.Group),
					str("requester_counts"), {Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(o.RequesterCounts)},
				}})
				out.Style = yaml.FlowStyle
			case o.Kind == Deny:
				out = mapping(str("deny"), str(cmp.Or(r.Reason, o.Reason)))
				out.Style = yaml.FlowStyle
			default:
				out = str(o.Kind.String())
			}
			rule.Content = append(rule.Content, str("outcome"), out)
			if r.Reason != "" && r.Outcome.Kind != Deny {
				rule.Content = append(rule.Content, str("reason"), str(r.Reason))
			}
			seq.Content = append(seq.Content, rule)
		}
		types.Content = append(types.Content, str(name), seq)
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(mapping(str("types"), types)); err != nil {
		panic(err) // encoding nodes built here cannot fail
	}
	return b.Bytes()
}

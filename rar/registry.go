package rar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/template"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/countersign/countersign/rar/canonical"
)

// Registry holds compiled request types. It is safe for concurrent use.
type Registry struct {
	types map[string]*compiledType
}

type compiledType struct {
	Type
	schema   *jsonschema.Schema
	summary  *template.Template
	pointers [][]string // parsed Fields[i].Path
	amount   []string   // parsed Amount; nil when the type has none
}

// typeName restricts type names to what reads unambiguously in logs, URLs
// and error messages. RFC 9396 §2 allows any string; we register a subset.
var typeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$`)

// Compile checks and compiles the types once: names, lifetimes, schemas,
// display fields and summary templates. Errors name the type and the problem.
func Compile(types []Type) (*Registry, error) {
	r := &Registry{types: make(map[string]*compiledType, len(types))}
	for _, t := range types {
		ct, err := compileType(t)
		if err != nil {
			return nil, err
		}
		if _, dup := r.types[t.Name]; dup {
			return nil, fmt.Errorf("rar: type %q is defined twice", t.Name)
		}
		r.types[t.Name] = ct
	}
	return r, nil
}

func compileType(t Type) (*compiledType, error) {
	if !typeName.MatchString(t.Name) {
		return nil, fmt.Errorf("rar: type %q: name must match %s", t.Name, typeName)
	}
	if t.MaxLifetime <= 0 {
		return nil, fmt.Errorf("rar: type %q: max_lifetime must be positive", t.Name)
	}
	ct := &compiledType{Type: t}
	var err error
	if ct.schema, err = compileSchema(t.Name, t.Schema); err != nil {
		return nil, err
	}
	for i, f := range t.Fields {
		p, err := parsePointer(f.Path)
		if err != nil || len(p) == 0 {
			return nil, fmt.Errorf("rar: type %q: fields[%d]: path %q is not a JSON pointer to a member", t.Name, i, f.Path)
		}
		if f.Label == "" {
			return nil, fmt.Errorf("rar: type %q: fields[%d]: label is required", t.Name, i)
		}
		if _, ok := rowFormats[f.Format]; !ok {
			return nil, fmt.Errorf("rar: type %q: fields[%d]: unknown format %q", t.Name, i, f.Format)
		}
		ct.pointers = append(ct.pointers, p)
	}
	if t.Amount != "" {
		p, err := parsePointer(t.Amount)
		if err != nil || len(p) == 0 {
			return nil, fmt.Errorf("rar: type %q: amount: path %q is not a JSON pointer to a member", t.Name, t.Amount)
		}
		ct.amount = p
	}
	if t.Summary == "" {
		return nil, fmt.Errorf("rar: type %q: summary is required", t.Name)
	}
	// missingkey=error: a sentence never shows "<no value>"; a template
	// reaching for an absent field fails, and Summarize falls back.
	ct.summary, err = template.New(t.Name).Option("missingkey=error").Funcs(funcMap).Parse(t.Summary)
	if err != nil {
		return nil, fmt.Errorf("rar: type %q: summary: %w", t.Name, err)
	}
	// Executing on an empty element catches calls with the wrong number of
	// arguments, which Parse cannot see.
	if err := ct.summary.Execute(new(bytes.Buffer), map[string]any{}); err != nil && !isMissingField(err) {
		return nil, fmt.Errorf("rar: type %q: summary: %w", t.Name, err)
	}
	return ct, nil
}

// isMissingField reports a template error caused only by the element being
// empty, which real elements that pass the schema avoid.
func isMissingField(err error) bool {
	var ee template.ExecError
	return errors.As(err, &ee) && (strings.Contains(ee.Error(), "map has no entry for key") ||
		strings.Contains(ee.Error(), "nil pointer evaluating"))
}

// Type returns the registered type with the given name.
func (r *Registry) Type(name string) (Type, bool) {
	ct, ok := r.types[name]
	if !ok {
		return Type{}, false
	}
	return ct.Type, true
}

// Parse reads an authorization_details value (RFC 9396 §2), checks the
// limits, validates every element against its registered type, and returns
// it with its canonical form and hash. Any rejection is a *FieldError.
func (r *Registry) Parse(raw []byte) (*Details, error) {
	elems, err := canonical.Decode(raw)
	if err != nil {
		return nil, err
	}
	d := &Details{Elements: make([]Element, len(elems))}
	for i, v := range elems {
		ct, err := r.lookup(i, v)
		if err != nil {
			return nil, err
		}
		amount, err := ct.validate(i, v)
		if err != nil {
			return nil, err
		}
		d.Elements[i] = Element{Type: ct.Name, Value: v, amount: amount}
	}
	var each []json.RawMessage
	d.Canonical, each = canonical.Canonicalize(elems, len(raw))
	for i, raw := range each {
		d.Elements[i].Raw = raw
	}
	d.Hash = Hash(d.Canonical)
	return d, nil
}

// lookup finds the registered type of element i. RFC 9396 §2: "type" is
// REQUIRED; §5: the AS must reject unknown types — we deny by default.
func (r *Registry) lookup(i int, v map[string]any) (*compiledType, *FieldError) {
	tv, ok := v["type"]
	if !ok {
		return nil, &FieldError{Index: i, Path: "/type", Rule: "required", Message: "type is required"}
	}
	name, ok := tv.(string)
	if !ok {
		return nil, &FieldError{Index: i, Path: "/type", Rule: "type", Message: "type must be a string"}
	}
	ct, ok := r.types[name]
	if !ok {
		return nil, &FieldError{Index: i, Path: "/type", Rule: "unknown_type", Message: "type is not registered"}
	}
	return ct, nil
}

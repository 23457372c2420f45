package rar

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

const draft2020 = "https://json-schema.org/draft/2020-12/schema"

// commonFields are the fields RFC 9396 §2.2 defines for every type. They are
// allowed on every element and checked for shape here, whatever the type's
// schema says; a schema may narrow them further.
var commonFields = []struct {
	name    string
	isArray bool // of strings; otherwise a string
}{
	{"locations", true},
	{"actions", true},
	{"datatypes", true},
	{"identifier", false},
	{"privileges", true},
}

// refuseLoader keeps schemas from reading files or the network through $ref:
// a type is exactly the document the admin registered.
type refuseLoader struct{}

func (refuseLoader) Load(u string) (any, error) {
	return nil, fmt.Errorf("rar: schemas may not load %q; inline it under $defs", u)
}

// compileSchema compiles a type's element schema. Before compiling it adds
// "type" and the RFC 9396 §2.2 common fields to the top-level "properties"
// (unless the schema defines them itself), so that a schema can close itself
// with additionalProperties: false and still accept them.
func compileSchema(name string, raw json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("rar: type %q: schema is not JSON: %w", name, err)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("rar: type %q: schema must be a JSON object", name)
	}
	if s, ok := obj["$schema"]; ok && s != draft2020 {
		return nil, fmt.Errorf("rar: type %q: $schema must be %s", name, draft2020)
	}
	if err := checkFormats(obj); err != nil {
		return nil, fmt.Errorf("rar: type %q: %w", name, err)
	}
	props, _ := obj["properties"].(map[string]any)
	if props == nil {
		if _, exists := obj["properties"]; exists {
			return nil, fmt.Errorf("rar: type %q: schema properties must be an object", name)
		}
		props = map[string]any{}
		obj["properties"] = props
	}
	if _, ok := props["type"]; !ok {
		props["type"] = map[string]any{"const": name}
	}
	for _, cf := range commonFields {
		f := cf.name
		if _, ok := props[f]; ok {
			continue
		}
		if cf.isArray {
			props[f] = map[string]any{"type": "array", "items": map[string]any{"type": "string"}}
		} else {
			props[f] = map[string]any{"type": "string"}
		}
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.RegisterFormat(&jsonschema.Format{Name: "iban", Validate: validateIBANFormat})
	c.RegisterFormat(&jsonschema.Format{Name: "currency", Validate: validateCurrencyFormat})
	c.UseLoader(refuseLoader{})
	loc := "urn:countersign:type:" + url.PathEscape(name)
	if err := c.AddResource(loc, obj); err != nil {
		return nil, fmt.Errorf("rar: type %q: schema: %w", name, err)
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("rar: type %q: schema: %w", name, err)
	}
	return sch, nil
}

// knownFormats are the formats the validator asserts. A misspelt format
// would otherwise be ignored silently (JSON Schema 2020-12 §7.2), turning
// off a check the admin meant to have.
var knownFormats = map[string]bool{
	"iban": true, "currency": true,
	"date-time": true, "date": true, "time": true, "duration": true, "email": true,
	"hostname": true, "ipv4": true, "ipv6": true, "uri": true, "uri-reference": true,
	"iri": true, "iri-reference": true, "uuid": true, "json-pointer": true,
	"relative-json-pointer": true, "regex": true, "uri-template": true, "period": true, "semver": true,
}

func checkFormats(v any) error {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			switch k {
			case "const", "enum", "examples", "default":
				continue
			case "format":
				if s, ok := e.(string); ok && !knownFormats[s] {
					return fmt.Errorf("unknown format %q", s)
				}
			}
			if err := checkFormats(e); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range v {
			if err := checkFormats(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// validate checks one decoded element against its type and returns its
// amount (Type.Amount), the zero Amount when it has none.
func (ct *compiledType) validate(i int, v map[string]any) (Amount, *FieldError) {
	if err := checkCommonFields(i, v); err != nil {
		return Amount{}, err
	}
	if err := ct.schema.Validate(v); err != nil {
		return Amount{}, schemaError(i, err)
	}
	if err := ct.checkMoney(i, v); err != nil {
		return Amount{}, err
	}
	if ct.amount == nil {
		return Amount{}, nil
	}
	return ct.readAmount(i, v, ct.Amount, ct.amount)
}

// checkCommonFields enforces the shapes RFC 9396 §2.2 gives the common
// fields: arrays of strings, and "identifier" a string.
func checkCommonFields(i int, v map[string]any) *FieldError {
	for _, cf := range commonFields {
		f := cf.name
		fv, ok := v[f]
		if !ok {
			continue
		}
		if !cf.isArray {
			if _, ok := fv.(string); !ok {
				return &FieldError{Index: i, Path: "/" + f, Rule: "type", Message: "must be a string"}
			}
			continue
		}
		arr, ok := fv.([]any)
		if !ok {
			return &FieldError{Index: i, Path: "/" + f, Rule: "type", Message: "must be an array of strings"}
		}
		for j, e := range arr {
			if _, ok := e.(string); !ok {
				return &FieldError{Index: i, Path: "/" + f + "/" + strconv.Itoa(j), Rule: "type", Message: "must be a string"}
			}
		}
	}
	return nil
}

// checkMoney makes sure that every value displayed as money is an amount
// (ParseAmount), so the consent page shows it exactly, never rounded, and
// shows the number the rules compare.
func (ct *compiledType) checkMoney(i int, v map[string]any) *FieldError {
	for fi, f := range ct.Fields {
		if f.Format != "money" {
			continue
		}
		if _, err := ct.readAmount(i, v, f.Path, ct.pointers[fi]); err != nil {
			return err
		}
	}
	return nil
}

// readAmount reads the amount object at ptr (spelt path), if the element
// has one there.
func (ct *compiledType) readAmount(i int, v map[string]any, path string, ptr []string) (Amount, *FieldError) {
	mv, ok := lookupPointer(v, ptr)
	if !ok {
		return Amount{}, nil
	}
	a, err := amountObject(mv)
	if err != nil {
		err.Index, err.Path = i, path+err.Path
		return Amount{}, err
	}
	return a, nil
}

// schemaError maps a validation failure to its most specific leaf: the
// deepest instance location, the first such in schema order.
func schemaError(i int, err error) *FieldError {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &FieldError{Index: i, Rule: "schema", Message: "element does not match its type's schema"}
	}
	var best *FieldError
	bestDepth := -1
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		tokens, rule, msg := describe(e)
		if len(tokens) > bestDepth {
			bestDepth = len(tokens)
			best = &FieldError{Index: i, Path: pointer(tokens...), Rule: rule, Message: msg}
		}
	}
	walk(ve)
	if best == nil {
		return &FieldError{Index: i, Rule: "schema", Message: "element does not match its type's schema"}
	}
	return best
}

// describe names a leaf error's location, rule and a short message that does
// not echo the offending value.
func describe(e *jsonschema.ValidationError) (tokens []string, rule, msg string) {
	tokens = e.InstanceLocation
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		return appendToken(tokens, first(k.Missing)), "required", "required field is missing"
	case *kind.AdditionalProperties:
		return appendToken(tokens, first(slices.Sorted(slices.Values(k.Properties)))), "additionalProperties", "field is not allowed for this type"
	case *kind.DependentRequired:
		return appendToken(tokens, first(k.Missing)), "dependentRequired", "required when " + k.Prop + " is present"
	case *kind.Type:
		return tokens, "type", "must be " + strings.Join(k.Want, " or ") + ", got " + k.Got
	case *kind.Enum:
		return tokens, "enum", "must be one of " + displayList(k.Want)
	case *kind.Const:
		return tokens, "const", "must be " + displayList([]any{k.Want})
	case *kind.Pattern:
		return tokens, "pattern", "does not match the pattern " + k.Want
	case *kind.Format:
		switch k.Want {
		case "iban":
			if errors.Is(k.Err, errIBANChecksum) {
				return tokens, "iban_checksum", k.Err.Error()
			}
			return tokens, "iban", k.Err.Error()
		case "currency":
			return tokens, "currency", k.Err.Error()
		}
		return tokens, "format", "is not a valid " + k.Want
	case *kind.MinLength:
		return tokens, "minLength", fmt.Sprintf("must have at least %d characters", k.Want)
	case *kind.MaxLength:
		return tokens, "maxLength", fmt.Sprintf("must have at most %d characters", k.Want)
	case *kind.MinItems:
		return tokens, "minItems", fmt.Sprintf("must have at least %d items", k.Want)
	case *kind.MaxItems:
		return tokens, "maxItems", fmt.Sprintf("must have at most %d items", k.Want)
	case *kind.UniqueItems:
		return appendToken(tokens, strconv.Itoa(k.Duplicates[1])), "uniqueItems", "duplicates item " + strconv.Itoa(k.Duplicates[0])
	case *kind.Minimum:
		return tokens, "minimum", "must be at least " + k.Want.RatString()
	case *kind.Maximum:
		return tokens, "maximum", "must be at most " + k.Want.RatString()
	case *kind.ExclusiveMinimum:
		return tokens, "exclusiveMinimum", "must be greater than " + k.Want.RatString()
	case *kind.ExclusiveMaximum:
		return tokens, "exclusiveMaximum", "must be less than " + k.Want.RatString()
	case *kind.MultipleOf:
		return tokens, "multipleOf", "must be a multiple of " + k.Want.RatString()
	case *kind.FalseSchema:
		return tokens, "not_allowed", "field is not allowed for this type"
	}
	kw := e.ErrorKind.KeywordPath()
	if len(kw) == 0 {
		return tokens, "schema", "does not match the schema"
	}
	return tokens, kw[0], "fails " + kw[0]
}

func first(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return ss[0]
}

func appendToken(tokens []string, t string) []string {
	return append(slices.Clip(tokens), t)
}

// displayList renders schema-defined values (never request input) for an
// error message.
func displayList(vs []any) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		b, err := json.Marshal(v)
		if err != nil {
			b = []byte("?")
		}
		parts[i] = string(b)
	}
	return strings.Join(parts, ", ")
}

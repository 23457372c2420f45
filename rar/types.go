package rar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"go.yaml.in/yaml/v3"
)

// Type is one registered request type, as an admin defines it.
type Type struct {
	Name        string         // the RFC 9396 "type" value, e.g. "payment_initiation"
	Description string         // the risk description shown to admins and approvers
	MaxLifetime time.Duration  // maximum lifetime for requests of this type
	Summary     string         // text/template for the one-sentence summary
	Fields      []DisplayField // ordered display fields
	// Amount is a JSON pointer to the element's amount, an object with
	// currency and amount ("/instructedAmount"), or "" for a type that moves
	// no money. It is what the risk rules add up per currency (request.amounts
	// and the velocity sums).
	Amount string
	Schema json.RawMessage // JSON Schema draft 2020-12 for one element
}

// DisplayField is one row of the table shown to the approver.
type DisplayField struct {
	Path   string // JSON pointer into the element, e.g. "/creditorAccount/iban"
	Label  string // row label
	Format string // "", "money", "iban", "list", "short" or "number"; see the package documentation
}

// typeFile is the on-disk shape of a Type.
type typeFile struct {
	Name        string      `yaml:"name" json:"name"`
	Description string      `yaml:"description" json:"description"`
	MaxLifetime string      `yaml:"max_lifetime" json:"max_lifetime"`
	Summary     string      `yaml:"summary" json:"summary"`
	Fields      []fieldFile `yaml:"fields" json:"fields"`
	Amount      string      `yaml:"amount,omitempty" json:"amount,omitempty"`
	Schema      yaml.Node   `yaml:"schema" json:"-"`
}

type fieldFile struct {
	Path   string `yaml:"path" json:"path"`
	Label  string `yaml:"label" json:"label"`
	Format string `yaml:"format,omitempty" json:"format,omitempty"`
}

// ParseTypeFile parses one type file (YAML, or JSON, which YAML accepts).
// Unknown keys, duplicate keys and more than one document are errors. The
// type is not compiled; Compile checks its schema and templates.
func ParseTypeFile(data []byte) (Type, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f typeFile
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return Type{}, errors.New("rar: type file is empty")
		}
		return Type{}, fmt.Errorf("rar: type file: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Type{}, fmt.Errorf("rar: type %q: a type file holds exactly one document", f.Name)
	}
	if f.Name == "" {
		return Type{}, errors.New("rar: type file: name is required")
	}
	t := Type{Name: f.Name, Description: f.Description, Summary: f.Summary, Amount: f.Amount}
	if f.MaxLifetime == "" {
		return Type{}, fmt.Errorf("rar: type %q: max_lifetime is required", f.Name)
	}
	d, err := time.ParseDuration(f.MaxLifetime)
	if err != nil {
		return Type{}, fmt.Errorf("rar: type %q: max_lifetime: %w", f.Name, err)
	}
	t.MaxLifetime = d
	for _, ff := range f.Fields {
		t.Fields = append(t.Fields, DisplayField(ff))
	}
	if f.Schema.Kind == 0 {
		return Type{}, fmt.Errorf("rar: type %q: schema is required", f.Name)
	}
	var schema any
	if err := f.Schema.Decode(&schema); err != nil {
		return Type{}, fmt.Errorf("rar: type %q: schema: %w", f.Name, err)
	}
	t.Schema, err = json.Marshal(schema)
	if err != nil {
		return Type{}, fmt.Errorf("rar: type %q: schema is not JSON: %w", f.Name, err)
	}
	return t, nil
}

// MarshalJSON writes the type in the type-file format, so that the output of
// MarshalJSON is accepted by ParseTypeFile.
func (t Type) MarshalJSON() ([]byte, error) {
	fields := make([]fieldFile, len(t.Fields))
	for i, f := range t.Fields {
		fields[i] = fieldFile(f)
	}
	schema := t.Schema
	if len(schema) == 0 {
		schema = json.RawMessage("null")
	}
	return json.Marshal(struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		MaxLifetime string          `json:"max_lifetime"`
		Summary     string          `json:"summary"`
		Fields      []fieldFile     `json:"fields"`
		Amount      string          `json:"amount,omitempty"`
		Schema      json.RawMessage `json:"schema"`
	}{t.Name, t.Description, t.MaxLifetime.String(), t.Summary, fields, t.Amount, schema})
}

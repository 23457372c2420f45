package rar

import (
	"encoding/json"
	"log/slog"
	"strings"
)

// Details is a validated authorization_details value.
type Details struct {
	Elements  []Element // in request order
	Canonical []byte    // RFC 8785 JCS of the whole validated array
	Hash      string    // base64url (no padding) of SHA-256(Canonical)
}

// Element is one validated element of authorization_details. Value holds the
// decoded element: objects as map[string]any, arrays as []any, numbers as
// json.Number in their RFC 8785 spelling ("1.0" arrives as "1"). Raw is the
// canonical JSON of the element, a read-only slice of the same bytes as
// Details.Canonical may be. Its amount, if it has one, is [Element.Amount].
type Element struct {
	Type  string
	Value map[string]any
	Raw   json.RawMessage

	amount Amount // Currency "" when the element has none
}

// LogValue implements slog.LogValuer. It logs the element types and the hash
// only: authorization_details carry payment and personal data.
func (d *Details) LogValue() slog.Value {
	if d == nil {
		return slog.StringValue("<nil>")
	}
	types := make([]string, len(d.Elements))
	for i, e := range d.Elements {
		types[i] = e.Type
	}
	return slog.GroupValue(
		slog.String("types", strings.Join(types, ",")),
		slog.String("hash", d.Hash),
	)
}

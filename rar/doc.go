// Package rar turns an OAuth authorization_details value (RFC 9396) into a
// validated, canonical, hashed and human-readable request.
//
// A [Registry] holds the request types an admin registered ([Compile]).
// [Registry.Parse] reads the raw JSON, enforces the limits, validates every
// element against its type and returns [Details] with the RFC 8785 canonical
// form and its hash; [Registry.Summarize] describes each element for the
// consent page. The package does no I/O and holds no state besides the
// compiled types.
//
// # Parsing
//
// Parse reads the value in one pass before any schema sees it, and rejects:
// anything but a non-empty array of objects; more than [MaxElements]
// elements, [MaxBytes] bytes of input (whitespace included) or [MaxDepth]
// levels of nesting (the outer array is depth 1, an element depth 2, an
// object inside an element depth 3; a value exactly at a limit is accepted);
// duplicate object keys at any level (compared after unescaping); invalid
// UTF-8, inside strings too, and \u escapes of unpaired surrogates; numbers
// whose RFC 8785 spelling would be a different decimal than the literal
// ("1.0", "1e2" and "0.1" are accepted and hashed as 1, 100 and 0.1;
// 12345678901234567890 and 0.1000000000000000055511151231257827 are not —
// send such values as strings).
//
// Each element must have a registered "type" (RFC 9396 §2; unknown types are
// denied). The common fields of RFC 9396 §2.2 — locations, actions,
// datatypes and privileges (arrays of strings) and identifier (a string) —
// are allowed on every type and checked for shape whatever the type's schema
// says. The element is then validated against the type's JSON Schema (draft
// 2020-12, formats asserted). The type's amount ([Type.Amount]) and every
// field shown with the "money" format must be an amount object,
// {"currency": "EUR", "amount": "500.00"}, read by [ParseAmount]: a known
// ISO 4217 currency, and the amount a string of digits with an optional
// fraction (RFC 9396 §2, ISO 20022) — no sign, exponent, spaces, digit
// separators or leading zeros, so never negative, NaN or infinite — with no
// more decimals than the currency's minor units and fewer than 10^17 minor
// units. [Element.Amount] is the element's amount as an exact [Amount];
// [Details.Totals] adds them up per currency.
//
// Every rejection is a [*FieldError] whose Rule is one of:
//
//	syntax, type, min_elements, max_elements, max_bytes, max_depth,
//	duplicate_key, invalid_utf8, precision, unknown_type, required,
//	iban, iban_checksum, currency, amount, amount_precision, amount_digits,
//	and the JSON Schema keyword that failed (enum, const, pattern, format,
//	minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf,
//	minLength, maxLength, minItems, maxItems, uniqueItems,
//	additionalProperties, dependentRequired, not_allowed, ...).
//
// For schema failures the error names the deepest failing value; for
// "required" and "additionalProperties" the Path is the missing or extra
// member itself.
//
// # Canonical form and hash
//
// Decoding, the canonical form and the hash are package
// [github.com/countersign/countersign/rar/canonical], which the SDK imports
// without the rest of rar. Details.Canonical is the RFC 8785 (JCS)
// serialization of the whole array, written from the decoded tree (tests
// and the fuzz target check it against github.com/gowebpki/jcs). Key order, whitespace, escapes and number
// spelling do not change it; anything else does. Details.Hash is
// base64url(SHA-256(Canonical)) without padding.
//
// # Type files
//
// A type is one YAML (or JSON) file; unknown and duplicate keys are errors:
//
//	name: payment_initiation            # the RFC 9396 "type" value
//	description: Moves money out of a company account.
//	max_lifetime: 15m                   # Go duration
//	summary: 'Pay {{money .instructedAmount}} to {{.creditorName}} ({{iban .creditorAccount.iban}})'
//	fields:                             # rows of the field table, in order
//	  - {path: /instructedAmount, label: Amount, format: money}
//	  - {path: /creditorName, label: Creditor}
//	amount: /instructedAmount           # optional: the amount the risk rules add up
//	schema:                             # JSON Schema 2020-12 for one element
//	  $schema: https://json-schema.org/draft/2020-12/schema
//	  type: object
//	  additionalProperties: false
//	  ...
//
// Compile adds "type" and the common fields to the schema's top-level
// properties unless it defines them, so additionalProperties: false closes a
// type without rejecting them. Schemas cannot $ref anything outside
// themselves. Formats: the JSON Schema ones, plus "iban" (ISO 13616, mod-97
// check digits; failures are rule iban_checksum, or iban for the shape) and
// "currency" (ISO 4217 codes with minor units). An unknown format is a
// Compile error rather than silently ignored.
//
// Field formats: "" (text; lists joined with ", "; objects as {k: v; ...}),
// "list" (the same, for lists), "money" (an object with currency and amount,
// "1,234.50 EUR", decimals padded to the currency's minor units, never
// rounded), "iban" (in groups of four), "short" (middle shortened,
// "3a7bd3e2…42dd4f1b") and "number" (thousands separators).
//
// # Summaries
//
// The summary is a text/template executed on the element, whose strings have
// been made safe (see below) and cut in the middle to 64 characters. These
// functions are available; each accepts any value and never fails:
//
//	money  {currency, amount} object → "500.00 EUR", "500 JPY", "1.250 BHD"
//	iban   IBAN → "DE89 …3000" (country, check digits, last four)
//	short  string → first 8 and last 8 characters around "…"
//	list   list → "a, b and c", or "a, b, c and 2 more"
//	number integer → "1,200,000"
//	plural n "row" "rows" → "1 row", "1,200 rows"
//
// Templates run with missingkey=error, so a sentence never shows a
// placeholder: a template that reaches for an absent field fails and the
// summary falls back to "Request of type X (see the fields)" with a warning.
// Reach optional fields with index, which yields nothing when absent:
// {{with index . "remittanceInformation"}} ({{.}}){{end}}. The output is
// plain text; escaping for HTML or a notification is the renderer's job.
//
// # Display safety
//
// Agent-supplied strings are made safe before they reach a template or a
// row: control characters are removed (tab, CR and LF become a space);
// direction overrides and isolates, zero-width and other invisible or
// unassigned characters, and a leading combining mark are shown as visible
// escapes such as \u202E, in place, never reordered; a backslash is shown as
// \\ so that \u always means an escape. Values mixing scripts outside the
// combinations normal in one name (UTS #39 "Highly Restrictive": Latin with
// Han and Japanese kana, Hangul or Bopomofo) are flagged. Each Row carries
// its flags and each Summary a warning per flagged row. The rows list every
// value the hash binds (except "type"), so the sentence is never the only
// place something appears.
package rar

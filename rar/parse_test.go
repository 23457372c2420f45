package rar

import (
	"errors"
	"strings"
	"testing"
)

const (
	payment  = `{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"500.00"},"creditorName":"Alice Smith","creditorAccount":{"iban":"DE89370400440532013000"}}`
	dbOp     = `{"type":"database_operation","operation":"DELETE","database":"prod","table":"users","estimated_rows":1200,"statement_sha256":"3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b"}`
	merge    = `{"type":"code_merge","repository":"acme/api","base_branch":"main","pull_request":42,"checks":"passed"}`
	email    = `{"type":"email_send","recipients":["ceo@example.com","auditor@partner.example"],"subject":"Q3 report"}`
	openType = `{"name":"open","max_lifetime":"1m","summary":"open","schema":{"type":"object"}}`
)

// testRegistry is the demo types plus "open", whose schema accepts any
// object, for tests of nesting and numbers.
func testRegistry(tb testing.TB) *Registry {
	tb.Helper()
	open, err := ParseTypeFile([]byte(openType))
	if err != nil {
		tb.Fatal(err)
	}
	r, err := Compile(append(demoTypes(tb), open))
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// with replaces the first occurrence of old in an element.
func with(elem, old, new string) string {
	if !strings.Contains(elem, old) {
		panic("with: " + old + " not in " + elem)
	}
	return strings.Replace(elem, old, new, 1)
}

func arr(elems ...string) string { return "[" + strings.Join(elems, ",") + "]" }

// nested returns an "open" element whose value at /x is n arrays deep.
func nested(n int) string {
	return `{"type":"open","x":` + strings.Repeat("[", n) + `"s"` + strings.Repeat("]", n) + `}`
}

func TestParseValid(t *testing.T) {
	r := testRegistry(t)
	tests := []struct {
		name string
		in   string
	}{
		{"payment", arr(payment)},
		{"payment with reference", arr(with(payment, `"creditorName"`, `"remittanceInformation":"Invoice 7","creditorName"`))},
		{"payment JPY without decimals", arr(with(payment, `"currency":"EUR","amount":"500.00"`, `"currency":"JPY","amount":"500"`))},
		{"payment BHD three decimals", arr(with(payment, `"currency":"EUR","amount":"500.00"`, `"currency":"BHD","amount":"1.250"`))},
		{"payment GB IBAN", arr(with(payment, "DE89370400440532013000", "GB82WEST12345698765432"))},
		{"payment with common fields", arr(with(payment, `"creditorName"`, `"actions":["initiate"],"locations":["https://bank.example"],"datatypes":[],"privileges":["p"],"identifier":"acct-1","creditorName"`))},
		{"database", arr(dbOp)},
		{"database rows as 1e2", arr(with(dbOp, "1200", "1e2"))},
		{"database rows as 1.0", arr(with(dbOp, "1200", "1.0"))},
		{"database zero rows", arr(with(dbOp, "1200", "0"))},
		{"merge", arr(merge)},
		{"email", arr(email)},
		{"all four types", arr(payment, dbOp, merge, email)},
		{"whitespace everywhere", " \n\t[ " + strings.ReplaceAll(merge, ",", " ,\r\n ") + " ]\n"},
		{"surrogate pair", arr(with(payment, "Alice Smith", `Alice \ud83d\ude00`))},
		{"half", arr(`{"type":"open","n":0.5}`)},
		{"tenth", arr(`{"type":"open","n":0.1}`)},
		{"negative zero", arr(`{"type":"open","n":-0}`)},
		{"max double", arr(`{"type":"open","n":1.7976931348623157e308}`)},
		{"min denormal", arr(`{"type":"open","n":5e-324}`)},
		{"2^53", arr(`{"type":"open","n":9007199254740992}`)},
		{"depth exactly at limit", arr(nested(MaxDepth - 2))},
		{"elements exactly at limit", arr(repeat(merge, MaxElements)...)},
		{"bytes exactly at limit", padTo(arr(merge), MaxBytes)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := r.Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if d.Hash != Hash(d.Canonical) || len(d.Elements) == 0 {
				t.Fatalf("inconsistent details: %+v", d)
			}
		})
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// padTo appends whitespace until s is n bytes long.
func padTo(s string, n int) string {
	return s + strings.Repeat(" ", n-len(s))
}

func TestParseInvalid(t *testing.T) {
	r := testRegistry(t)
	tests := []struct {
		name  string
		in    string
		index int
		path  string
		rule  string
	}{
		// Shape of the whole value.
		{"empty input", "", -1, "", "syntax"},
		{"object not array", payment, -1, "", "type"},
		{"string not array", `"x"`, -1, "", "type"},
		{"null not array", `null`, -1, "", "type"},
		{"empty array", `[]`, -1, "", "min_elements"},
		{"element not object", `[1]`, 0, "", "type"},
		{"second element not object", arr(merge, `["x"]`), 1, "", "type"},
		{"trailing comma", arr(merge) + ",", -1, "", "syntax"},
		{"trailing garbage", arr(merge) + " x", -1, "", "syntax"},
		{"comma after last element", `[` + merge + `,]`, 1, "", "syntax"},
		{"unterminated", `[` + merge, -1, "", "syntax"},
		{"byte order mark", "\ufeff" + arr(merge), -1, "", "type"},

		// Limits, one past each.
		{"too many elements", arr(repeat(merge, MaxElements+1)...), -1, "", "max_elements"},
		{"too many bytes", padTo(arr(merge), MaxBytes+1), -1, "", "max_bytes"},
		{"too deep", arr(nested(MaxDepth - 1)), 0, "/x/0/0/0/0/0/0", "max_depth"},
		{"too deep objects", arr(`{"type":"open","a":{"b":{"c":{"d":{"e":{"f":{"g":{}}}}}}}}`), 0, "/a/b/c/d/e/f/g", "max_depth"},

		// Duplicate keys.
		{"duplicate key at top", arr(with(merge, `"checks":"passed"`, `"checks":"passed","checks":"failed"`)), 0, "/checks", "duplicate_key"},
		{"duplicate type", arr(with(merge, `"type":"code_merge"`, `"type":"code_merge","type":"code_merge"`)), 0, "/type", "duplicate_key"},
		{"duplicate key nested", arr(with(payment, `{"iban":"DE89370400440532013000"}`, `{"iban":"DE89370400440532013000","iban":"GB82WEST12345698765432"}`)), 0, "/creditorAccount/iban", "duplicate_key"},
		{"duplicate key by escape", arr(with(merge, `"checks":"passed"`, `"checks":"passed","\u0063hecks":"failed"`)), 0, "/checks", "duplicate_key"},
		{"duplicate key in second element", arr(merge, with(merge, `"repository"`, `"base_branch":"x","repository"`)), 1, "/base_branch", "duplicate_key"},

		// Encoding.
		{"invalid UTF-8 byte", arr(with(payment, "Alice", "Al\xffice")), 0, "/creditorName", "invalid_utf8"},
		{"overlong UTF-8", arr(with(payment, "Alice", "Al\xc0\xafice")), 0, "/creditorName", "invalid_utf8"},
		{"UTF-16 surrogate as UTF-8", arr(with(payment, "Alice", "Al\xed\xa0\x80ice")), 0, "/creditorName", "invalid_utf8"},
		{"invalid UTF-8 in key", arr(with(merge, `"checks"`, "\"che\xffcks\"")), 0, "", "invalid_utf8"},
		{"lone high surrogate", arr(with(payment, "Alice", `Al\ud800ice`)), 0, "/creditorName", "invalid_utf8"},
		{"lone low surrogate", arr(with(payment, "Alice", `Al\udc00ice`)), 0, "/creditorName", "invalid_utf8"},
		{"high surrogate then letter", arr(with(payment, "Alice", `\ud83d\u0041`)), 0, "/creditorName", "invalid_utf8"},
		{"NUL escape", arr(with(payment, "Alice", `Al\u0000ice`)), 0, "/creditorName", "invalid_utf8"},
		{"invalid escape", arr(with(payment, "Alice", `Al\xice`)), 0, "/creditorName", "syntax"},
		{"raw newline in string", arr(with(payment, "Alice", "Al\nice")), 0, "/creditorName", "syntax"},

		// Numbers that would not survive canonicalization.
		{"20-digit integer", arr(with(dbOp, "1200", "12345678901234567890")), 0, "/estimated_rows", "precision"},
		{"2^53+1", arr(with(dbOp, "1200", "9007199254740993")), 0, "/estimated_rows", "precision"},
		{"0.1 spelt to 34 digits", arr(`{"type":"open","n":0.1000000000000000055511151231257827}`), 0, "/n", "precision"},
		{"overflow", arr(`{"type":"open","n":1e400}`), 0, "/n", "precision"},
		{"underflow", arr(`{"type":"open","n":1e-400}`), 0, "/n", "precision"},
		{"precision in array", arr(`{"type":"open","n":[1,2,3.00000000000000000001]}`), 0, "/n/2", "precision"},
		{"leading zero", arr(`{"type":"open","n":01}`), 0, "/n", "syntax"},

		// Types.
		{"unknown type", arr(`{"type":"wire_transfer"}`), 0, "/type", "unknown_type"},
		{"unknown type after valid", arr(merge, `{"type":"Payment_Initiation"}`), 1, "/type", "unknown_type"},
		{"missing type", arr(`{"operation":"DELETE"}`), 0, "/type", "required"},
		{"type not string", arr(`{"type":["code_merge"]}`), 0, "/type", "type"},

		// RFC 9396 §2.2 common fields.
		{"actions not array", arr(with(merge, `"checks"`, `"actions":"merge","checks"`)), 0, "/actions", "type"},
		{"actions item not string", arr(with(merge, `"checks"`, `"actions":["merge",1],"checks"`)), 0, "/actions/1", "type"},
		{"locations object", arr(with(merge, `"checks"`, `"locations":{},"checks"`)), 0, "/locations", "type"},
		{"identifier number", arr(with(merge, `"checks"`, `"identifier":7,"checks"`)), 0, "/identifier", "type"},
		{"privileges null", arr(with(merge, `"checks"`, `"privileges":null,"checks"`)), 0, "/privileges", "type"},
		{"common field on open type", arr(`{"type":"open","datatypes":[null]}`), 0, "/datatypes/0", "type"},

		// payment_initiation.
		{"payment missing creditor", arr(with(payment, `"creditorName":"Alice Smith",`, ``)), 0, "/creditorName", "required"},
		{"payment missing currency", arr(with(payment, `"currency":"EUR",`, ``)), 0, "/instructedAmount/currency", "required"},
		{"payment unknown currency", arr(with(payment, `"EUR"`, `"EURO"`)), 0, "/instructedAmount/currency", "currency"},
		{"payment metal currency", arr(with(payment, `"EUR"`, `"XAU"`)), 0, "/instructedAmount/currency", "currency"},
		{"payment lowercase currency", arr(with(payment, `"EUR"`, `"eur"`)), 0, "/instructedAmount/currency", "currency"},
		{"payment amount as number", arr(with(payment, `"500.00"`, `500`)), 0, "/instructedAmount/amount", "type"},
		{"payment amount with comma", arr(with(payment, `"500.00"`, `"500,00"`)), 0, "/instructedAmount/amount", "pattern"},
		{"payment negative amount", arr(with(payment, `"500.00"`, `"-500.00"`)), 0, "/instructedAmount/amount", "pattern"},
		{"payment JPY with decimals", arr(with(payment, `"currency":"EUR","amount":"500.00"`, `"currency":"JPY","amount":"500.5"`)), 0, "/instructedAmount/amount", "amount_precision"},
		{"payment EUR three decimals", arr(with(payment, `"500.00"`, `"500.001"`)), 0, "/instructedAmount/amount", "amount_precision"},
		{"payment IBAN checksum", arr(with(payment, "DE89370400440532013000", "DE88370400440532013000")), 0, "/creditorAccount/iban", "iban_checksum"},
		{"payment IBAN transposed digits", arr(with(payment, "DE89370400440532013000", "DE89370400440532031000")), 0, "/creditorAccount/iban", "iban_checksum"},
		{"payment IBAN with spaces", arr(with(payment, "DE89370400440532013000", "DE89 3704 0044 0532 0130 00")), 0, "/creditorAccount/iban", "iban"},
		{"payment IBAN lowercase", arr(with(payment, "DE89370400440532013000", "de89370400440532013000")), 0, "/creditorAccount/iban", "iban"},
		{"payment missing IBAN", arr(with(payment, `{"iban":"DE89370400440532013000"}`, `{}`)), 0, "/creditorAccount/iban", "required"},
		{"payment extra field", arr(with(payment, `"creditorName"`, `"debtorName":"Bob","creditorName"`)), 0, "/debtorName", "additionalProperties"},
		{"payment extra nested field", arr(with(payment, `{"iban"`, `{"bic":"DEUTDEFF","iban"`)), 0, "/creditorAccount/bic", "additionalProperties"},
		{"payment empty creditor", arr(with(payment, `"Alice Smith"`, `""`)), 0, "/creditorName", "minLength"},
		{"payment second element", arr(payment, with(payment, `"EUR"`, `"ZZZ"`)), 1, "/instructedAmount/currency", "currency"},

		// database_operation.
		{"database unknown operation", arr(with(dbOp, `"DELETE"`, `"MERGE"`)), 0, "/operation", "enum"},
		{"database lowercase operation", arr(with(dbOp, `"DELETE"`, `"delete"`)), 0, "/operation", "enum"},
		{"database negative rows", arr(with(dbOp, "1200", "-1")), 0, "/estimated_rows", "minimum"},
		{"database fractional rows", arr(with(dbOp, "1200", "1.5")), 0, "/estimated_rows", "type"},
		{"database rows as string", arr(with(dbOp, "1200", `"1200"`)), 0, "/estimated_rows", "type"},
		{"database uppercase hash", arr(with(dbOp, "3a7bd3e2", "3A7BD3E2")), 0, "/statement_sha256", "pattern"},
		{"database short hash", arr(with(dbOp, "3a7bd3e2", "")), 0, "/statement_sha256", "pattern"},
		{"database missing table", arr(with(dbOp, `"table":"users",`, ``)), 0, "/table", "required"},

		// code_merge.
		{"merge PR zero", arr(with(merge, "42", "0")), 0, "/pull_request", "minimum"},
		{"merge PR as string", arr(with(merge, "42", `"42"`)), 0, "/pull_request", "type"},
		{"merge unknown checks", arr(with(merge, `"passed"`, `"ok"`)), 0, "/checks", "enum"},
		{"merge missing repository", arr(with(merge, `"repository":"acme/api",`, ``)), 0, "/repository", "required"},
		{"merge bad repository", arr(with(merge, `"acme/api"`, `"acme"`)), 0, "/repository", "pattern"},

		// email_send.
		{"email no recipients", arr(with(email, `["ceo@example.com","auditor@partner.example"]`, `[]`)), 0, "/recipients", "minItems"},
		{"email bad recipient", arr(with(email, `"auditor@partner.example"`, `"auditor"`)), 0, "/recipients/1", "format"},
		{"email duplicate recipient", arr(with(email, `"auditor@partner.example"`, `"ceo@example.com"`)), 0, "/recipients/1", "uniqueItems"},
		{"email claiming its external domains", arr(with(email, `,"subject"`, `,"external_domains":0,"subject"`)), 0, "/external_domains", "additionalProperties"},
		{"email missing subject", arr(with(email, `,"subject":"Q3 report"`, ``)), 0, "/subject", "required"},
		{"email recipients not list", arr(with(email, `["ceo@example.com","auditor@partner.example"]`, `"ceo@example.com"`)), 0, "/recipients", "type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := r.Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse accepted %q: canonical %s", tt.in, d.Canonical)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Parse error %T %v, want *FieldError", err, err)
			}
			if fe.Index != tt.index || fe.Path != tt.path || fe.Rule != tt.rule {
				t.Errorf("Parse error = {Index: %d, Path: %q, Rule: %q} (%v), want {Index: %d, Path: %q, Rule: %q}",
					fe.Index, fe.Path, fe.Rule, err, tt.index, tt.path, tt.rule)
			}
		})
	}
}

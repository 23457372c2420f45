package rar

import (
	"errors"
	"strings"
	"testing"
)

// payType declares /price as its amount and shows /fee as money, with a
// schema that constrains neither: what is refused here, rar refuses itself.
const payType = `
name: pay
max_lifetime: 1m
summary: 'Pay {{money .price}}'
amount: /price
fields:
  - {path: /fee, label: Fee, format: money}
schema:
  type: object
`

func payRegistry(t *testing.T) *Registry {
	t.Helper()
	typ, err := ParseTypeFile([]byte(payType))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Compile([]Type{typ})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func pay(amount, currency string) string {
	return `{"type":"pay","price":{"amount":` + amount + `,"currency":"` + currency + `"}}`
}

// TestAmountRefused: every amount that is not plainly a non-negative decimal
// in its currency is refused at parse time, naming the field and the rule,
// rather than read as some other number (issue: fmt.Sscan read "12abc" as
// 12, accepted NaN, Inf and -5000).
func TestAmountRefused(t *testing.T) {
	r := payRegistry(t)
	tests := []struct {
		name   string
		amount string // JSON
		cur    string
		path   string
		rule   string
	}{
		{"NaN", `"NaN"`, "EUR", "/price/amount", "amount"},
		{"Inf", `"Inf"`, "EUR", "/price/amount", "amount"},
		{"infinity", `"+Infinity"`, "EUR", "/price/amount", "amount"},
		{"negative", `"-5000"`, "EUR", "/price/amount", "amount"},
		{"negative zero", `"-0"`, "EUR", "/price/amount", "amount"},
		{"trailing letters", `"12abc"`, "EUR", "/price/amount", "amount"},
		{"digit separator", `"1_000"`, "EUR", "/price/amount", "amount"},
		{"thousands comma", `"1,000.00"`, "EUR", "/price/amount", "amount"},
		{"decimal comma", `"500,00"`, "EUR", "/price/amount", "amount"},
		{"exponent", `"1e3"`, "EUR", "/price/amount", "amount"},
		{"huge exponent", `"1e400"`, "EUR", "/price/amount", "amount"},
		{"hex", `"0x10"`, "EUR", "/price/amount", "amount"},
		{"empty", `""`, "EUR", "/price/amount", "amount"},
		{"plus sign", `"+5"`, "EUR", "/price/amount", "amount"},
		{"leading space", `" 5"`, "EUR", "/price/amount", "amount"},
		{"trailing space", `"5 "`, "EUR", "/price/amount", "amount"},
		{"leading zero", `"0500"`, "EUR", "/price/amount", "amount"},
		{"no whole part", `".5"`, "EUR", "/price/amount", "amount"},
		{"no fraction digits", `"5."`, "EUR", "/price/amount", "amount"},
		{"two points", `"1.2.3"`, "EUR", "/price/amount", "amount"},
		{"other digits", `"١٢"`, "EUR", "/price/amount", "amount"},
		{"JSON number", `5000`, "EUR", "/price/amount", "amount"},
		{"JSON null", `null`, "EUR", "/price/amount", "amount"},
		{"too many decimals", `"0.001"`, "EUR", "/price/amount", "amount_precision"},
		{"decimals in JPY", `"1.5"`, "JPY", "/price/amount", "amount_precision"},
		{"huge", `"99999999999999999999999"`, "EUR", "/price/amount", "amount_digits"},
		{"one digit too many in EUR", `"1000000000000000"`, "EUR", "/price/amount", "amount_digits"},
		{"one digit too many in KWD", `"100000000000000"`, "KWD", "/price/amount", "amount_digits"},
		{"unknown currency", `"5"`, "EURO", "/price/currency", "currency"},
		{"no currency", `"5"`, "", "/price/currency", "currency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, in := range []string{
				pay(tt.amount, tt.cur), // the declared amount
				`{"type":"pay","fee":{"amount":` + tt.amount + `,"currency":"` + tt.cur + `"}}`, // a money field
			} {
				d, err := r.Parse([]byte(arr(in)))
				if err == nil {
					t.Fatalf("Parse accepted %s: amount %v", in, d.Elements[0].amount)
				}
				var fe *FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("Parse error %T %v, want *FieldError", err, err)
				}
				path := tt.path
				if strings.Contains(in, `"fee"`) {
					path = strings.Replace(path, "/price", "/fee", 1)
				}
				if fe.Index != 0 || fe.Path != path || fe.Rule != tt.rule {
					t.Errorf("%s: error %v, want %s at %s", in, err, tt.rule, path)
				}
			}
		})
	}
	t.Run("not an object", func(t *testing.T) {
		_, err := r.Parse([]byte(`[{"type":"pay","price":"500.00 EUR"}]`))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Path != "/price" || fe.Rule != "type" {
			t.Errorf("error %v, want type at /price", err)
		}
	})
}

func TestElementAmount(t *testing.T) {
	r := payRegistry(t)
	tests := []struct {
		amount, cur string
		minor       int64
		str         string
		f           float64
	}{
		{"0", "EUR", 0, "0.00", 0},
		{"0.5", "EUR", 50, "0.50", 0.5},
		{"500.00", "EUR", 50000, "500.00", 500},
		{"10000.01", "EUR", 1000001, "10000.01", 10000.01},
		{"999999999999999.99", "EUR", 99999999999999999, "999999999999999.99", 999999999999999.99},
		{"500", "JPY", 500, "500", 500},
		{"99999999999999999", "JPY", 99999999999999999, "99999999999999999", 99999999999999999},
		{"9999.999", "KWD", 9999999, "9999.999", 9999.999},
		{"0.0001", "CLF", 1, "0.0001", 0.0001},
	}
	for _, tt := range tests {
		t.Run(tt.amount+" "+tt.cur, func(t *testing.T) {
			d, err := r.Parse([]byte(arr(pay(`"`+tt.amount+`"`, tt.cur))))
			if err != nil {
				t.Fatal(err)
			}
			a, ok := d.Elements[0].Amount()
			if !ok || a != (Amount{Currency: tt.cur, Minor: tt.minor}) {
				t.Fatalf("Amount() = %+v, %v; want %d minor units of %s", a, ok, tt.minor, tt.cur)
			}
			if a.String() != tt.str || a.Float64() != tt.f {
				t.Errorf("String() %q Float64() %v, want %q %v", a.String(), a.Float64(), tt.str, tt.f)
			}
			back, err := ParseAmount(tt.amount, tt.cur)
			if err != nil || back != a {
				t.Errorf("ParseAmount = %+v, %v; want %+v", back, err, a)
			}
		})
	}
	t.Run("none", func(t *testing.T) {
		d, err := r.Parse([]byte(`[{"type":"pay","fee":{"amount":"1.00","currency":"EUR"}}]`))
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := d.Elements[0].Amount(); ok {
			t.Errorf("an element without its declared amount has Amount() %+v", a)
		}
	})
}

// TestTotals: amounts add up exactly per currency (0.10 + 0.20 is 0.30),
// and amounts of different currencies are never added.
func TestTotals(t *testing.T) {
	r := payRegistry(t)
	d, err := r.Parse([]byte(arr(pay(`"0.10"`, "EUR"), pay(`"7"`, "USD"), `{"type":"pay"}`, pay(`"0.20"`, "EUR"),
		pay(`"999999999999999.99"`, "CHF"), pay(`"999999999999999.99"`, "CHF"))))
	if err != nil {
		t.Fatal(err)
	}
	got := d.Totals()
	want := []Amount{{"CHF", 199999999999999998}, {"EUR", 30}, {"USD", 700}}
	if len(got) != len(want) {
		t.Fatalf("Totals() = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Totals()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	if got[1].String() != "0.30" || got[0].String() != "1999999999999999.98" {
		t.Errorf("sums written %q, %q", got[1], got[0])
	}
	if n := len((&Details{}).Totals()); n != 0 {
		t.Errorf("no elements: %d totals", n)
	}
}

func TestParseDecimal(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"10000.50", 10000.5, true},
		{"0", 0, true},
		{"0.0001", 0.0001, true},
		{"0.12345", 0.12345, true},
		{"12345678901234567", 12345678901234567, true},
		{"123456789012345678", 0, false},
		{"", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1e3", 0, false},
		{"1.", 0, false},
		{".5", 0, false},
		{"01", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"1_000", 0, false},
		{"12abc", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDecimal(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("ParseDecimal(%q) = %v, %v; want %v (ok %v)", tt.in, got, err, tt.want, tt.ok)
			}
			if err != nil && strings.Contains(err.Error(), tt.in) && tt.in != "" {
				t.Errorf("error %q repeats the value", err)
			}
		})
	}
}

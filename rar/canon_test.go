package rar

import (
	"testing"

	"github.com/gowebpki/jcs"
)

func TestCanonicalRejectsInexactVector(t *testing.T) {
	r := testRegistry(t)
	_, err := r.Parse([]byte(`[{"type":"open","n":333333333.33333329}]`))
	if fe, ok := err.(*FieldError); !ok || fe.Rule != "precision" || fe.Path != "/n" {
		t.Fatalf("Parse = %v, want precision error at /n", err)
	}
}

func TestHashEquivalence(t *testing.T) {
	r := testRegistry(t)
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"key order", arr(payment), arr(`{"creditorAccount":{"iban":"DE89370400440532013000"},"creditorName":"Alice Smith","instructedAmount":{"amount":"500.00","currency":"EUR"},"type":"payment_initiation"}`), true},
		{"whitespace", arr(merge), "[\n  " + with(merge, `"checks":"passed"`, "\"checks\" :\t\"passed\"") + "\n]", true},
		{"1.0 and 1", arr(with(dbOp, "1200", "1")), arr(with(dbOp, "1200", "1.0")), true},
		{"1e2 and 100", arr(with(dbOp, "1200", "100")), arr(with(dbOp, "1200", "1e2")), true},
		{"0.5 and 5e-1", arr(`{"type":"open","n":0.5}`), arr(`{"type":"open","n":5e-1}`), true},
		{"-0 and 0", arr(`{"type":"open","n":-0}`), arr(`{"type":"open","n":0}`), true},
		{"escaped letters", arr(merge), arr(with(merge, `"acme/api"`, `"\u0061cme\/api"`)), true},
		{"escaped non-ASCII", arr(with(payment, "Alice", "Zoë")), arr(with(payment, "Alice", `Zo\u00eb`)), true},
		{"amount spelling is meaning", arr(payment), arr(with(payment, `"500.00"`, `"500.0"`)), false},
		{"one digit of the IBAN", arr(payment), arr(with(payment, "DE89370400440532013000", "GB82WEST12345698765432")), false},
		{"creditor name", arr(payment), arr(with(payment, "Alice Smith", "Alice Smith ")), false},
		{"rows", arr(with(dbOp, "1200", "100")), arr(with(dbOp, "1200", "101")), false},
		{"element order", arr(merge, email), arr(email, merge), false},
		{"extra element", arr(merge), arr(merge, merge), false},
		{"extra common field", arr(merge), arr(with(merge, `"checks"`, `"actions":[],"checks"`)), false},
		{"unicode normalization", arr(with(payment, "Alice", "\u00c5lice")), arr(with(payment, "Alice", "A\u030alice")), false},
		{"number and string", arr(`{"type":"open","n":1}`), arr(`{"type":"open","n":"1"}`), false},
		{"null and absent", arr(`{"type":"open","n":null}`), arr(`{"type":"open"}`), false},
		{"nesting", arr(`{"type":"open","n":[[1]]}`), arr(`{"type":"open","n":[1]}`), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			da, err := r.Parse([]byte(tt.a))
			if err != nil {
				t.Fatalf("Parse(a): %v", err)
			}
			db, err := r.Parse([]byte(tt.b))
			if err != nil {
				t.Fatalf("Parse(b): %v", err)
			}
			if same := da.Hash == db.Hash; same != tt.same {
				t.Errorf("hashes equal = %v, want %v\na: %s\nb: %s", same, tt.same, da.Canonical, db.Canonical)
			}
			for _, d := range []*Details{da, db} {
				ref, err := jcs.Transform(d.Canonical)
				if err != nil || string(ref) != string(d.Canonical) {
					t.Errorf("canonical %s is not a JCS fixed point: %s, %v", d.Canonical, ref, err)
				}
			}
		})
	}
}

func TestElementRaw(t *testing.T) {
	r := testRegistry(t)
	d, err := r.Parse([]byte(arr(merge, email)))
	if err != nil {
		t.Fatal(err)
	}
	want := "[" + string(d.Elements[0].Raw) + "," + string(d.Elements[1].Raw) + "]"
	if string(d.Canonical) != want {
		t.Errorf("Canonical = %s, want elements joined: %s", d.Canonical, want)
	}
	if d.Elements[0].Type != "code_merge" || d.Elements[1].Value["subject"] != "Q3 report" {
		t.Errorf("elements = %+v", d.Elements)
	}
}

// TestCanonicalHashMatchesParse: the schema-free hash of a valid request is
// the hash Parse gives it, and it still applies the limits.
func TestCanonicalHashMatchesParse(t *testing.T) {
	reg := demoRegistry(t)
	raw := []byte(`[{"type":"payment_initiation","instructedAmount":{"amount":"500.00","currency":"EUR"},"creditorName":"Alice Smith","creditorAccount":{"iban":"DE89370400440532013000"}}]`)
	d, err := reg.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	h, err := CanonicalHash(raw)
	if err != nil || h != d.Hash {
		t.Fatalf("CanonicalHash = %q, %v; want %q", h, err, d.Hash)
	}
	if _, err := CanonicalHash([]byte(`[{"a":1,"a":2}]`)); err == nil {
		t.Fatal("duplicate keys accepted")
	}
	if _, err := CanonicalHash(make([]byte, MaxBytes+1)); err == nil {
		t.Fatal("oversized input accepted")
	}
}

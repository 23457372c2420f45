package rar

import "testing"

// typicalPayment is one payment_initiation element as an agent sends it.
var typicalPayment = []byte(`[{
  "type": "payment_initiation",
  "actions": ["initiate"],
  "locations": ["https://bank.example.com/payments"],
  "instructedAmount": {"currency": "EUR", "amount": "500.00"},
  "creditorName": "Alice Smith",
  "creditorAccount": {"iban": "DE89370400440532013000"},
  "remittanceInformation": "Invoice 2024-118"
}]`)

// BenchmarkValidateHash measures Parse (scan, validate, canonicalize, hash)
// of one typical payment_initiation element.
func BenchmarkValidateHash(b *testing.B) {
	r := demoRegistry(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalPayment)))
	for b.Loop() {
		if _, err := r.Parse(typicalPayment); err != nil {
			b.Fatal(err)
		}
	}
}

package rar

import (
	"errors"
	"strings"
)

type currency struct {
	exponent int // ISO 4217 minor units: digits after the decimal point
}

// currencies lists the active ISO 4217 codes that have minor units (funds,
// precious metals and testing codes such as XAU, XDR and XTS have none and
// are not money to pay with). Source: ISO 4217 list one, 2025 edition.
var currencies = func() map[string]currency {
	m := map[string]currency{}
	for exp, codes := range []string{
		0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
		2: "AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD " +
			"CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS " +
			"GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL " +
			"MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK " +
			"PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS " +
			"TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG",
		3: "BHD IQD JOD KWD LYD OMR TND",
		4: "CLF UYW",
	} {
		for _, c := range strings.Fields(codes) {
			m[c] = currency{exponent: exp}
		}
	}
	return m
}()

var errCurrency = errors.New("not an ISO 4217 currency code")

// validateCurrencyFormat implements the "currency" format: an active ISO 4217
// alphabetic code with minor units, in capitals.
func validateCurrencyFormat(v any) error {
	s, ok := v.(string)
	if !ok {
		return nil
	}
	if _, ok := currencies[s]; !ok {
		return errCurrency
	}
	return nil
}

package approvals

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"reflect"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

var b64 = base64.RawURLEncoding.EncodeToString

func testAccessClaims() AccessTokenClaims {
	return AccessTokenClaims{
		Issuer:                   "https://countersign.example",
		Subject:                  "usr_alice",
		Audience:                 Audience{"https://bank.example"},
		ClientID:                 "agt_invoices",
		Act:                      Actor{Subject: "agt_invoices"},
		IssuedAt:                 1772366400,
		Expiry:                   1772366700,
		JTI:                      randomString(16),
		Txn:                      "0195a6a4-2f4e-7c1a-9b1e-5d0c3f1e2a77",
		Scope:                    "openid",
		AuthorizationDetails:     json.RawMessage(`[{"amount":"500.00","creditor":"Alice Smith","currency":"EUR","type":"payment_initiation"}]`),
		AuthorizationDetailsHash: "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg",
		ACR:                      "urn:countersign:acr:approval",
		AMR:                      []string{"hwk", "user"},
		AuthTime:                 1772366390,
	}
}

func testIDClaims() IDTokenClaims {
	return IDTokenClaims{
		Issuer:    "https://countersign.example",
		Subject:   "usr_alice",
		Audience:  Audience{"agt_invoices"},
		Expiry:    1772366700,
		IssuedAt:  1772366400,
		AuthTime:  1772366390,
		ACR:       "urn:countersign:acr:approval",
		AMR:       []string{"hwk"},
		AtHash:    "77QmUPtjPfzWtF2AnpK9RQ",
		AuthReqID: "1c266114-a1be-4252-8ad1-04986c5b9ac1",
		Email:     "alice@example.com",
	}
}

// rawJWS builds a compact JWS by hand, so that tests can sign headers that
// Keyring.Sign never would.
func rawJWS(t testing.TB, key crypto.Signer, header any, payload []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	input := b64(h) + "." + b64(payload)
	digest := sha256.Sum256([]byte(input))
	var sig []byte
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		sig = append(r.FillBytes(make([]byte, size)), s.FillBytes(make([]byte, size))...)
	case *rsa.PrivateKey:
		alg, _ := header.(map[string]any)["alg"].(string)
		if alg == "PS256" {
			sig, err = rsa.SignPSS(rand.Reader, k, crypto.SHA256, digest[:], nil)
		} else {
			sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, digest[:])
		}
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("rawJWS: key type %T", key)
	}
	return input + "." + b64(sig)
}

// hmacJWS builds an HS256 JWS with secret as the HMAC key.
func hmacJWS(t testing.TB, secret []byte, header map[string]any, payload []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	input := b64(h) + "." + b64(payload)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + b64(mac.Sum(nil))
}

// ringForTest returns the Keyring of a fresh database with its keys made.
func ringForTest(t *testing.T) (*Keyring, *KeyStore) {
	t.Helper()
	ks, _, _ := ensuredKeys(t)
	ring, err := ks.Keyring(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ring, ks
}

func TestSignVerifyRoundTrip(t *testing.T) {
	ring, _ := ringForTest(t)
	tests := []struct {
		name  string
		alg   jose.SignatureAlgorithm
		typ   string
		want  any
		fresh func() any // a zero value of the claims type, to unmarshal into
	}{
		{"ES256 access token", jose.ES256, TypeAccessToken, testAccessClaims(), func() any { return &AccessTokenClaims{} }},
		{"RS256 access token", jose.RS256, TypeAccessToken, testAccessClaims(), func() any { return &AccessTokenClaims{} }},
		{"ES256 ID token", jose.ES256, TypeIDToken, testIDClaims(), func() any { return &IDTokenClaims{} }},
		{"RS256 ID token", jose.RS256, TypeIDToken, testIDClaims(), func() any { return &IDTokenClaims{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ring.Sign(tt.alg, tt.typ, tt.want)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			hdr, err := peekHeader(tok)
			if err != nil {
				t.Fatal(err)
			}
			if want := (joseHeader{Alg: string(tt.alg), Kid: ring.current[tt.alg].kid, Typ: tt.typ}); hdr != want {
				t.Fatalf("header = %+v, want %+v", hdr, want)
			}
			got := tt.fresh()
			if err := ring.Verify(tok, tt.typ, got); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if g := reflect.ValueOf(got).Elem().Interface(); !reflect.DeepEqual(g, tt.want) {
				t.Fatalf("claims = %+v\nwant %+v", g, tt.want)
			}
		})
	}
}

func TestVerifyTyp(t *testing.T) {
	ring, _ := ringForTest(t)
	tests := []struct {
		header, want string
		ok           bool
	}{
		{"at+jwt", "at+jwt", true},
		{"application/at+jwt", "at+jwt", true},
		{"at+jwt", "application/at+jwt", true},
		{"AT+JWT", "at+jwt", true},
		{"Application/At+JWT", "at+jwt", true},
		{"jwt", "JWT", true},
		{"JWT", "at+jwt", false},
		{"at+jwt", "JWT", false},
		{"text/at+jwt", "at+jwt", false},
		{"application/at+jwt+x", "at+jwt", false},
		{"application/", "at+jwt", false},
	}
	for _, tt := range tests {
		t.Run(tt.header+"→"+tt.want, func(t *testing.T) {
			tok, err := ring.Sign(jose.ES256, tt.header, testAccessClaims())
			if err != nil {
				t.Fatal(err)
			}
			var c AccessTokenClaims
			err = ring.Verify(tok, tt.want, &c)
			if tt.ok && err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrTokenMalformed) {
				t.Fatalf("Verify: %v, want ErrTokenMalformed", err)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	ring, _ := ringForTest(t)
	esKid, rsKid := ring.current[jose.ES256].kid, ring.current[jose.RS256].kid
	esKey, rsKey := ring.private[esKid], ring.private[rsKid]
	claims, err := json.Marshal(testAccessClaims())
	if err != nil {
		t.Fatal(err)
	}
	hdr := func(alg, kid string) map[string]any {
		return map[string]any{"alg": alg, "kid": kid, "typ": "at+jwt"}
	}
	with := func(m map[string]any, k string, v any) map[string]any {
		m[k] = v
		return m
	}
	attacker, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	attackerJWK := jose.JSONWebKey{Key: attacker.Public(), KeyID: esKid, Algorithm: "ES256"}
	rsPub, err := x509.MarshalPKIXPublicKey(rsKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	rsPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsPub})
	jwks := ring.JWKS()
	rsJWK, err := json.Marshal(jwks.Key(rsKid)[0])
	if err != nil {
		t.Fatal(err)
	}
	valid, err := ring.Sign(jose.ES256, TypeAccessToken, testAccessClaims())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(valid, ".")
	idToken, err := ring.Sign(jose.RS256, TypeIDToken, testIDClaims())
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		token func(t *testing.T) string
		want  error
	}{
		{"alg none", func(t *testing.T) string {
			h, _ := json.Marshal(hdr("none", esKid))
			return b64(h) + "." + b64(claims) + "."
		}, ErrTokenSignature},
		{"alg None", func(t *testing.T) string {
			h, _ := json.Marshal(hdr("None", esKid))
			return b64(h) + "." + b64(claims) + "."
		}, ErrTokenSignature},
		{"HS256 keyed with the RSA public key PEM", func(t *testing.T) string {
			return hmacJWS(t, rsPEM, hdr("HS256", rsKid), claims)
		}, ErrTokenSignature},
		{"HS256 keyed with the published JWK", func(t *testing.T) string {
			return hmacJWS(t, rsJWK, hdr("HS256", rsKid), claims)
		}, ErrTokenSignature},
		{"PS256 with the RSA key", func(t *testing.T) string {
			return rawJWS(t, rsKey, hdr("PS256", rsKid), claims)
		}, ErrTokenSignature},
		{"RS256 header on the ES256 key", func(t *testing.T) string {
			return rawJWS(t, rsKey, hdr("RS256", esKid), claims)
		}, ErrTokenSignature},
		{"ES256 header on the RS256 key", func(t *testing.T) string {
			return rawJWS(t, esKey, hdr("ES256", rsKid), claims)
		}, ErrTokenSignature},
		{"signed by another key under our kid", func(t *testing.T) string {
			return rawJWS(t, attacker, hdr("ES256", esKid), claims)
		}, ErrTokenSignature},
		{"tampered payload", func(t *testing.T) string {
			c := testAccessClaims()
			c.Subject = "usr_mallory"
			p, _ := json.Marshal(c)
			return parts[0] + "." + b64(p) + "." + parts[2]
		}, ErrTokenSignature},
		{"tampered signature", func(t *testing.T) string {
			sig := []byte(parts[2])
			if sig[10] == 'A' {
				sig[10] = 'B'
			} else {
				sig[10] = 'A'
			}
			return parts[0] + "." + parts[1] + "." + string(sig)
		}, ErrTokenSignature},
		{"signature of another token", func(t *testing.T) string {
			other, err := ring.Sign(jose.ES256, TypeAccessToken, testAccessClaims())
			if err != nil {
				t.Fatal(err)
			}
			return parts[0] + "." + parts[1] + "." + strings.Split(other, ".")[2]
		}, ErrTokenSignature},
		{"ID token as access token", func(t *testing.T) string { return idToken }, ErrTokenMalformed},
		{"no typ", func(t *testing.T) string {
			return rawJWS(t, esKey, map[string]any{"alg": "ES256", "kid": esKid}, claims)
		}, ErrTokenMalformed},
		{"unknown kid", func(t *testing.T) string {
			return rawJWS(t, esKey, hdr("ES256", "no-such-kid"), claims)
		}, ErrUnknownKey},
		{"no kid", func(t *testing.T) string {
			return rawJWS(t, esKey, map[string]any{"alg": "ES256", "typ": "at+jwt"}, claims)
		}, ErrUnknownKey},
		{"embedded jwk", func(t *testing.T) string {
			return rawJWS(t, attacker, with(hdr("ES256", esKid), "jwk", attackerJWK), claims)
		}, ErrTokenMalformed},
		{"jku", func(t *testing.T) string {
			return rawJWS(t, esKey, with(hdr("ES256", esKid), "jku", "https://attacker.example/jwks"), claims)
		}, ErrTokenMalformed},
		{"crit b64", func(t *testing.T) string {
			h := with(with(hdr("ES256", esKid), "crit", []string{"b64"}), "b64", false)
			return rawJWS(t, esKey, h, claims)
		}, ErrTokenMalformed},
		{"payload not JSON", func(t *testing.T) string {
			return rawJWS(t, esKey, hdr("ES256", esKid), []byte("hello"))
		}, ErrTokenMalformed},
		{"payload a JSON array", func(t *testing.T) string {
			return rawJWS(t, esKey, hdr("ES256", esKid), []byte(`[1,2]`))
		}, ErrTokenMalformed},
		{"JWE", func(t *testing.T) string {
			enc, err := jose.NewEncrypter(jose.A128GCM,
				jose.Recipient{Algorithm: jose.RSA_OAEP_256, Key: rsKey.Public(), KeyID: rsKid},
				(&jose.EncrypterOptions{}).WithType("at+jwt"))
			if err != nil {
				t.Fatal(err)
			}
			obj, err := enc.Encrypt(claims)
			if err != nil {
				t.Fatal(err)
			}
			s, err := obj.CompactSerialize()
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, ErrTokenMalformed},
		{"JWS JSON serialization", func(t *testing.T) string {
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: esKey, KeyID: esKid}},
				(&jose.SignerOptions{}).WithType("at+jwt"))
			if err != nil {
				t.Fatal(err)
			}
			obj, err := signer.Sign(claims)
			if err != nil {
				t.Fatal(err)
			}
			return obj.FullSerialize()
		}, ErrTokenMalformed},
		{"empty", func(t *testing.T) string { return "" }, ErrTokenMalformed},
		{"dots only", func(t *testing.T) string { return ".." }, ErrTokenMalformed},
		{"four parts", func(t *testing.T) string { return valid + ".x" }, ErrTokenMalformed},
		{"header not base64url", func(t *testing.T) string { return "e30+." + parts[1] + "." + parts[2] }, ErrTokenMalformed},
		{"header not an object", func(t *testing.T) string { return b64([]byte(`"ES256"`)) + "." + parts[1] + "." + parts[2] }, ErrTokenMalformed},
		{"kid not a string", func(t *testing.T) string {
			return rawJWS(t, esKey, map[string]any{"alg": "ES256", "kid": 7, "typ": "at+jwt"}, claims)
		}, ErrTokenMalformed},
		{"too long", func(t *testing.T) string {
			return rawJWS(t, esKey, hdr("ES256", esKid), []byte(`{"x":"`+strings.Repeat("a", maxTokenSize)+`"}`))
		}, ErrTokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c AccessTokenClaims
			err := ring.Verify(tt.token(t), TypeAccessToken, &c)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
			if c.Subject != "" {
				t.Fatalf("claims filled in from a rejected token: %+v", c)
			}
		})
	}
	// The valid token used above really is valid, so each case fails for its own reason.
	var c AccessTokenClaims
	if err := ring.Verify(valid, TypeAccessToken, &c); err != nil {
		t.Fatalf("valid token: %v", err)
	}
}

func TestSignErrors(t *testing.T) {
	ring := memKeyring(t)
	tests := []struct {
		name   string
		alg    jose.SignatureAlgorithm
		typ    string
		claims any
	}{
		{"no typ", jose.ES256, "", testAccessClaims()},
		{"alg without a key", jose.ES384, TypeAccessToken, testAccessClaims()},
		{"alg none", "none", TypeAccessToken, testAccessClaims()},
		{"claims not an object", jose.ES256, TypeAccessToken, "just a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tok, err := ring.Sign(tt.alg, tt.typ, tt.claims); err == nil {
				t.Fatalf("Sign = %q, want an error", tok)
			}
		})
	}
}

// TestJWKSVerifiesIndependently checks the published keys with go-jose's own
// JWT verification, as a resource server would.
func TestJWKSVerifiesIndependently(t *testing.T) {
	ring, ks := ringForTest(t)
	ctx := context.Background()
	var tokens []string
	for _, alg := range []jose.SignatureAlgorithm{jose.ES256, jose.RS256} {
		tok, err := ring.Sign(alg, TypeAccessToken, testAccessClaims())
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, tok)
	}
	if _, err := ks.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	ring, err := ks.Keyring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []jose.SignatureAlgorithm{jose.ES256, jose.RS256} {
		tok, err := ring.Sign(alg, TypeAccessToken, testAccessClaims())
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, tok)
	}

	published, err := json.Marshal(ring.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(published, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Keys) != 4 {
		t.Fatalf("JWKS has %d keys, want 4: %s", len(raw.Keys), published)
	}
	for _, k := range raw.Keys {
		if k["use"] != "sig" || k["kid"] == nil || (k["alg"] != "ES256" && k["alg"] != "RS256") {
			t.Errorf("JWKS key %v lacks use/kid/alg", k)
		}
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			if _, ok := k[private]; ok {
				t.Errorf("JWKS key %v has private member %q", k["kid"], private)
			}
		}
	}

	var set jose.JSONWebKeySet
	if err := json.Unmarshal(published, &set); err != nil {
		t.Fatal(err)
	}
	for i, tok := range tokens {
		parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
		if err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		keys := set.Key(parsed.Headers[0].KeyID)
		if len(keys) != 1 || !keys[0].IsPublic() {
			t.Fatalf("token %d: kid %q names %d public keys", i, parsed.Headers[0].KeyID, len(keys))
		}
		var std jwt.Claims
		var at AccessTokenClaims
		if err := parsed.Claims(keys[0].Key, &std, &at); err != nil {
			t.Fatalf("token %d: go-jose verification: %v", i, err)
		}
		if std.Subject != "usr_alice" || at.Txn != testAccessClaims().Txn || !std.Audience.Contains("https://bank.example") {
			t.Fatalf("token %d: claims %+v %+v", i, std, at)
		}
		// And a key of the other token's kind does not verify it.
		for _, other := range set.Keys {
			if other.KeyID == keys[0].KeyID || other.Algorithm != keys[0].Algorithm {
				continue
			}
			if err := parsed.Claims(other.Key, &std); err == nil {
				t.Fatalf("token %d verified with key %s", i, other.KeyID)
			}
		}
	}
}

func TestAudienceJSON(t *testing.T) {
	tests := []struct {
		name string
		aud  Audience
		json string
	}{
		{"one", Audience{"https://bank.example"}, `"https://bank.example"`},
		{"two", Audience{"https://bank.example", "https://mail.example"}, `["https://bank.example","https://mail.example"]`},
		{"none", Audience{}, `[]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.aud)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.json {
				t.Fatalf("Marshal = %s, want %s", b, tt.json)
			}
			var back Audience
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if len(back) != len(tt.aud) || (len(back) > 0 && !reflect.DeepEqual(back, tt.aud)) {
				t.Fatalf("Unmarshal = %#v, want %#v", back, tt.aud)
			}
		})
	}

	unmarshal := []struct {
		name string
		json string
		want Audience
		ok   bool
	}{
		{"string", `"a"`, Audience{"a"}, true},
		{"array of one", `["a"]`, Audience{"a"}, true},
		{"array of two", `["a","b"]`, Audience{"a", "b"}, true},
		{"number", `7`, nil, false},
		{"object", `{"a":1}`, nil, false},
		{"array of numbers", `[1]`, nil, false},
	}
	for _, tt := range unmarshal {
		t.Run("unmarshal "+tt.name, func(t *testing.T) {
			var got Audience
			err := json.Unmarshal([]byte(tt.json), &got)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if tt.ok && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}

	// In a claim set: one audience is a string, two are an array.
	c := testAccessClaims()
	b, _ := json.Marshal(c)
	if !strings.Contains(string(b), `"aud":"https://bank.example"`) {
		t.Errorf("one audience: %s", b)
	}
	c.Audience = append(c.Audience, "https://mail.example")
	b, _ = json.Marshal(c)
	if !strings.Contains(string(b), `"aud":["https://bank.example","https://mail.example"]`) {
		t.Errorf("two audiences: %s", b)
	}
	if !c.Audience.Contains("https://mail.example") || c.Audience.Contains("https://other.example") {
		t.Error("Contains")
	}
}

// TestClaimNames pins the JSON member names other programs rely on.
func TestClaimNames(t *testing.T) {
	tests := []struct {
		name   string
		claims any
		want   string
	}{
		{"access token", testAccessClaims(), `{
			"iss": "https://countersign.example", "sub": "usr_alice", "aud": "https://bank.example",
			"client_id": "agt_invoices", "act": {"sub": "agt_invoices"}, "iat": 1772366400, "exp": 1772366700,
			"jti": "JTI", "txn": "0195a6a4-2f4e-7c1a-9b1e-5d0c3f1e2a77", "scope": "openid",
			"authorization_details": [{"amount":"500.00","creditor":"Alice Smith","currency":"EUR","type":"payment_initiation"}],
			"authorization_details_hash": "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg",
			"acr": "urn:countersign:acr:approval", "amr": ["hwk","user"], "auth_time": 1772366390}`},
		{"ID token", testIDClaims(), `{
			"iss": "https://countersign.example", "sub": "usr_alice", "aud": "agt_invoices",
			"exp": 1772366700, "iat": 1772366400, "auth_time": 1772366390,
			"acr": "urn:countersign:acr:approval", "amr": ["hwk"], "at_hash": "77QmUPtjPfzWtF2AnpK9RQ",
			"urn:openid:params:jwt:claim:auth_req_id": "1c266114-a1be-4252-8ad1-04986c5b9ac1",
			"email": "alice@example.com"}`},
		{"ID token, optional claims empty", IDTokenClaims{Issuer: "i", Subject: "s", Audience: Audience{"c"}, Expiry: 2, IssuedAt: 1},
			`{"iss": "i", "sub": "s", "aud": "c", "exp": 2, "iat": 1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.claims)
			if err != nil {
				t.Fatal(err)
			}
			var got, want map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
				t.Fatal(err)
			}
			if _, ok := got["jti"]; ok {
				got["jti"] = "JTI" // random
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("JSON = %s\nwant %s", b, tt.want)
			}
		})
	}
}

func TestAtHash(t *testing.T) {
	// The example access token of OpenID Connect Core 1.0, Appendix A.
	const token = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
	tests := []struct {
		alg  jose.SignatureAlgorithm
		want string
	}{
		{jose.RS256, "77QmUPtjPfzWtF2AnpK9RQ"},
		{jose.ES256, "77QmUPtjPfzWtF2AnpK9RQ"},
		{jose.ES384, "jtAeDp945y1dDqU3nkIVGNZP1HjH_MFs"}, // SHA-384, left 24 bytes
		{"none", ""},
		{jose.EdDSA, ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.alg), func(t *testing.T) {
			if got := AtHash(tt.alg, token); got != tt.want {
				t.Fatalf("AtHash = %q, want %q", got, tt.want)
			}
		})
	}
	if AtHash(jose.ES256, token+"x") == AtHash(jose.ES256, token) {
		t.Fatal("different tokens, same at_hash")
	}
}

// FuzzKeyringVerify checks that Verify never panics and that every error
// wraps one of its sentinels.
func FuzzKeyringVerify(f *testing.F) {
	ring := memKeyring(f)
	for _, alg := range []jose.SignatureAlgorithm{jose.ES256, jose.RS256} {
		tok, err := ring.Sign(alg, TypeAccessToken, testAccessClaims())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
		parts := strings.Split(tok, ".")
		f.Add(parts[0] + "." + parts[1] + ".")
		f.Add(parts[0] + ".." + parts[2])
	}
	f.Add("")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add(`{"payload":"e30","signatures":[]}`)
	f.Fuzz(func(t *testing.T, token string) {
		var c AccessTokenClaims
		err := ring.Verify(token, TypeAccessToken, &c)
		if err != nil && !errors.Is(err, ErrTokenMalformed) && !errors.Is(err, ErrTokenSignature) && !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("Verify(%q) = %v, not a token error", token, err)
		}
	})
}

// memKeyring builds a Keyring without a database, for fuzzing.
func memKeyring(t testing.TB) *Keyring {
	t.Helper()
	ks := &KeyStore{sealKey: DeriveKey(testKEK(7), sealPurpose)}
	var rows []keyRow
	for _, alg := range []jose.SignatureAlgorithm{jose.ES256, jose.RS256} {
		k, err := ks.newKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, keyRow{KID: k.kid, Alg: string(alg), PublicJWK: []byte(k.publicJWK), PrivateSealed: k.sealed, Status: KeyCurrent})
	}
	ring, err := newKeyring(ks.sealKey, rows)
	if err != nil {
		t.Fatal(err)
	}
	return ring
}

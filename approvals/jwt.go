package approvals

import (
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/countersign/countersign/protocol"
)

// Errors of token verification. Every error Verify returns wraps exactly one
// of them.
var (
	// ErrTokenMalformed: not a compact JWS, an undecodable header or
	// payload, an unexpected header parameter, or the wrong typ.
	ErrTokenMalformed = errors.New("approvals: malformed token")
	// ErrTokenSignature: an algorithm other than ES256/RS256 (alg "none",
	// HS256, …), an alg that is not the key's, or a signature that does not
	// verify.
	ErrTokenSignature = errors.New("approvals: bad token signature")
	// ErrUnknownKey: no kid, or a kid that names no current or previous key.
	ErrUnknownKey = errors.New("approvals: unknown signing key")
)

// Token types for the typ header.
const (
	TypeAccessToken = protocol.TypeAccessToken
	TypeIDToken     = protocol.TypeIDToken
)

// maxTokenSize bounds the work done on a token before its signature is
// checked. authorization_details are at most 16 KiB, so a genuine token
// stays well below it.
const maxTokenSize = 64 << 10

// acceptedAlgs are the only JWS algorithms Countersign signs with or accepts
// (RFC 8725 §3.1: the verifier chooses the algorithms, never the token).
var acceptedAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.RS256}

// AccessTokenClaims are the claims of a single-transaction access token.
type AccessTokenClaims = protocol.AccessTokenClaims

// Actor is the RFC 8693 §4.1 act claim.
type Actor = protocol.Actor

// IDTokenClaims are the claims of an ID token.
type IDTokenClaims = protocol.IDTokenClaims

// Audience is the aud claim.
type Audience = protocol.Audience

// AtHash returns the at_hash of an access token (OpenID Connect Core 1.0
// §3.1.3.6): "the base64url encoding of the left-most half of the hash of the
// octets of the ASCII representation of the access_token value, where the
// hash algorithm used is the hash algorithm used in the alg Header Parameter
// of the ID Token's JOSE Header." It returns "" for an alg whose hash it does
// not know.
func AtHash(alg jose.SignatureAlgorithm, accessToken string) string {
	var h hash.Hash
	switch alg {
	case jose.ES256, jose.RS256, jose.PS256, jose.HS256:
		h = sha256.New()
	case jose.ES384, jose.RS384, jose.PS384, jose.HS384:
		h = sha512.New384()
	case jose.ES512, jose.RS512, jose.PS512, jose.HS512:
		h = sha512.New()
	default:
		return ""
	}
	h.Write([]byte(accessToken))
	sum := h.Sum(nil)
	return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
}

// Keyring is an immutable snapshot of the signing keys: the current and
// previous keys of each algorithm. Retired keys are not in it, so tokens
// signed with them no longer verify.
type Keyring struct {
	keys    map[string]ringKey                  // by kid: every published key
	current map[jose.SignatureAlgorithm]ringKey // the signing key of each alg
	private map[string]crypto.Signer            // by kid: current keys only
	jwks    []jose.JSONWebKey                   // public keys, in a stable order
	signers sync.Map                            // kid + " " + typ → jose.Signer, made on first use
}

// ringKey is one public key of a Keyring.
type ringKey struct {
	kid    string
	alg    jose.SignatureAlgorithm
	status string
	public crypto.PublicKey
}

// JWKS returns the published public keys (next, current, previous), each with kid, alg and
// use "sig" (RFC 7517 §4). Serving the previous keys lets resource servers
// verify tokens signed just before a rotation.
func (k *Keyring) JWKS() jose.JSONWebKeySet {
	keys := make([]jose.JSONWebKey, len(k.jwks))
	copy(keys, k.jwks)
	return jose.JSONWebKeySet{Keys: keys}
}

// Sign returns a compact JWS of claims signed with the current key of alg,
// whose header carries kid and typ ("at+jwt" for access tokens per RFC 9068
// §2.1, "JWT" for ID tokens).
func (k *Keyring) Sign(alg jose.SignatureAlgorithm, typ string, claims any) (string, error) {
	// RFC 8725 §3.11: every token Countersign issues is explicitly typed.
	if typ == "" {
		return "", errors.New("approvals: sign: empty typ")
	}
	cur, ok := k.current[alg]
	if !ok {
		return "", fmt.Errorf("approvals: no current %s signing key", alg)
	}
	signer, err := k.signer(cur, typ)
	if err != nil {
		return "", err
	}
	// The claims are marshalled once, as they are: the JWT builder's merge
	// of claim sets would decode and re-encode them (authorization_details
	// included) through a map.
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("approvals: sign: %w", err)
	}
	if len(payload) == 0 || payload[0] != '{' { // RFC 7519 §7.2: a JSON object
		return "", fmt.Errorf("approvals: sign: claims must be a JSON object, not %.20s", payload)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("approvals: sign with %s: %w", cur.kid, err)
	}
	return jws.CompactSerialize()
}

// signer returns the JOSE signer of key cur for tokens typed typ, made once
// per keyring (a signer is safe for concurrent use).
func (k *Keyring) signer(cur ringKey, typ string) (jose.Signer, error) {
	id := cur.kid + " " + typ
	if s, ok := k.signers.Load(id); ok {
		return s.(jose.Signer), nil
	}
	s, err := jose.NewSigner(
		jose.SigningKey{Algorithm: cur.alg, Key: jose.JSONWebKey{Key: k.private[cur.kid], KeyID: cur.kid}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)),
	)
	if err != nil {
		return nil, fmt.Errorf("approvals: signer %s: %w", cur.kid, err)
	}
	k.signers.Store(id, s)
	return s, nil
}

// Verify checks token and unmarshals its payload into claims. It accepts
// only the JWS Compact Serialization, alg ES256 or RS256 equal to the alg of
// the key named by kid, a kid of a current or previous key, and a typ header
// equal to typ. It does not check exp, iat, iss or aud: the caller decides
// (/redeem reports an expired token distinctly).
//
// Errors wrap ErrTokenMalformed, ErrTokenSignature or ErrUnknownKey.
func (k *Keyring) Verify(token string, typ string, claims any) error {
	hdr, err := peekHeader(token)
	if err != nil {
		return err
	}
	// RFC 8725 §3.1: use only the algorithms this verifier chose.
	if hdr.Alg != string(jose.ES256) && hdr.Alg != string(jose.RS256) {
		return fmt.Errorf("%w: alg %q not accepted", ErrTokenSignature, hdr.Alg)
	}
	if hdr.Kid == "" {
		return fmt.Errorf("%w: no kid", ErrUnknownKey)
	}
	key, ok := k.keys[hdr.Kid]
	if !ok {
		return fmt.Errorf("%w: kid %q", ErrUnknownKey, hdr.Kid)
	}
	// RFC 8725 §3.1 and RFC 7518 §3.1: each key is used with one algorithm
	// only; a header alg that differs from it is an algorithm-confusion attempt.
	if hdr.Alg != string(key.alg) {
		return fmt.Errorf("%w: alg %s for a %s key", ErrTokenSignature, hdr.Alg, key.alg)
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{key.alg})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrTokenMalformed, err)
	}
	payload, err := jws.Verify(key.public)
	if err != nil {
		return fmt.Errorf("%w: kid %q", ErrTokenSignature, hdr.Kid)
	}
	// RFC 8725 §3.11: explicit typing keeps one kind of JWT from being used
	// as another (an ID token as an access token). RFC 7515 §4.1.9: the
	// "application/" prefix may be omitted and the comparison ignores case.
	if !sameType(hdr.Typ, typ) {
		return fmt.Errorf("%w: typ %q, want %q", ErrTokenMalformed, hdr.Typ, typ)
	}
	if err := json.Unmarshal(payload, claims); err != nil {
		return fmt.Errorf("%w: payload: %v", ErrTokenMalformed, err)
	}
	return nil
}

// joseHeader is the protected header of a token, read before verification
// to choose the key. Only these three parameters are allowed.
type joseHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// peekHeader decodes the header of a compact JWS without trusting it.
//
// Countersign never sets jwk, jku, x5u, x5c, crit, b64 or cty, so a header
// that has any parameter other than alg, kid and typ is rejected rather than
// interpreted (RFC 8725 §3.10: do not fetch or trust keys named by the token).
func peekHeader(token string) (joseHeader, error) {
	var h joseHeader
	if len(token) > maxTokenSize {
		return h, fmt.Errorf("%w: longer than %d bytes", ErrTokenMalformed, maxTokenSize)
	}
	// RFC 7515 §7.1: BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature).
	// A JWE has five parts; the JSON serialization has no dots at this level.
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return h, fmt.Errorf("%w: not a compact JWS", ErrTokenMalformed)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return h, fmt.Errorf("%w: header is not base64url", ErrTokenMalformed)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return h, fmt.Errorf("%w: header is not a JSON object", ErrTokenMalformed)
	}
	for name := range fields {
		switch name {
		case "alg", "kid", "typ":
		default:
			return h, fmt.Errorf("%w: header parameter %q not accepted", ErrTokenMalformed, name)
		}
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return h, fmt.Errorf("%w: header: %v", ErrTokenMalformed, err)
	}
	return h, nil
}

// sameType compares media types as RFC 7515 §4.1.9 asks for typ: "A
// recipient using the media type value MUST treat it as if "application/"
// were prepended to any "typ" value not containing a '/'", and media types
// are compared without case.
func sameType(got, want string) bool {
	return strings.EqualFold(fullMediaType(got), fullMediaType(want))
}

func fullMediaType(t string) string {
	if !strings.Contains(t, "/") {
		return "application/" + t
	}
	return t
}

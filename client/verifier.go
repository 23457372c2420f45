package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/countersign/countersign/protocol"
	"github.com/countersign/countersign/rar/canonical"
)

// Errors of token verification and redemption. Every error Verify returns
// wraps one of them; Redeem's *RedeemError matches them too.
var (
	// ErrInvalidToken: not a Countersign access token — malformed, the
	// wrong typ, alg or issuer, a bad signature, or claims that do not
	// hold together.
	ErrInvalidToken = errors.New("client: invalid token")
	// ErrUnknownKey: the token's kid is not in the JWKS, even after
	// fetching it again.
	ErrUnknownKey = errors.New("client: unknown signing key")
	// ErrTokenExpired: the token has expired.
	ErrTokenExpired = errors.New("client: token expired")
	// ErrWrongAudience: the token is not for this resource server.
	ErrWrongAudience = errors.New("client: token not for this audience")
)

// maxTokenBytes bounds the work done on a token before its signature is
// checked (the server's own bound).
const maxTokenBytes = 64 << 10

// verifyLeeway is the clock skew allowed between Countersign and the
// resource server on exp and iat.
const verifyLeeway = 30 * time.Second

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Issuer is Countersign's issuer URL: the iss of every token, and
	// where the metadata names jwks_uri.
	Issuer string
	// Audience is this resource server's registered audience; a token
	// whose aud does not name it is refused (RFC 9068 §4).
	Audience string
	// MinRefresh is the shortest time between two fetches of the JWKS made
	// because a token named an unknown kid (default 10 s), so a stream of
	// made-up kids cannot make the verifier hammer the server.
	MinRefresh time.Duration
	HTTPClient *http.Client
}

// Verifier checks access tokens offline: signature (ES256 or RS256, by a
// key of the server's JWKS), typ at+jwt, iss, aud, exp, and that
// authorization_details_hash is the hash of the token's
// authorization_details. It is safe for concurrent use.
type Verifier struct {
	issuer, audience string
	meta             *metadataSource
	keys             *jwksCache
}

// NewVerifier checks cfg and returns a Verifier. It fetches nothing yet.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Audience == "" {
		return nil, errors.New("client: the Verifier needs the resource server's Audience")
	}
	meta, err := newMetadataSource(cfg.Issuer, cfg.HTTPClient)
	if err != nil {
		return nil, err
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = 10 * time.Second
	}
	return &Verifier{issuer: meta.issuer, audience: cfg.Audience, meta: meta,
		keys: &jwksCache{meta: meta, http: httpClient(cfg.HTTPClient), minRefresh: cfg.MinRefresh, now: time.Now}}, nil
}

// header is a token's protected header. Countersign sets only these three
// parameters; a token with others (jwk, jku, x5u, crit, …) is refused
// rather than interpreted (RFC 8725 §3.10).
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// Verify checks token and returns its claims.
func (v *Verifier) Verify(ctx context.Context, token string) (*protocol.AccessTokenClaims, error) {
	h, err := peekHeader(token)
	if err != nil {
		return nil, err
	}
	// RFC 9068 §4: the typ is at+jwt (RFC 7515 §4.1.9: with or without
	// "application/", without case).
	if t := strings.TrimPrefix(strings.ToLower(h.Typ), "application/"); t != protocol.TypeAccessToken {
		return nil, fmt.Errorf("%w: typ %q", ErrInvalidToken, h.Typ)
	}
	// RFC 8725 §3.1: the verifier chooses the algorithms.
	alg := jose.SignatureAlgorithm(h.Alg)
	if alg != jose.ES256 && alg != jose.RS256 {
		return nil, fmt.Errorf("%w: alg %q", ErrInvalidToken, h.Alg)
	}
	key, err := v.keys.key(ctx, h.Kid)
	if err != nil {
		return nil, err
	}
	// RFC 7518 §3.1: each key signs with one algorithm only.
	if key.Algorithm != string(alg) {
		return nil, fmt.Errorf("%w: alg %s for a %s key", ErrInvalidToken, alg, key.Algorithm)
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{alg})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	payload, err := jws.Verify(key.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: signature", ErrInvalidToken)
	}
	var c protocol.AccessTokenClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrInvalidToken, err)
	}
	now := time.Now()
	switch {
	case c.Issuer != v.issuer:
		return nil, fmt.Errorf("%w: iss %q", ErrInvalidToken, c.Issuer)
	case c.Expiry == 0 || c.JTI == "" || c.Txn == "":
		return nil, fmt.Errorf("%w: exp, jti and txn are required", ErrInvalidToken)
	case !now.Before(time.Unix(c.Expiry, 0).Add(verifyLeeway)):
		return nil, ErrTokenExpired
	case time.Unix(c.IssuedAt, 0).After(now.Add(verifyLeeway)):
		return nil, fmt.Errorf("%w: iat is in the future", ErrInvalidToken)
	case !c.Audience.Contains(v.audience):
		return nil, ErrWrongAudience
	}
	// The hash is what /redeem compares; the details are what a person
	// read. They must be the same request.
	if h, err := canonical.DetailsHash(c.AuthorizationDetails); err != nil || h != c.AuthorizationDetailsHash {
		return nil, fmt.Errorf("%w: authorization_details_hash does not match authorization_details", ErrInvalidToken)
	}
	return &c, nil
}

// peekHeader decodes the protected header of a compact JWS without trusting
// it, to choose the key.
func peekHeader(token string) (header, error) {
	var h header
	if len(token) > maxTokenBytes {
		return h, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenBytes)
	}
	// RFC 7515 §7.1: header "." payload "." signature.
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return h, fmt.Errorf("%w: not a compact JWS", ErrInvalidToken)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return h, fmt.Errorf("%w: header is not base64url", ErrInvalidToken)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return h, fmt.Errorf("%w: header is not a JSON object", ErrInvalidToken)
	}
	for name := range fields {
		if name != "alg" && name != "kid" && name != "typ" {
			return h, fmt.Errorf("%w: header parameter %q", ErrInvalidToken, name)
		}
	}
	if err := json.Unmarshal(raw, &h); err != nil || h.Kid == "" {
		return h, fmt.Errorf("%w: header needs alg, kid and typ", ErrInvalidToken)
	}
	return h, nil
}

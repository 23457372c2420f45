package protocol

import (
	"encoding/json"
	"errors"
	"slices"
)

// Token types for the JWS typ header.
const (
	// TypeAccessToken is the typ of access tokens (RFC 9068 §2.1).
	TypeAccessToken = "at+jwt"
	// TypeIDToken is the typ of ID tokens.
	TypeIDToken = "JWT"
)

// AccessTokenClaims are the claims of a single-transaction access token
// (RFC 9068 + RFC 9396 + RFC 8693 act).
type AccessTokenClaims struct {
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"` // the user
	Audience Audience `json:"aud"` // a string when there is one audience
	ClientID string   `json:"client_id"`
	Act      Actor    `json:"act"` // RFC 8693 §4.1: {"sub": client_id}
	IssuedAt int64    `json:"iat"`
	Expiry   int64    `json:"exp"`
	JTI      string   `json:"jti"`
	Txn      string   `json:"txn"` // the request id
	Scope    string   `json:"scope,omitempty"`
	// RFC 9396 §9.1: the authorization_details the user approved, in the token.
	AuthorizationDetails     json.RawMessage `json:"authorization_details"`
	AuthorizationDetailsHash string          `json:"authorization_details_hash"`
	ACR                      string          `json:"acr"`
	AMR                      []string        `json:"amr"`
	AuthTime                 int64           `json:"auth_time,omitempty"` // absent when a rule allowed the request
}

// Actor is the RFC 8693 §4.1 act claim: the party acting for the subject.
type Actor struct {
	Subject string `json:"sub"`
}

// IDTokenClaims are the claims of an ID token (OpenID Connect Core 1.0 §2).
//
// CIBA Core 1.0 §10.3.1 requires at_hash and
// urn:openid:params:jwt:claim:auth_req_id only in push mode, where the ID
// token reaches the client outside the TLS response of the token endpoint;
// Countersign offers poll and ping, but sets both anyway so that a client can
// bind the ID token to its request and its access token.
type IDTokenClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  Audience `json:"aud"` // the client_id
	Expiry    int64    `json:"exp"`
	IssuedAt  int64    `json:"iat"`
	AuthTime  int64    `json:"auth_time,omitempty"`
	Nonce     string   `json:"nonce,omitempty"`
	ACR       string   `json:"acr,omitempty"`
	AMR       []string `json:"amr,omitempty"`
	AtHash    string   `json:"at_hash,omitempty"`
	AuthReqID string   `json:"urn:openid:params:jwt:claim:auth_req_id,omitempty"`
	Email     string   `json:"email,omitempty"`
}

// Audience is the aud claim.
//
// RFC 7519 §4.1.3: "In the general case, the "aud" value is an array of
// case-sensitive strings, each containing a StringOrURI value. In the special
// case when the JWT has one audience, the "aud" value MAY be a single
// case-sensitive string containing a StringOrURI value."
type Audience []string

// MarshalJSON writes one audience as a string and any other number as an array.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	if a == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON accepts a string or an array of strings.
func (a *Audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = Audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("protocol: aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

// Contains reports whether aud is one of the audiences.
func (a Audience) Contains(aud string) bool { return slices.Contains(a, aud) }

// IntrospectionResponse is the answer of /introspect (RFC 7662 §2.2) and of
// /redeem: an active token's claims with "active": true and its
// token_type, or "active": false with, from /redeem, the reason.
type IntrospectionResponse struct {
	Active    bool   `json:"active"`
	Reason    string `json:"reason,omitempty"`     // when not active, from /redeem
	TokenType string `json:"token_type,omitempty"` // "Bearer" when active
	*AccessTokenClaims
}

// Reasons /redeem gives for a token it did not spend.
const (
	ReasonAlreadyRedeemed     = "already_redeemed"
	ReasonTransactionMismatch = "transaction_mismatch"
	ReasonAudienceMismatch    = "audience_mismatch"
	ReasonExpired             = "expired"
	ReasonRevoked             = "revoked"
	ReasonInvalidToken        = "invalid_token"
)

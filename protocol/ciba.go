package protocol

import (
	"encoding/json"
	"time"
)

// GrantTypeCIBA is the CIBA grant type (CIBA §10.1).
const GrantTypeCIBA = "urn:openid:params:grant-type:ciba"

// ClientAssertionType is the client_assertion_type of private_key_jwt
// (RFC 7523 §2.2).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Client authentication methods (RFC 7591 §2, OpenID Connect Core §9).
const (
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthPrivateKeyJWT     = "private_key_jwt"
)

// Token delivery modes (CIBA §5). Countersign offers poll and ping.
const (
	DeliveryPoll = "poll"
	DeliveryPing = "ping"
)

// The acr values of Countersign's tokens (RFC 9470 §2): how the request was
// approved.
const (
	ACRPolicy   = "urn:countersign:acr:policy"   // auto-allowed by a rule, amr ["policy"]
	ACRApproval = "urn:countersign:acr:approval" // a signed-in human approved
	ACRStepUp   = "urn:countersign:acr:step-up"  // a human approved with a fresh user-verified passkey
)

// Poll-mode rules a client follows: DefaultPollInterval is the wait between
// polls when the server names no interval (CIBA §7.3), and SlowDownStep what
// a slow_down answer adds to it for that poll and every later one (CIBA §11
// by way of RFC 8628 §3.5).
const (
	DefaultPollInterval = 5 * time.Second
	SlowDownStep        = 5 * time.Second
)

// MetadataPath is where the authorization server metadata is served below
// the issuer (RFC 8414 §3); /.well-known/openid-configuration serves the
// same document.
const MetadataPath = "/.well-known/oauth-authorization-server"

// AuthorizeResponse is the successful answer of the backchannel
// authentication endpoint (CIBA §7.3), with Countersign's approval_url: the
// session-bound consent page an agent may show its user.
type AuthorizeResponse struct {
	AuthReqID   string `json:"auth_req_id"`
	ExpiresIn   int    `json:"expires_in"`
	Interval    int    `json:"interval"`
	ApprovalURL string `json:"approval_url"`
}

// TokenResponse is the successful answer of the CIBA grant (CIBA §11,
// RFC 9396 §7).
type TokenResponse struct {
	AccessToken          string          `json:"access_token"`
	TokenType            string          `json:"token_type"`
	ExpiresIn            int             `json:"expires_in"`
	IDToken              string          `json:"id_token"`
	AuthorizationDetails json.RawMessage `json:"authorization_details"`
	// Scope is the scope granted: the requested values the server
	// understands (RFC 6749 §5.1 requires it when it differs from the
	// request's).
	Scope string `json:"scope,omitempty"`
}

// PingNotification is the body of a ping callback (CIBA §10.2), POSTed to
// the client's notification endpoint with its client_notification_token as
// a Bearer credential.
type PingNotification struct {
	AuthReqID string `json:"auth_req_id"`
}

package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/countersign/countersign/protocol"
	"github.com/countersign/countersign/rar/canonical"
)

// Reasons a token was not spent, besides ErrInvalidToken, ErrTokenExpired
// and ErrWrongAudience. A *RedeemError matches the one its Reason names.
var (
	// ErrAlreadyRedeemed: the token was spent before — a replay.
	ErrAlreadyRedeemed = errors.New("client: token already redeemed")
	// ErrTransactionMismatch: the details are not the ones the token was
	// issued for; the token is not spent.
	ErrTransactionMismatch = errors.New("client: token issued for another transaction")
	// ErrRevoked: the token was revoked.
	ErrRevoked = errors.New("client: token revoked")
)

var reasons = map[string]error{
	protocol.ReasonAlreadyRedeemed:     ErrAlreadyRedeemed,
	protocol.ReasonTransactionMismatch: ErrTransactionMismatch,
	protocol.ReasonAudienceMismatch:    ErrWrongAudience,
	protocol.ReasonExpired:             ErrTokenExpired,
	protocol.ReasonRevoked:             ErrRevoked,
	protocol.ReasonInvalidToken:        ErrInvalidToken,
}

// RedeemError is a token /redeem did not spend, with its reason.
type RedeemError struct {
	Reason string // protocol.ReasonAlreadyRedeemed, …
}

func (e *RedeemError) Error() string { return "client: token not redeemed: " + e.Reason }

// Is matches the error the reason names.
func (e *RedeemError) Is(target error) bool {
	s, ok := reasons[e.Reason]
	return ok && s == target
}

// RedeemerConfig configures a Redeemer: the resource server's registration.
type RedeemerConfig struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	HTTPClient   *http.Client
}

// Redeemer spends tokens at Countersign's /redeem, the online once-only
// check. It is safe for concurrent use.
type Redeemer struct {
	meta *metadataSource
	http *http.Client
	auth clientAuth
}

// NewRedeemer checks cfg and returns a Redeemer. Resource servers
// authenticate with client_secret_basic.
func NewRedeemer(cfg RedeemerConfig) (*Redeemer, error) {
	meta, err := newMetadataSource(cfg.Issuer, cfg.HTTPClient)
	if err != nil {
		return nil, err
	}
	if cfg.ClientID == "" {
		return nil, errors.New("client: the Redeemer needs ClientID")
	}
	auth, err := newClientAuth(Config{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, AuthMethod: protocol.AuthClientSecretBasic})
	if err != nil {
		return nil, err
	}
	return &Redeemer{meta: meta, http: httpClient(cfg.HTTPClient), auth: auth}, nil
}

// Redeem spends token for details, the authorization_details about to be
// executed (as RequestApproval takes them): the first call for a valid,
// unexpired token issued for exactly these details answers its claims, and
// every later one a *RedeemError matching ErrAlreadyRedeemed. Details that
// differ from the approved ones get ErrTransactionMismatch and leave the
// token unspent. Only the details' hash (package canonical, as the server
// computes it) is sent.
func (r *Redeemer) Redeem(ctx context.Context, token string, details any) (*protocol.AccessTokenClaims, error) {
	raw, err := detailsJSON(details)
	if err != nil {
		return nil, err
	}
	hash, err := canonical.DetailsHash(raw)
	if err != nil {
		return nil, err
	}
	return r.RedeemHash(ctx, token, hash)
}

// RedeemHash is Redeem with the details' authorization_details_hash.
func (r *Redeemer) RedeemHash(ctx context.Context, token, detailsHash string) (*protocol.AccessTokenClaims, error) {
	md, err := r.meta.get(ctx)
	if err != nil {
		return nil, err
	}
	if md.RedeemEndpoint == "" {
		return nil, errors.New("client: the server names no redeem_endpoint")
	}
	var ir protocol.IntrospectionResponse
	form := url.Values{"token": {token}, "authorization_details_hash": {detailsHash}}
	auth := func(req *http.Request, f url.Values) error { return r.auth(req, f, md.Issuer) }
	if err := postForm(ctx, r.http, md.RedeemEndpoint, form, auth, &ir); err != nil {
		return nil, err
	}
	if !ir.Active {
		return nil, &RedeemError{Reason: ir.Reason}
	}
	if ir.AccessTokenClaims == nil || ir.AuthorizationDetailsHash != detailsHash {
		return nil, fmt.Errorf("client: /redeem answered active for another transaction")
	}
	return ir.AccessTokenClaims, nil
}

package approvals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/countersign/countersign/protocol"
	"github.com/countersign/countersign/rar"
)

// TokenResponse is the successful answer of the CIBA grant (CIBA §11,
// RFC 9396 §7).
type TokenResponse = protocol.TokenResponse

// Token answers a token request with the CIBA grant (CIBA §10.1, §11): the
// token exactly once after approval, else the error the request's state calls
// for. Refusals are *Refusal.
func (s *Service) Token(ctx context.Context, agent Agent, authReqID string) (TokenResponse, error) {
	id, err := s.requestIDOf(authReqID)
	if err != nil {
		return TokenResponse{}, err
	}
	// The keys are at hand before the poll that may collect the token:
	// once collected, the request cannot give another.
	ring, err := s.keys.Keyring(ctx)
	if err != nil {
		return TokenResponse{}, err
	}
	poll, err := s.store.Poll(ctx, id, agent.ID, randomString(16), s.tokenTTL)
	if errors.Is(err, ErrNotFound) {
		// Unknown, or issued to another client: the same answer for both.
		return TokenResponse{}, refuse(CodeInvalidGrant, "auth_req_id is not valid")
	}
	if err != nil {
		return TokenResponse{}, err
	}
	r := poll.Request
	live := poll.Now.Before(r.ExpiresAt)
	switch r.State {
	case StatePending:
		if !live {
			return TokenResponse{}, refuse(CodeExpiredToken, "the request has expired")
		}
		if poll.TooSoon {
			// CIBA §11 / RFC 8628 §3.5: the interval grows by 5 s for this and
			// every later poll.
			return TokenResponse{}, &Refusal{Code: CodeSlowDown, Description: "polled sooner than the interval allows", Interval: r.PollInterval}
		}
		return TokenResponse{}, &Refusal{Code: CodeAuthorizationPending, Description: "the user has not decided yet", Interval: r.PollInterval}
	case StateDenied:
		// The agent learns why: the reviewer's reason (typed for it), or
		// the report's. RFC 6749 §5.2 limits the characters (refuse).
		if r.DecisionReason != "" {
			return TokenResponse{}, refuse(CodeAccessDenied, "the request was denied: "+r.DecisionReason)
		}
		return TokenResponse{}, refuse(CodeAccessDenied, "the request was denied")
	case StateExpired:
		return TokenResponse{}, refuse(CodeExpiredToken, "the request has expired")
	case StateTokenIssued:
		if poll.Issued {
			return s.sign(ctx, ring, agent, r, poll.UserEmail)
		}
	case StateApproved:
		// Approved, yet not collected: it lives less than a second more (a
		// token would be born expired), or the agent or the user is
		// suspended.
		if !r.ExpiresAt.Truncate(time.Second).After(poll.Now.Truncate(time.Second)) {
			return TokenResponse{}, refuse(CodeExpiredToken, "the request has expired")
		}
		return TokenResponse{}, refuse(CodeAccessDenied, "the client or the user is suspended")
	}
	// Cancelled, or the token was collected by an earlier poll.
	return TokenResponse{}, refuse(CodeInvalidGrant, "auth_req_id is not valid")
}

// sign mints the token pair of request r, whose token the poll has just
// collected: its jti, issue and expiry times come from the request row (the
// database's clock, the one the request's expiry and every guard use, so a
// replica whose clock drifts cannot mint a token that outlives the request).
// Signing cannot fail with a loaded keyring short of a broken key, which
// would be logged: the token is then lost with the request, never issued
// twice.
func (s *Service) sign(ctx context.Context, ring *Keyring, agent Agent, r Request, email string) (TokenResponse, error) {
	now, exp := *r.TokenIssuedAt, *r.TokenExpiresAt
	// auth_time is when a human authenticated to decide (OpenID Core §2);
	// a request allowed by a rule had none, so its tokens carry no auth_time.
	var authTime int64
	if r.ACR != ACRPolicy {
		authTime = now.Unix()
		if r.DecidedAt != nil {
			authTime = r.DecidedAt.Unix()
		}
	}
	at := AccessTokenClaims{
		Issuer: s.issuer, Subject: r.UserID, Audience: Audience(r.Audience), ClientID: agent.ID,
		Act: Actor{Subject: agent.ID}, IssuedAt: now.Unix(), Expiry: exp.Unix(), JTI: *r.TokenJTI, Txn: r.ID,
		Scope: r.Scope, AuthorizationDetails: json.RawMessage(r.DetailsCanonical), AuthorizationDetailsHash: r.DetailsHash,
		ACR: r.ACR, AMR: r.AMR, AuthTime: authTime,
	}
	accessToken, err := ring.Sign(jose.ES256, "at+jwt", at)
	if err != nil {
		s.logger.ErrorContext(ctx, "a collected token could not be signed: the request is spent", "request", r.ID, "err", err)
		return TokenResponse{}, fmt.Errorf("approvals: sign access token: %w", err)
	}
	idt := IDTokenClaims{
		Issuer: s.issuer, Subject: r.UserID, Audience: Audience{agent.ID}, IssuedAt: now.Unix(),
		Expiry: now.Add(s.tokenTTL).Unix(), AuthTime: authTime, ACR: r.ACR, AMR: r.AMR,
		AtHash: AtHash(jose.SignatureAlgorithm(agent.IDTokenAlg), accessToken), AuthReqID: s.authReqIDs.issue(mustUUID(r.ID)),
	}
	if slices.Contains(strings.Fields(r.Scope), "email") {
		idt.Email = email
	}
	idToken, err := ring.Sign(jose.SignatureAlgorithm(agent.IDTokenAlg), "JWT", idt)
	if err != nil {
		s.logger.ErrorContext(ctx, "a collected token could not be signed: the request is spent", "request", r.ID, "err", err)
		return TokenResponse{}, fmt.Errorf("approvals: sign id token: %w", err)
	}
	s.metrics.issued()
	s.logger.InfoContext(ctx, "token issued", "request", r.ID, "jti", *r.TokenJTI)
	return TokenResponse{AccessToken: accessToken, TokenType: "Bearer", ExpiresIn: int(exp.Sub(now) / time.Second),
		IDToken: idToken, AuthorizationDetails: json.RawMessage(r.DetailsCanonical), Scope: r.Scope}, nil
}

func mustUUID(s string) [16]byte {
	u, ok := parseUUID(s)
	if !ok {
		panic("approvals: stored request id is not a UUID: " + s)
	}
	return u
}

// Reasons a redeem or introspection finds a token not active.
const (
	ReasonAlreadyRedeemed     = protocol.ReasonAlreadyRedeemed
	ReasonTransactionMismatch = protocol.ReasonTransactionMismatch
	ReasonAudienceMismatch    = protocol.ReasonAudienceMismatch
	ReasonExpired             = protocol.ReasonExpired
	ReasonRevoked             = protocol.ReasonRevoked
	ReasonInvalidToken        = protocol.ReasonInvalidToken
)

// Redemption is the answer of /redeem.
type Redemption struct {
	Active bool
	Reason string             // when not active
	Claims *AccessTokenClaims // when active
}

// Redeem is the once-only check of a resource server about to execute a
// transaction: the token must be valid, unexpired, unspent, meant for rs, and
// bound to exactly the details rs is about to execute (given as JSON, or as
// their hash). The first such call spends the token atomically; a mismatch
// does not spend it.
func (s *Service) Redeem(ctx context.Context, rs ResourceServer, token string, details []byte, detailsHash string) (Redemption, error) {
	var claims AccessTokenClaims
	if err := s.keys.Verify(ctx, token, "at+jwt", &claims); err != nil {
		return Redemption{Reason: ReasonInvalidToken}, nil
	}
	if len(details) > 0 {
		// The hash decides, not the current type definitions: the details
		// were validated when they were approved, and a type changed since
		// must not make the approved transaction unredeemable.
		h, err := rar.CanonicalHash(details)
		if err != nil {
			return Redemption{Reason: ReasonTransactionMismatch}, nil
		}
		detailsHash = h
	}
	r, err := s.store.Redeem(ctx, claims.JTI, rs, detailsHash)
	if errors.Is(err, ErrNotFound) {
		// Nothing was spent: the request as it stands says why.
		return s.whyNotRedeemed(ctx, rs, claims.JTI, detailsHash)
	}
	if err != nil {
		return Redemption{}, err
	}
	s.metrics.redeemed()
	s.logger.InfoContext(ctx, "token redeemed", "request", r.ID, "resource_server", rs.ID)
	return Redemption{Active: true, Claims: &claims}, nil
}

// whyNotRedeemed says why the token with jti could not be spent by rs for
// detailsHash, in the order a resource server needs to know it.
func (s *Service) whyNotRedeemed(ctx context.Context, rs ResourceServer, jti, detailsHash string) (Redemption, error) {
	r, now, err := s.store.RequestByJTI(ctx, jti)
	switch {
	case errors.Is(err, ErrNotFound):
		return Redemption{Reason: ReasonInvalidToken}, nil
	case err != nil:
		return Redemption{}, err
	case !slices.Contains(r.Audience, rs.Audience):
		return Redemption{Reason: ReasonAudienceMismatch}, nil
	}
	if why := inactive(r, now); why != "" {
		return Redemption{Reason: why}, nil
	}
	if detailsHash != r.DetailsHash {
		return Redemption{Reason: ReasonTransactionMismatch}, nil
	}
	// It changed between the guarded update and the read: another caller
	// spent it.
	return Redemption{Reason: ReasonAlreadyRedeemed}, nil
}

// inactive says why a token's request makes it unusable, or "".
func inactive(r Request, now time.Time) string {
	switch {
	case r.State == StateRevoked:
		return ReasonRevoked
	case r.State == StateRedeemed:
		return ReasonAlreadyRedeemed
	case r.State != StateTokenIssued:
		return ReasonInvalidToken
	case r.TokenExpiresAt == nil || !now.Before(*r.TokenExpiresAt):
		return ReasonExpired
	}
	return ""
}

// Introspect answers RFC 7662 for a resource server; it never spends the
// token. A token not meant for rs is reported inactive (RFC 7662 §4).
func (s *Service) Introspect(ctx context.Context, rs ResourceServer, token string) (*AccessTokenClaims, error) {
	var claims AccessTokenClaims
	if err := s.keys.Verify(ctx, token, "at+jwt", &claims); err != nil {
		return nil, nil
	}
	r, now, err := s.store.RequestByJTI(ctx, claims.JTI)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !slices.Contains(r.Audience, rs.Audience) || inactive(r, now) != "" {
		return nil, nil
	}
	return &claims, nil
}

// Revoke revokes an access token (RFC 7009). An agent may revoke the tokens
// issued to it; a resource server those meant for it. A valid token of
// another client is refused with unauthorized_client (RFC 7009 §2.1: "If
// this validation fails, the request is refused"); an invalid token is
// ignored (§2.2).
func (s *Service) Revoke(ctx context.Context, agent *Agent, rs *ResourceServer, token string) error {
	var claims AccessTokenClaims
	if err := s.keys.Verify(ctx, token, "at+jwt", &claims); err != nil {
		return nil
	}
	var actor string
	switch {
	case agent != nil:
		if claims.ClientID != agent.ID {
			return refuse(CodeUnauthorizedClient, "the token was not issued to this client")
		}
		actor = ActorAgent(agent.ID)
	case rs != nil:
		if !slices.Contains(claims.Audience, rs.Audience) {
			return refuse(CodeUnauthorizedClient, "the token is not meant for this resource server")
		}
		actor = ActorResourceServer(rs.ID)
	default:
		return nil
	}
	ok, err := s.store.Revoke(ctx, claims.JTI, actor)
	if err != nil {
		return err
	}
	if ok {
		s.logger.InfoContext(ctx, "token revoked", "jti", claims.JTI)
	}
	return nil
}

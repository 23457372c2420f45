package approvals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// LoginHintIssuer is a party trusted to name users in login_hint_token JWTs
// (CIBA §7.1): its issuer identifier and where its public keys are, a JWKS
// URL or a JWKS file.
type LoginHintIssuer struct {
	Issuer string
	JWKS   string // https URL, or a file path
}

// ParseLoginHintIssuer parses ISSUER=JWKS_URL_OR_FILE.
func ParseLoginHintIssuer(s string) (LoginHintIssuer, error) {
	iss, src, ok := strings.Cut(s, "=")
	if !ok || iss == "" || src == "" {
		return LoginHintIssuer{}, fmt.Errorf("%w: want ISSUER=JWKS_URL_OR_FILE, not %q", ErrInvalidInput, s)
	}
	return LoginHintIssuer{Issuer: iss, JWKS: src}, nil
}

// hintJTIPrefix keys the used jtis of login_hint_tokens by their issuer.
const hintJTIPrefix = "hint:"

// hintIssuers resolves the keys of the trusted login_hint_token issuers.
type hintIssuers struct {
	byIssuer map[string]LoginHintIssuer
	fetch    *clientKeySource
}

func (h *hintIssuers) keys(ctx context.Context, iss, kid string) ([]jose.JSONWebKey, error) {
	li, ok := h.byIssuer[iss]
	if !ok {
		return nil, refuse(CodeInvalidRequest, "login_hint_token is from an issuer that is not trusted")
	}
	var set jose.JSONWebKeySet
	if strings.HasPrefix(li.JWKS, "https://") || strings.HasPrefix(li.JWKS, "http://") {
		// Cached like a client's JWKS URL, keyed by the issuer.
		var err error
		set, err = h.fetch.fetch(ctx, Agent{ID: "hint:" + iss, JWKSURL: &li.JWKS}, kid, true)
		if err != nil {
			return nil, refuse(CodeInvalidRequest, "the keys of the login_hint_token issuer cannot be fetched")
		}
	} else {
		b, err := os.ReadFile(li.JWKS)
		if err != nil {
			return nil, fmt.Errorf("approvals: login_hint_token issuer %s: %w", iss, err)
		}
		if err := json.Unmarshal(b, &set); err != nil {
			return nil, fmt.Errorf("approvals: login_hint_token issuer %s: JWKS file: %w", iss, err)
		}
	}
	if kid == "" {
		return set.Keys, nil
	}
	return set.Key(kid), nil
}

// loginHintTokenClaims are the claims Countersign reads from a
// login_hint_token: the user is named by sub_id (RFC 9493: format "email",
// "opaque" with our user id, or "iss_sub" with our issuer), else by email,
// else by sub.
type loginHintTokenClaims struct {
	jwt.Claims
	Email string `json:"email"`
	SubID *struct {
		Format string `json:"format"`
		Email  string `json:"email"`
		ID     string `json:"id"`
		Iss    string `json:"iss"`
		Sub    string `json:"sub"`
	} `json:"sub_id"`
}

// userFromLoginHintToken verifies a login_hint_token and returns the hint it
// carries (an email or a user id).
func (s *Service) userFromLoginHintToken(ctx context.Context, token string) (string, error) {
	if len(token) > maxAssertionSize {
		return "", refuse(CodeInvalidRequest, "login_hint_token is too large")
	}
	tok, err := jwt.ParseSigned(token, assertionAlgs)
	if err != nil {
		return "", refuse(CodeInvalidRequest, "login_hint_token is not a signed JWT")
	}
	var unverified loginHintTokenClaims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return "", refuse(CodeInvalidRequest, "login_hint_token claims are malformed")
	}
	keys, err := s.hints.keys(ctx, unverified.Issuer, tok.Headers[0].KeyID)
	if err != nil {
		return "", err
	}
	var c loginHintTokenClaims
	if err := verifyWithAny(tok, keys, &c); err != nil {
		return "", refuse(CodeInvalidRequest, "login_hint_token signature does not verify")
	}
	now := s.now()
	if c.Expiry == nil {
		return "", refuse(CodeInvalidRequest, "login_hint_token has no exp")
	}
	if !now.Before(c.Expiry.Time().Add(assertionSkew)) {
		return "", refuse(CodeExpiredLoginHintToken, "login_hint_token has expired")
	}
	if c.NotBefore != nil && c.NotBefore.Time().After(now.Add(assertionSkew)) {
		return "", refuse(CodeInvalidRequest, "login_hint_token is not valid yet")
	}
	// As for client assertions (RFC 7523 §3, items 3 and 7): the aud names
	// this server and the jti is single use, so a login_hint_token meant for
	// another party, or captured once, cannot name the user here.
	if len(c.Audience) == 0 {
		return "", refuse(CodeInvalidRequest, "login_hint_token has no aud")
	}
	if !c.Audience.Contains(s.issuer) {
		return "", refuse(CodeInvalidRequest, "login_hint_token is meant for another audience")
	}
	if c.ID == "" || len(c.ID) > 256 {
		return "", refuse(CodeInvalidRequest, "login_hint_token has no jti")
	}
	// Kept with the client assertion jtis, apart from them by the key's prefix
	// (client ids never contain a colon), until the token expires.
	fresh, err := s.store.RecordAssertionJTI(ctx, hintJTIPrefix+c.Issuer, c.ID, c.Expiry.Time().Add(assertionSkew))
	if err != nil {
		return "", err
	}
	if !fresh {
		return "", refuse(CodeInvalidRequest, "login_hint_token was already used")
	}
	switch {
	case c.SubID != nil && c.SubID.Format == "email" && c.SubID.Email != "":
		return c.SubID.Email, nil
	case c.SubID != nil && c.SubID.Format == "opaque" && c.SubID.ID != "":
		return c.SubID.ID, nil
	case c.SubID != nil && c.SubID.Format == "iss_sub" && c.SubID.Iss == s.issuer && c.SubID.Sub != "":
		return c.SubID.Sub, nil
	case c.SubID != nil:
		return "", refuse(CodeUnknownUserID, "login_hint_token names the user in a form this server does not know")
	case c.Email != "":
		return c.Email, nil
	case c.Subject != "":
		return c.Subject, nil
	}
	return "", refuse(CodeUnknownUserID, "login_hint_token names no user")
}

// userFromIDTokenHint verifies an ID token this server issued to agent and
// returns its subject. Expired ID tokens are accepted: CIBA §7.1 allows an
// id_token_hint that is no longer valid, as long as we issued it.
func (s *Service) userFromIDTokenHint(ctx context.Context, agent Agent, token string) (string, error) {
	var c IDTokenClaims
	if err := s.keys.Verify(ctx, token, TypeIDToken, &c); err != nil {
		if errors.Is(err, ErrTokenMalformed) || errors.Is(err, ErrTokenSignature) || errors.Is(err, ErrUnknownKey) {
			return "", refuse(CodeInvalidRequest, "id_token_hint is not an ID token issued by this server")
		}
		return "", err
	}
	if c.Issuer != s.issuer || !slices.Contains(c.Audience, agent.ID) {
		return "", refuse(CodeInvalidRequest, "id_token_hint was not issued by this server to this client")
	}
	return c.Subject, nil
}

// resolveUser finds the user that exactly one hint names (CIBA §7.1) and
// checks their user_code.
func (s *Service) resolveUser(ctx context.Context, agent Agent, p AuthRequest) (User, error) {
	n := 0
	for _, h := range []string{p.LoginHint, p.IDTokenHint, p.LoginHintToken} {
		if h != "" {
			n++
		}
	}
	if n != 1 {
		return User{}, refuse(CodeInvalidRequest, "exactly one of login_hint, id_token_hint and login_hint_token is required")
	}
	hint := p.LoginHint
	var err error
	switch {
	case p.IDTokenHint != "":
		hint, err = s.userFromIDTokenHint(ctx, agent, p.IDTokenHint)
	case p.LoginHintToken != "":
		hint, err = s.userFromLoginHintToken(ctx, p.LoginHintToken)
	}
	if err != nil {
		return User{}, err
	}
	u, err := s.userByHint(ctx, hint)
	if errors.Is(err, ErrNotFound) {
		return User{}, refuse(CodeUnknownUserID, "no user matches the hint")
	}
	if err != nil {
		return User{}, err
	}
	if u.Status != "active" {
		return User{}, refuse(CodeAccessDenied, "the user is suspended")
	}
	if u.HasUserCode() {
		if p.UserCode == "" {
			return User{}, refuse(CodeMissingUserCode, "this user requires a user_code")
		}
		if err := s.checkUserCode(ctx, u, agent.ID, p.UserCode); err != nil {
			return User{}, err
		}
	}
	return u, nil
}

package web

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/protocol"
)

// resourceServerToken reads what /introspect and /redeem share: the form,
// the authenticated resource server, and the token it asks about.
func (s *Server) resourceServerToken(r *http.Request) (oauthForm, approvals.ResourceServer, string, error) {
	f, err := parseForm(r)
	if err != nil {
		return nil, approvals.ResourceServer{}, "", err
	}
	rs, err := s.authenticateResourceServer(r, f)
	if err != nil {
		return nil, approvals.ResourceServer{}, "", err
	}
	tok := f.get("token")
	if tok == "" {
		return nil, approvals.ResourceServer{}, "", invalidRequest("token is required")
	}
	return f, rs, tok, nil
}

// introspect is RFC 7662 token introspection for resource servers; it never
// spends a token.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) error {
	_, rs, tok, err := s.resourceServerToken(r)
	if err != nil {
		return err
	}
	claims, err := s.svc.Introspect(r.Context(), rs, tok)
	if err != nil {
		return err
	}
	if claims == nil {
		writeJSON(w, http.StatusOK, protocol.IntrospectionResponse{})
		return nil
	}
	writeJSON(w, http.StatusOK, protocol.IntrospectionResponse{Active: true, TokenType: "Bearer", AccessTokenClaims: claims})
	return nil
}

// redeem is the once-only check before a resource server executes the
// transaction a token was issued for.
func (s *Server) redeem(w http.ResponseWriter, r *http.Request) error {
	f, rs, tok, err := s.resourceServerToken(r)
	if err != nil {
		return err
	}
	details, hash := f.get("authorization_details"), f.get("authorization_details_hash")
	if (details == "") == (hash == "") {
		return invalidRequest("exactly one of authorization_details and authorization_details_hash is required")
	}
	res, err := s.svc.Redeem(r.Context(), rs, tok, []byte(details), hash)
	if err != nil {
		return err
	}
	if !res.Active {
		writeJSON(w, http.StatusOK, protocol.IntrospectionResponse{Reason: res.Reason})
		return nil
	}
	writeJSON(w, http.StatusOK, protocol.IntrospectionResponse{Active: true, TokenType: "Bearer", AccessTokenClaims: res.Claims})
	return nil
}

// revoke is RFC 7009 token revocation, for agents and resource servers.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) error {
	f, err := parseForm(r)
	if err != nil {
		return err
	}
	tok := f.get("token")
	var agent *approvals.Agent
	var rs *approvals.ResourceServer
	a, err := s.authenticateAgent(r, f)
	switch {
	case err == nil:
		agent = &a
	case errors.Is(err, errClientAuth):
		x, err := s.authenticateResourceServer(r, f)
		if err != nil {
			return err
		}
		rs = &x
	default:
		return err
	}
	if tok == "" {
		return invalidRequest("token is required")
	}
	if err := s.svc.Revoke(r.Context(), agent, rs, tok); err != nil {
		return err
	}
	// RFC 7009 §2.2: 200 whether or not the token was valid.
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return nil
}

// jwks serves the published signing keys: next, current and previous (RFC 7517).
func (s *Server) jwks(w http.ResponseWriter, r *http.Request) error {
	ring, err := s.svc.Keys().Keyring(r.Context())
	if err != nil {
		return err
	}
	b, err := json.Marshal(ring.JWKS())
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	// Short: a rotated-in key must reach verifiers well before it signs much.
	w.Header().Set("Cache-Control", "public, max-age=60")
	_, _ = w.Write(b)
	return nil
}

// auditKeys serves the audit checkpoint public keys, every one ever used
// (RFC 7517 JWK Set), so that anyone holding an export can verify it
// offline (countersign audit verify --file F --key K).
func (s *Server) auditKeys(w http.ResponseWriter, r *http.Request) error {
	set, err := s.svc.Keys().AuditKeySet(r.Context())
	var forged *approvals.ForgedKeysError
	switch {
	case errors.As(err, &forged):
		// Publish the keys made with the KEK, never the others.
		s.logger.WarnContext(r.Context(), "audit keys: rows not made with this KEK are not published", "kids", forged.KIDs)
	case err != nil:
		return err
	}
	b, err := json.Marshal(set)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(b)
	return nil
}

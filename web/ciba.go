package web

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/protocol"
)

// GrantTypeCIBA is the CIBA grant type (CIBA §10.1).
const GrantTypeCIBA = protocol.GrantTypeCIBA

// agentForm reads what every agent endpoint starts with: the form (with the
// parameters that may repeat) and the authenticated agent.
func (s *Server) agentForm(r *http.Request, repeatable ...string) (oauthForm, approvals.Agent, error) {
	f, err := parseForm(r, repeatable...)
	if err != nil {
		return nil, approvals.Agent{}, err
	}
	agent, err := s.authenticateAgent(r, f)
	if err != nil {
		return nil, approvals.Agent{}, err
	}
	return f, agent, nil
}

// bcAuthorize is the backchannel authentication endpoint (CIBA §7).
func (s *Server) bcAuthorize(w http.ResponseWriter, r *http.Request) error {
	f, agent, err := s.agentForm(r, "resource")
	if err != nil {
		return err
	}
	if f.get("request") != "" {
		return invalidRequest("signed authentication requests (request) are not supported")
	}
	// CIBA §7.1: exactly one of the three hints.
	hints := 0
	for _, h := range []string{"login_hint", "id_token_hint", "login_hint_token"} {
		if f.get(h) != "" {
			hints++
		}
	}
	if hints != 1 {
		return invalidRequest("exactly one of login_hint, id_token_hint and login_hint_token is required")
	}
	p := approvals.AuthRequest{
		Scope:                   f.get("scope"),
		AuthorizationDetails:    []byte(f.get("authorization_details")),
		LoginHint:               f.get("login_hint"),
		IDTokenHint:             f.get("id_token_hint"),
		LoginHintToken:          f.get("login_hint_token"),
		BindingMessage:          f.get("binding_message"),
		UserCode:                f.get("user_code"),
		ACRValues:               strings.Fields(f.get("acr_values")),
		ClientNotificationToken: f.get("client_notification_token"),
	}
	if p.Scope == "" {
		// CIBA §7.1: scope is REQUIRED; a missing parameter is
		// invalid_request (RFC 6749 §5.2), a scope without openid
		// invalid_scope.
		return &approvals.Refusal{Code: approvals.CodeInvalidRequest, Description: "scope is required and must contain openid"}
	}
	for _, res := range f["resource"] {
		if res != "" {
			p.Resources = append(p.Resources, res)
		}
	}
	if v := f.get("requested_expiry"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return invalidRequest("requested_expiry must be a positive integer")
		}
		p.RequestedExpiry = n
	}
	c, err := s.svc.Authorize(r.Context(), agent, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, protocol.AuthorizeResponse{AuthReqID: c.AuthReqID, ExpiresIn: c.ExpiresIn,
		Interval: c.Interval, ApprovalURL: s.svc.ApprovalURL(c.Request.ID)})
	return nil
}

// bcCancel lets an agent withdraw a pending request.
func (s *Server) bcCancel(w http.ResponseWriter, r *http.Request) error {
	f, agent, err := s.agentForm(r)
	if err != nil {
		return err
	}
	id := f.get("auth_req_id")
	if id == "" {
		return invalidRequest("auth_req_id is required")
	}
	if err := s.svc.Cancel(r.Context(), agent, id); err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return nil
}

// token is the token endpoint for the CIBA grant (CIBA §10.1, §11).
func (s *Server) token(w http.ResponseWriter, r *http.Request) error {
	f, agent, err := s.agentForm(r)
	if err != nil {
		return err
	}
	switch gt := f.get("grant_type"); gt {
	case "":
		return invalidRequest("grant_type is required")
	case GrantTypeCIBA:
	default:
		return &approvals.Refusal{Code: approvals.CodeUnsupportedGrantType, Description: "only " + GrantTypeCIBA + " is supported"}
	}
	id := f.get("auth_req_id")
	if id == "" {
		return invalidRequest("auth_req_id is required")
	}
	resp, err := s.svc.Token(r.Context(), agent, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

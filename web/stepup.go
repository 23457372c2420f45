package web

import (
	"crypto/rand"
	"errors"
	"net/http"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/countersign/countersign/approvals"
)

// stepUpBody is what the consent page's script posts for a step-up.
type stepUpBody struct {
	ceremonyBody
	Request string `json:"request"`
}

// stepUpBegin starts the passkey assertion that approves a step-up request:
// its challenge is SHA-256 over the request id, its
// authorization_details_hash and a fresh nonce kept with the ceremony
// (approvals.StepUpChallenge), so the signature binds this exact request.
func (s *Server) stepUpBegin(w http.ResponseWriter, r *http.Request) {
	si := sessionOf(r)
	if si == nil || !csrfOK(r, si) {
		jsonError(w, http.StatusForbidden, "sign in again")
		return
	}
	var b stepUpBody
	if err := readJSON(r, &b); err != nil {
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	c, err := s.svc.Consent(r.Context(), b.Request, si.User)
	switch {
	case errors.Is(err, approvals.ErrNotFound):
		jsonError(w, http.StatusNotFound, "no such request")
		return
	case err != nil:
		jsonError(w, http.StatusInternalServerError, "the ceremony could not be started")
		return
	case !c.CanReview || !c.ApprovalCounts:
		jsonError(w, http.StatusConflict, "this request can no longer be approved by you")
		return
	}
	keys, err := s.svc.Store().Passkeys(r.Context(), si.User.ID)
	if err != nil || len(keys) == 0 {
		jsonError(w, http.StatusConflict, "you have no passkey to approve with")
		return
	}
	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce)
	challenge := approvals.StepUpChallenge(c.Request.ID, c.Request.DetailsHash, nonce)
	options, data, err := s.rp.BeginLogin(passkeyUser{user: si.User, keys: keys},
		webauthn.WithChallenge(challenge), webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		jsonError(w, http.StatusInternalServerError, "the ceremony could not be started")
		return
	}
	raw, err := jsonBytes(data)
	if err != nil {
		jsonError(w, http.StatusInternalServerError, "the ceremony could not be started")
		return
	}
	id := c.Request.ID
	saved, err := s.svc.Store().SaveChallenge(r.Context(), approvals.Challenge{Purpose: "step_up", UserID: &si.User.ID, RequestID: &id, Data: raw, Nonce: nonce})
	if err != nil {
		jsonError(w, http.StatusInternalServerError, "the ceremony could not be started")
		return
	}
	jsonOK(w, map[string]any{"challenge": saved.ID, "options": options})
}

// stepUpFinish verifies the assertion (user verification required) and
// hands it to the review as its evidence.
func (s *Server) stepUpFinish(w http.ResponseWriter, r *http.Request) {
	si := sessionOf(r)
	if si == nil || !csrfOK(r, si) {
		jsonError(w, http.StatusForbidden, "sign in again")
		return
	}
	var b stepUpBody
	if err := readJSON(r, &b); err != nil {
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	data, ch, err := s.takeCeremony(r, b.Challenge, "step_up")
	if err != nil || ch.UserID == nil || *ch.UserID != si.User.ID || ch.RequestID == nil || *ch.RequestID != b.Request {
		jsonError(w, http.StatusBadRequest, "this approval has expired or was used; try again")
		return
	}
	c, err := s.svc.Consent(r.Context(), b.Request, si.User)
	if err != nil {
		jsonError(w, http.StatusNotFound, "no such request")
		return
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(b.Credential)
	if err != nil {
		jsonError(w, http.StatusBadRequest, "the browser's answer could not be read")
		return
	}
	keys, err := s.svc.Store().Passkeys(r.Context(), si.User.ID)
	if err != nil {
		jsonError(w, http.StatusInternalServerError, "the approval could not be checked")
		return
	}
	cred, err := s.rp.ValidateLogin(passkeyUser{user: si.User, keys: keys}, data, parsed)
	if err != nil {
		jsonError(w, http.StatusUnauthorized, "the passkey did not verify you (user verification is required for this approval)")
		return
	}
	key, err := s.svc.Store().PasskeyByCredentialID(r.Context(), cred.ID)
	if err != nil || key.UserID != si.User.ID {
		jsonError(w, http.StatusUnauthorized, "this passkey is not yours")
		return
	}
	if err := s.svc.Store().UsePasskey(r.Context(), key.ID, cred.Authenticator.SignCount, cred.Flags.BackupState); err != nil {
		jsonError(w, http.StatusUnauthorized, "this passkey is refused: its signature counter went backwards, so a copy of it may exist")
		return
	}
	ev := &approvals.StepUpEvidence{RequestID: c.Request.ID, UserID: si.User.ID, DetailsHash: c.Request.DetailsHash,
		CredentialID: cred.ID, AuthenticatorData: parsed.Raw.AssertionResponse.AuthenticatorData,
		ClientDataJSON: parsed.Raw.AssertionResponse.ClientDataJSON, Signature: parsed.Raw.AssertionResponse.Signature, Nonce: ch.Nonce}
	amr := approvals.EvidenceAMR(ev.AuthenticatorData, key.BackupEligible)
	_, err = s.svc.Review(r.Context(), c.Request.ID, approvals.Reviewer{UserID: si.User.ID, AMR: amr},
		approvals.ReviewInput{Verdict: approvals.VerdictApprove, Evidence: ev})
	switch {
	case err == nil:
		jsonOK(w, map[string]string{"next": "/approve/" + c.Request.ID})
	case errors.Is(err, approvals.ErrAlreadyDecided), errors.Is(err, approvals.ErrAlreadyReviewed):
		jsonError(w, http.StatusConflict, "this request was already decided")
	case errors.Is(err, approvals.ErrExpired):
		jsonError(w, http.StatusGone, "this request has expired")
	default:
		s.logger.ErrorContext(r.Context(), "step-up review failed", "err", err)
		jsonError(w, http.StatusUnprocessableEntity, "the approval was not accepted")
	}
}

package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/countersign/countersign/approvals"
)

// newRelyingParty is the WebAuthn relying party of issuer: its ID is the
// issuer's host (WebAuthn refuses IP addresses: the dev server is
// localhost), its one origin the issuer's.
func newRelyingParty(issuer string) (*webauthn.WebAuthn, error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil, err
	}
	return webauthn.New(&webauthn.Config{
		RPID: u.Hostname(), RPDisplayName: "Countersign", RPOrigins: []string{u.Scheme + "://" + u.Host},
	})
}

// passkeyUser is an approvals user as a WebAuthn account: its user handle
// is the user id (random, no personal data).
type passkeyUser struct {
	user approvals.User
	keys []approvals.Passkey
}

func (u passkeyUser) WebAuthnID() []byte          { return []byte(u.user.ID) }
func (u passkeyUser) WebAuthnName() string        { return u.user.Email }
func (u passkeyUser) WebAuthnDisplayName() string { return cmpOr(u.user.Name, u.user.Email) }
func (u passkeyUser) WebAuthnCredentials() []webauthn.Credential {
	out := make([]webauthn.Credential, len(u.keys))
	for i, k := range u.keys {
		out[i] = credentialOf(k)
	}
	return out
}

func credentialOf(k approvals.Passkey) webauthn.Credential {
	ts := make([]protocol.AuthenticatorTransport, len(k.Transports))
	for i, t := range k.Transports {
		ts[i] = protocol.AuthenticatorTransport(t)
	}
	return webauthn.Credential{ID: k.CredentialID, PublicKey: k.PublicKey, AttestationType: k.AttestationType, Transport: ts,
		Flags:         webauthn.CredentialFlags{UserPresent: true, UserVerified: k.UserVerified, BackupEligible: k.BackupEligible, BackupState: k.BackupState},
		Authenticator: webauthn.Authenticator{AAGUID: k.AAGUID, SignCount: k.SignCount}}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// jsonError answers a passkey endpoint's script.
func jsonError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func jsonOK(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// ceremonyBody is what the page's script posts to a passkey endpoint.
type ceremonyBody struct {
	Challenge  string          `json:"challenge"`
	Credential json.RawMessage `json:"credential"`
	Token      string          `json:"token"`
	Name       string          `json:"name"`
	Next       string          `json:"next"`
}

func readCeremony(r *http.Request) (ceremonyBody, error) {
	var b ceremonyBody
	return b, readJSON(r, &b)
}

// readJSON decodes a passkey endpoint's JSON body into v.
func readJSON(r *http.Request, v any) error {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return errors.New("want application/json")
	}
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		return errors.New("the body is not the JSON this endpoint takes")
	}
	return nil
}

func jsonBytes(v any) ([]byte, error) { return json.Marshal(v) }

// saveCeremony stores a begun ceremony's session data server-side, single
// use, and answers the script with the options and the ceremony's id.
func (s *Server) saveCeremony(w http.ResponseWriter, r *http.Request, purpose string, userID *string, options any, data *webauthn.SessionData) {
	raw, err := jsonBytes(data)
	if err != nil {
		jsonError(w, http.StatusInternalServerError, "the ceremony could not be started")
		return
	}
	c, err := s.svc.Store().SaveChallenge(r.Context(), approvals.Challenge{Purpose: purpose, UserID: userID, Data: raw})
	if err != nil {
		s.logger.ErrorContext(r.Context(), "challenge not saved", "err", err)
		jsonError(w, http.StatusInternalServerError, "the ceremony could not be started")
		return
	}
	jsonOK(w, map[string]any{"challenge": c.ID, "options": options})
}

// takeCeremony consumes a begun ceremony.
func (s *Server) takeCeremony(r *http.Request, id, purpose string) (webauthn.SessionData, approvals.Challenge, error) {
	var data webauthn.SessionData
	c, err := s.svc.Store().TakeChallenge(r.Context(), id, purpose)
	if err != nil {
		return data, c, err
	}
	return data, c, json.Unmarshal(c.Data, &data)
}

var registrationOptions = []webauthn.RegistrationOption{
	webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
		ResidentKey: protocol.ResidentKeyRequirementRequired, RequireResidentKey: protocol.ResidentKeyRequired(),
		UserVerification: protocol.VerificationRequired,
	}),
	webauthn.WithConveyancePreference(protocol.PreferNoAttestation),
}

func (s *Server) enrollBegin(w http.ResponseWriter, r *http.Request) {
	b, err := readCeremony(r)
	if err != nil {
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	user, err := s.svc.Store().LinkUser(r.Context(), approvals.LinkEnroll, b.Token)
	if err != nil {
		jsonError(w, http.StatusGone, "this enrollment link has expired or was used")
		return
	}
	s.beginRegistration(w, r, "enroll", user)
}

func (s *Server) beginRegistration(w http.ResponseWriter, r *http.Request, purpose string, user approvals.User) {
	keys, err := s.svc.Store().Passkeys(r.Context(), user.ID)
	if err != nil {
		jsonError(w, http.StatusInternalServerError, "the ceremony could not be started")
		return
	}
	pu := passkeyUser{user: user, keys: keys}
	exclude := make([]protocol.CredentialDescriptor, len(keys))
	for i, k := range keys {
		c := credentialOf(k)
		exclude[i] = c.Descriptor()
	}
	options, data, err := s.rp.BeginRegistration(pu, append(registrationOptions, webauthn.WithExclusions(exclude))...)
	if err != nil {
		jsonError(w, http.StatusInternalServerError, "the ceremony could not be started")
		return
	}
	s.saveCeremony(w, r, purpose, &user.ID, options, data)
}

// finishRegistration verifies a registration ceremony's response for user.
func (s *Server) finishRegistration(r *http.Request, b ceremonyBody, purpose string, user approvals.User) (approvals.Passkey, error) {
	data, c, err := s.takeCeremony(r, b.Challenge, purpose)
	if err != nil || c.UserID == nil || *c.UserID != user.ID {
		return approvals.Passkey{}, errors.New("this passkey ceremony has expired or was used; try again")
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(b.Credential)
	if err != nil {
		return approvals.Passkey{}, errors.New("the browser's answer could not be read")
	}
	cred, err := s.rp.CreateCredential(passkeyUser{user: user}, data, parsed)
	if err != nil {
		return approvals.Passkey{}, errors.New("the passkey could not be verified (user verification is required)")
	}
	ts := make([]string, len(cred.Transport))
	for i, t := range cred.Transport {
		ts[i] = string(t)
	}
	name := strings.TrimSpace(b.Name)
	if name == "" || len([]rune(name)) > 64 {
		name = "Passkey"
	}
	return approvals.Passkey{UserID: user.ID, CredentialID: cred.ID, PublicKey: cred.PublicKey, AAGUID: cred.Authenticator.AAGUID,
		SignCount: cred.Authenticator.SignCount, Transports: ts, BackupEligible: cred.Flags.BackupEligible,
		BackupState: cred.Flags.BackupState, UserVerified: cred.Flags.UserVerified, AttestationType: cred.AttestationType, Name: name}, nil
}

func (s *Server) enrollFinish(w http.ResponseWriter, r *http.Request) {
	b, err := readCeremony(r)
	if err != nil {
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	user, err := s.svc.Store().LinkUser(r.Context(), approvals.LinkEnroll, b.Token)
	if err != nil {
		jsonError(w, http.StatusGone, "this enrollment link has expired or was used")
		return
	}
	key, err := s.finishRegistration(r, b, "enroll", user)
	if err != nil {
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	user, _, err = s.svc.Store().EnrollPasskey(r.Context(), b.Token, key)
	if err != nil {
		jsonError(w, http.StatusConflict, "this enrollment link was used meanwhile, or the passkey is already registered")
		return
	}
	// What the new passkey proved (RFC 8176): a key bound to this device
	// (hwk) or a synced one (swk), and the user's presence.
	amr := []string{"hwk", "user"}
	if key.BackupEligible {
		amr[0] = "swk"
	}
	token, _, err := s.svc.Store().CreateSession(r.Context(), user.ID, amr, r.UserAgent(), s.presentedToken(r))
	if err != nil {
		jsonError(w, http.StatusInternalServerError, "the passkey is saved, but signing in failed: sign in again")
		return
	}
	s.setSession(w, token)
	jsonOK(w, map[string]string{"next": "/"})
}

// addPasskeyWindow is how recently a session must have been opened with a
// passkey to add another: a stolen cookie, or a session a dev sign-in link
// opened, cannot bring a passkey of its own (which would pass step-up).
const addPasskeyWindow = 10 * time.Minute

// mayAddPasskey says whether session si may add a passkey, and answers
// when it may not.
func mayAddPasskey(w http.ResponseWriter, r *http.Request, si *signedIn) bool {
	if si == nil || !csrfOK(r, si) {
		jsonError(w, http.StatusForbidden, "sign in again")
		return false
	}
	byPasskey := slices.Contains(si.Session.AMR, "hwk") || slices.Contains(si.Session.AMR, "swk")
	if !byPasskey || time.Since(si.Session.CreatedAt) > addPasskeyWindow {
		jsonError(w, http.StatusForbidden, "to add a passkey, sign out and sign in again with a passkey you have (in the last 10 minutes)")
		return false
	}
	return true
}

func (s *Server) addPasskeyBegin(w http.ResponseWriter, r *http.Request) {
	si := sessionOf(r)
	if !mayAddPasskey(w, r, si) {
		return
	}
	s.beginRegistration(w, r, "add_passkey", si.User)
}

func (s *Server) addPasskeyFinish(w http.ResponseWriter, r *http.Request) {
	si := sessionOf(r)
	if !mayAddPasskey(w, r, si) {
		return
	}
	b, err := readCeremony(r)
	if err != nil {
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	key, err := s.finishRegistration(r, b, "add_passkey", si.User)
	if err != nil {
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := s.svc.Store().AddPasskey(r.Context(), key); err != nil {
		jsonError(w, http.StatusConflict, "this passkey is already registered")
		return
	}
	jsonOK(w, map[string]string{"next": "/settings"})
}

func (s *Server) signInBegin(w http.ResponseWriter, r *http.Request) {
	options, data, err := s.rp.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		jsonError(w, http.StatusInternalServerError, "the ceremony could not be started")
		return
	}
	s.saveCeremony(w, r, "signin", nil, options, data)
}

func (s *Server) signInFinish(w http.ResponseWriter, r *http.Request) {
	b, err := readCeremony(r)
	if err != nil {
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	data, _, err := s.takeCeremony(r, b.Challenge, "signin")
	if err != nil {
		jsonError(w, http.StatusBadRequest, "this sign-in has expired or was used; try again")
		return
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(b.Credential)
	if err != nil {
		jsonError(w, http.StatusBadRequest, "the browser's answer could not be read")
		return
	}
	var key approvals.Passkey
	var user approvals.User
	lookup := func(rawID, userHandle []byte) (webauthn.User, error) {
		k, err := s.svc.Store().PasskeyByCredentialID(r.Context(), rawID)
		if err != nil || !bytes.Equal([]byte(k.UserID), userHandle) {
			return nil, errors.New("unknown passkey")
		}
		u, err := s.svc.Store().User(r.Context(), k.UserID)
		if err != nil {
			return nil, err
		}
		key, user = k, u
		return passkeyUser{user: u, keys: []approvals.Passkey{k}}, nil
	}
	cred, err := s.rp.ValidateDiscoverableLogin(lookup, data, parsed)
	if err != nil || user.Status != "active" {
		jsonError(w, http.StatusUnauthorized, "this passkey is not registered here, or the user was not verified")
		return
	}
	if err := s.svc.Store().UsePasskey(r.Context(), key.ID, cred.Authenticator.SignCount, cred.Flags.BackupState); err != nil {
		jsonError(w, http.StatusUnauthorized, "this passkey is refused: its signature counter went backwards, so a copy of it may exist")
		return
	}
	token, _, err := s.svc.Store().CreateSession(r.Context(), user.ID, approvals.EvidenceAMR(parsed.Raw.AssertionResponse.AuthenticatorData, key.BackupEligible), r.UserAgent(), s.presentedToken(r))
	if err != nil {
		jsonError(w, http.StatusInternalServerError, "signing in failed; try again")
		return
	}
	s.setSession(w, token)
	jsonOK(w, map[string]string{"next": localNext(b.Next)})
}

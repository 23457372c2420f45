package web

import (
	"net/http"
	"strings"
)

// routes is the whole HTTP surface in one table.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)

	// Discovery and keys.
	mux.HandleFunc("GET /.well-known/openid-configuration", s.serveOAuth(s.discovery))
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.serveOAuth(s.discovery))
	mux.HandleFunc("GET /jwks.json", s.serveOAuth(s.jwks))
	mux.HandleFunc("GET /audit/keys.json", s.serveOAuth(s.auditKeys))

	// CIBA (agents).
	mux.HandleFunc("POST /bc-authorize", s.serveBackchannel(s.bcAuthorize))
	mux.HandleFunc("POST /bc-cancel", s.serveOAuth(s.bcCancel))
	mux.HandleFunc("POST /token", s.serveOAuth(s.token))

	// Tokens (resource servers, and agents for revocation).
	mux.HandleFunc("POST /introspect", s.serveOAuth(s.introspect))
	mux.HandleFunc("POST /redeem", s.serveOAuth(s.redeem))
	mux.HandleFunc("POST /revoke", s.serveOAuth(s.revoke))

	// Any other method on an OAuth endpoint gets an OAuth error too.
	for _, p := range []string{"/bc-authorize", "/bc-cancel", "/token", "/introspect", "/redeem", "/revoke"} {
		mux.HandleFunc(p, s.postOnly)
	}
	for _, p := range []string{"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/jwks.json", "/audit/keys.json"} {
		mux.HandleFunc(p, s.getOnly)
	}
	if s.svc != nil {
		s.approverRoutes(mux)
	}
	return mux
}

// approverRoutes are the people's pages: every one with the page headers
// (CSP nonce, no framing, no caching), the session, and cross-origin
// protection for what changes state.
func (s *Server) approverRoutes(mux *http.ServeMux) {
	crossOrigin := newCrossOrigin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/webauthn/") || strings.HasPrefix(r.URL.Path, "/push/") {
			jsonError(w, http.StatusForbidden, "refused: the request came from another site")
			return
		}
		s.forbidden(w, r)
	}))
	page := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, pageHeaders(crossOrigin.Handler(s.withSession(h))))
	}
	mux.HandleFunc("GET /static/", s.assets.serve)
	mux.HandleFunc("GET /sw.js", s.serviceWorkerJS)
	mux.HandleFunc("GET /manifest.webmanifest", s.manifest)

	page("GET /{$}", s.inbox)
	page("GET /live", s.live)
	page("GET /signin", s.signInPage)
	page("POST /signout", s.signOut)
	page("POST /signout/everywhere", s.signOutEverywhere)
	page("GET /enroll/{token}", s.enrollPage)
	if s.dev {
		page("GET /signin/link/{token}", s.devSignIn)
	}
	page("GET /approve/{id}", s.consent)
	page("POST /approve/{id}", s.decide)
	page("POST /approve/{id}/report", s.report)
	page("GET /settings", s.settings)
	page("POST /settings/user-code", s.newUserCode)
	page("GET /push/key", s.pushKey)
	page("POST /push/subscriptions", s.subscribe)
	page("POST /settings/devices/remove", s.settingsAction(func(r *http.Request, si *signedIn) error {
		return s.svc.Store().RemovePushSubscription(r.Context(), si.User.ID, r.PostFormValue("id"))
	}))
	page("POST /settings/passkeys/rename", s.settingsAction(func(r *http.Request, si *signedIn) error {
		return s.svc.Store().RenamePasskey(r.Context(), si.User.ID, r.PostFormValue("id"), r.PostFormValue("name"))
	}))
	page("POST /settings/passkeys/remove", s.settingsAction(func(r *http.Request, si *signedIn) error {
		return s.svc.Store().RemovePasskey(r.Context(), si.User.ID, r.PostFormValue("id"))
	}))
	page("POST /settings/sessions/end", s.settingsAction(func(r *http.Request, si *signedIn) error {
		return s.svc.Store().EndSessionByID(r.Context(), si.User.ID, r.PostFormValue("id"))
	}))

	ceremony := func(pattern string, h http.HandlerFunc) {
		page(pattern, func(w http.ResponseWriter, r *http.Request) {
			if s.rp == nil {
				jsonError(w, http.StatusServiceUnavailable, "passkeys are not available on this server")
				return
			}
			h(w, r)
		})
	}
	ceremony("POST /webauthn/enroll/begin", s.enrollBegin)
	ceremony("POST /webauthn/enroll/finish", s.enrollFinish)
	ceremony("POST /webauthn/signin/begin", s.signInBegin)
	ceremony("POST /webauthn/signin/finish", s.signInFinish)
	ceremony("POST /webauthn/passkeys/begin", s.addPasskeyBegin)
	ceremony("POST /webauthn/passkeys/finish", s.addPasskeyFinish)
	ceremony("POST /webauthn/step-up/begin", s.stepUpBegin)
	ceremony("POST /webauthn/step-up/finish", s.stepUpFinish)
}

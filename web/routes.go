package web

import "net/http"

// routes is the whole HTTP surface in one table.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)

	// Discovery and keys.
	mux.HandleFunc("GET /.well-known/openid-configuration", s.serveOAuth(s.discovery))
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.serveOAuth(s.discovery))
	mux.HandleFunc("GET /jwks.json", s.serveOAuth(s.jwks))

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
	for _, p := range []string{"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/jwks.json"} {
		mux.HandleFunc(p, s.getOnly)
	}
	return mux
}

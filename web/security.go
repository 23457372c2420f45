package web

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
)

type nonceKey struct{}

// pageHeaders sets what every approver page answers with: a strict CSP with
// a fresh nonce for this response's scripts (strict-dynamic: only scripts
// the page itself loads with it run; no inline handlers), no framing, no
// referrer, no sniffing, and no caching (pages show requests).
func pageHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b [16]byte
		_, _ = rand.Read(b[:])
		nonce := base64.RawStdEncoding.EncodeToString(b[:])
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"' 'strict-dynamic'; "+
			"style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "+
			"frame-ancestors 'none'; manifest-src 'self'; worker-src 'self'")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), nonceKey{}, nonce)))
	})
}

func nonceOf(r *http.Request) string {
	n, _ := r.Context().Value(nonceKey{}).(string)
	return n
}

// newCrossOrigin refuses state-changing requests from other origins
// (Sec-Fetch-Site, else Origin against Host) with deny: the app's own
// refusal, a page or, for the scripts' JSON endpoints, JSON. The forms'
// per-session token is checked by each handler on top of it.
func newCrossOrigin(deny http.Handler) *http.CrossOriginProtection {
	c := http.NewCrossOriginProtection()
	c.SetDenyHandler(deny)
	return c
}

// strictTransport tells browsers to reach this host only over HTTPS for a
// year (RFC 6797), on every response of a server whose issuer is https
// (behind a TLS-terminating proxy the browser still sees HTTPS). Not
// includeSubDomains: the issuer's sibling hosts are not this server's to
// decide for.
func strictTransport(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		next.ServeHTTP(w, r)
	})
}

// Package web is Countersign's HTTP surface: the OAuth and CIBA endpoints, the
// approver pages, and the operational probes.
package web

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/approvals"
)

// MaxBodyBytes bounds every request body; OAuth forms and JSON bodies are far
// smaller, and a larger body is refused before any handler reads it.
const MaxBodyBytes = 1 << 20

// MaxHeaderBytes bounds the request line and headers; larger ones are
// answered 431 in OAuth JSON. The http.Server's MaxHeaderBytes must be larger
// (ServerMaxHeaderBytes), or net/http answers first, in plain text.
const MaxHeaderBytes = 64 << 10

// ServerMaxHeaderBytes is the http.Server.MaxHeaderBytes to serve Handler
// with: only headers beyond it get net/http's own plain-text 431.
const ServerMaxHeaderBytes = 4 * MaxHeaderBytes

// Options are what the HTTP surface needs from its process.
type Options struct {
	DB *sqlx.DB
	// Service is the domain; nil serves only the probes.
	Service *approvals.Service
	Logger  *slog.Logger
	// Metrics, when set, receives the HTTP metrics (requests, latency and
	// OAuth errors by route).
	Metrics prometheus.Registerer
	// Dev serves the development-only pages (the one-time sign-in link).
	Dev bool
	// Listener, when set, feeds the pages' live updates (/live).
	Listener *approvals.Listener
}

// Server holds the dependencies of every handler.
type Server struct {
	db      *sqlx.DB
	svc     *approvals.Service
	logger  *slog.Logger
	metrics *httpMetrics

	// The approver pages.
	assets        assets
	rp            *webauthn.WebAuthn
	secureCookies bool // https issuer: __Host- cookies, Secure
	dev           bool
	hub           *hub // live updates; nil without a listener
}

// New returns a Server; its Handler serves the routes.
func New(o Options) *Server {
	s := &Server{db: o.DB, svc: o.Service, logger: o.Logger, metrics: newHTTPMetrics(o.Metrics), assets: loadAssets(), dev: o.Dev}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.svc != nil {
		if o.Listener != nil {
			s.hub = newHub(s.svc, o.Listener)
		}
		s.secureCookies = strings.HasPrefix(s.svc.Issuer(), "https://")
		// The issuer was validated at start-up; a relying party that cannot
		// be made leaves the passkey endpoints answering 503.
		if rp, err := newRelyingParty(s.svc.Issuer()); err == nil {
			s.rp = rp
		} else {
			s.logger.Warn("passkeys unavailable: the issuer's host must be a domain name (WebAuthn refuses IP addresses)", "issuer", s.svc.Issuer(), "err", err)
		}
	}
	return s
}

// Handler returns the whole HTTP surface with its common middleware.
func (s *Server) Handler() http.Handler {
	h := limitHeaders(http.MaxBytesHandler(s.metrics.wrap(s.routes()), MaxBodyBytes))
	if s.secureCookies {
		h = strictTransport(h)
	}
	return h
}

package web

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/lib/pq"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/protocol"
)

// maxFormBytes bounds an OAuth request body; authorization_details alone is
// limited to 16 KiB (rar.MaxBytes), the rest are short strings.
const maxFormBytes = 64 << 10

// oauthStatus is the HTTP status of each error code: RFC 6749 §5.2 (400,
// 401 for invalid_client). CIBA §13 makes access_denied 403 at the
// backchannel authentication endpoint only; at the token endpoint CIBA §11
// answers as OpenID Connect Core §3.1.3.4, that is RFC 6749 §5.2's 400.
func oauthStatus(code string, backchannel bool) int {
	switch code {
	case approvals.CodeInvalidClient:
		return http.StatusUnauthorized
	case approvals.CodeAccessDenied:
		if backchannel {
			return http.StatusForbidden
		}
	case approvals.CodeTemporarilyUnavailable:
		return http.StatusServiceUnavailable
	case "server_error":
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

// oauthHandler is an OAuth endpoint: it returns an error instead of writing
// one, and serveOAuth renders every error the same way.
type oauthHandler func(w http.ResponseWriter, r *http.Request) error

// serveOAuth adapts the oauthHandler of an OAuth endpoint other than the
// backchannel authentication endpoint; see oauthAdapter.
func (s *Server) serveOAuth(h oauthHandler) http.HandlerFunc { return s.oauthAdapter(h, false) }

// serveBackchannel adapts the oauthHandler of the backchannel authentication
// endpoint, where access_denied is 403 (CIBA §13); see oauthAdapter.
func (s *Server) serveBackchannel(h oauthHandler) http.HandlerFunc { return s.oauthAdapter(h, true) }

// oauthAdapter adapts an oauthHandler: refusals become OAuth error JSON with
// the status of their code and Cache-Control: no-store; a request its client
// abandoned is logged at debug level and answered no further; a database
// outage is 503 temporarily_unavailable; anything else is logged once and
// answered 500 server_error without its text.
func (s *Server) oauthAdapter(h oauthHandler, backchannel bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var ref *approvals.Refusal
		switch {
		case errors.As(err, &ref):
			switch {
			case ref.Code == approvals.CodeSlowDown:
				w.Header().Set("Retry-After", strconv.Itoa(ref.Interval))
			case ref.RetryAfter > 0:
				w.Header().Set("Retry-After", strconv.Itoa(ref.RetryAfter))
			}
			status := oauthStatus(ref.Code, backchannel)
			if status == http.StatusUnauthorized {
				// RFC 6749 §5.2: answer a failed Basic authentication with its
				// scheme; RFC 9110 §15.5.2: every 401 carries a challenge.
				w.Header().Set("WWW-Authenticate", `Basic realm="countersign"`)
			}
			s.metrics.oauthError(r, ref.Code)
			writeJSON(w, status, protocol.ErrorResponse{Error: ref.Code, Description: ref.Description})
		case r.Context().Err() != nil:
			// The client hung up, so whatever failed failed because of that
			// (a query cancelled, a wait cut short): nothing here is broken,
			// and no one reads an answer.
			s.logger.DebugContext(r.Context(), "request abandoned by the client", "path", r.URL.Path, "err", err)
		case databaseDown(err):
			s.logger.WarnContext(r.Context(), "database unavailable", "path", r.URL.Path, "err", err)
			w.Header().Set("Retry-After", "5")
			s.metrics.oauthError(r, approvals.CodeTemporarilyUnavailable)
			writeJSON(w, http.StatusServiceUnavailable, protocol.ErrorResponse{Error: approvals.CodeTemporarilyUnavailable, Description: "the service is temporarily unavailable; retry later"})
		default:
			s.logger.ErrorContext(r.Context(), "internal error", "path", r.URL.Path, "err", err)
			s.metrics.oauthError(r, "server_error")
			writeJSON(w, http.StatusInternalServerError, protocol.ErrorResponse{Error: protocol.CodeServerError, Description: "internal error"})
		}
	}
}

// databaseDown reports whether err means PostgreSQL cannot be reached.
func databaseDown(err error) bool {
	var netErr net.Error
	var pqErr *pq.Error
	switch {
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF),
		// lib/pq answers io.EOF when the server (or the network) closes the
		// connection, at start-up or mid-query.
		errors.Is(err, io.EOF),
		errors.Is(err, context.DeadlineExceeded):
		return true
	case errors.As(err, &netErr):
		return true
	case errors.As(err, &pqErr):
		// Class 08: connection exception; 57P0x: shutdown, cannot connect now.
		return strings.HasPrefix(string(pqErr.Code), "08") || strings.HasPrefix(string(pqErr.Code), "57P")
	}
	return false
}

func invalidRequest(description string) error {
	return &approvals.Refusal{Code: approvals.CodeInvalidRequest, Description: description}
}

// oauthForm is a parsed application/x-www-form-urlencoded POST body.
type oauthForm url.Values

// parseForm reads the body of an OAuth POST (never the query string) and
// rejects repeated parameters (RFC 6749 §3.1), except those in repeatable.
func parseForm(r *http.Request, repeatable ...string) (oauthForm, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, invalidRequest("the body must be application/x-www-form-urlencoded")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFormBytes+1))
	if err != nil {
		return nil, invalidRequest("the body could not be read")
	}
	if len(body) > maxFormBytes {
		return nil, invalidRequest("the body is larger than 64 KiB")
	}
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, invalidRequest("the body is not valid form encoding")
	}
	for k, vs := range v {
		// RFC 6749 Appendix B: names and values are UTF-8. NUL is never part
		// of a parameter, and PostgreSQL cannot store it.
		if !validText(k) || slices.ContainsFunc(vs, func(s string) bool { return !validText(s) }) {
			return nil, invalidRequest("parameters must be UTF-8 text without NUL characters")
		}
		if len(vs) > 1 && !contains(repeatable, k) {
			if !isParamName(k) {
				return nil, invalidRequest("a parameter is repeated")
			}
			return nil, invalidRequest("parameter " + k + " is repeated")
		}
	}
	return oauthForm(v), nil
}

// validText reports whether s is UTF-8 without NUL.
func validText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// isParamName reports whether a parameter name can be echoed in an
// error_description (RFC 6749 §5.2 limits its characters).
func isParamName(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for _, c := range []byte(k) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// get returns a parameter; an empty value counts as absent (RFC 6749 §3.1).
func (f oauthForm) get(k string) string { return url.Values(f).Get(k) }

// clientCredentials are what a client presented to authenticate (RFC 6749
// §2.3.1): Basic, or client_id and client_secret in the body.
type clientCredentials struct {
	ID, Secret, Method string
}

func credentials(r *http.Request, f oauthForm) (clientCredentials, error) {
	user, pass, basic := r.BasicAuth()
	bodySecret := f.get("client_secret")
	assertion, assertionType := f.get("client_assertion"), f.get("client_assertion_type")
	methods := 0
	for _, used := range []bool{basic, bodySecret != "", assertion != "" || assertionType != ""} {
		if used {
			methods++
		}
	}
	switch {
	case methods > 1:
		return clientCredentials{}, invalidRequest("use one client authentication method, not several")
	case basic:
		// RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic.
		id, err1 := url.QueryUnescape(user)
		secret, err2 := url.QueryUnescape(pass)
		if err1 != nil || err2 != nil || !validText(id) || !validText(secret) {
			return clientCredentials{}, &approvals.Refusal{Code: approvals.CodeInvalidClient, Description: "malformed Basic credentials"}
		}
		if bid := f.get("client_id"); bid != "" && bid != id {
			return clientCredentials{}, invalidRequest("client_id in the body differs from the authenticated client")
		}
		return clientCredentials{ID: id, Secret: secret, Method: approvals.AuthClientSecretBasic}, nil
	case bodySecret != "":
		return clientCredentials{ID: f.get("client_id"), Secret: bodySecret, Method: approvals.AuthClientSecretPost}, nil
	case assertion != "" || assertionType != "":
		// RFC 7523 §2.2.
		if assertionType != approvals.ClientAssertionType {
			return clientCredentials{}, invalidRequest("client_assertion_type must be " + approvals.ClientAssertionType)
		}
		if assertion == "" {
			return clientCredentials{}, invalidRequest("client_assertion is required with client_assertion_type")
		}
		return clientCredentials{ID: f.get("client_id"), Secret: assertion, Method: approvals.AuthPrivateKeyJWT}, nil
	case strings.HasPrefix(r.Header.Get("Authorization"), "Basic "):
		return clientCredentials{}, &approvals.Refusal{Code: approvals.CodeInvalidClient, Description: "malformed Basic credentials"}
	}
	return clientCredentials{}, &approvals.Refusal{Code: approvals.CodeInvalidClient, Description: "client authentication is required"}
}

var errClientAuth = &approvals.Refusal{Code: approvals.CodeInvalidClient, Description: "client authentication failed"}

// authenticateAgent authenticates the agent making an OAuth request.
func (s *Server) authenticateAgent(r *http.Request, f oauthForm) (approvals.Agent, error) {
	c, err := credentials(r, f)
	if err != nil {
		return approvals.Agent{}, err
	}
	if c.Method == approvals.AuthPrivateKeyJWT {
		// RFC 7523 §3: the audience is this server; accept its issuer, the
		// token endpoint and the endpoint the assertion is presented at.
		iss := s.svc.Issuer()
		a, err := s.svc.AuthenticateAssertion(r.Context(), c.ID, c.Secret, []string{iss, iss + "/token", iss + r.URL.Path})
		if errors.Is(err, approvals.ErrAssertion) {
			s.logger.InfoContext(r.Context(), "client assertion refused", "err", err)
			return approvals.Agent{}, errClientAuth
		}
		return a, err
	}
	a, err := s.svc.AuthenticateAgent(r.Context(), c.ID, c.Secret, c.Method)
	if errors.Is(err, approvals.ErrNotAllowed) {
		return approvals.Agent{}, errClientAuth
	}
	return a, err
}

// authenticateResourceServer authenticates a resource server.
func (s *Server) authenticateResourceServer(r *http.Request, f oauthForm) (approvals.ResourceServer, error) {
	c, err := credentials(r, f)
	if err != nil {
		return approvals.ResourceServer{}, err
	}
	if c.Method == approvals.AuthPrivateKeyJWT {
		return approvals.ResourceServer{}, errClientAuth
	}
	rs, err := s.svc.AuthenticateResourceServer(r.Context(), c.ID, c.Secret)
	if errors.Is(err, approvals.ErrNotAllowed) {
		return approvals.ResourceServer{}, errClientAuth
	}
	return rs, err
}

// postOnly answers a wrong method on an OAuth endpoint (RFC 6749 §3.2: POST).
func (s *Server) postOnly(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", http.MethodPost)
	writeJSON(w, http.StatusMethodNotAllowed, protocol.ErrorResponse{Error: approvals.CodeInvalidRequest, Description: "this endpoint accepts POST only"})
}

// getOnly answers a wrong method on a metadata endpoint (discovery, JWKS).
func (s *Server) getOnly(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", "GET, HEAD")
	writeJSON(w, http.StatusMethodNotAllowed, protocol.ErrorResponse{Error: approvals.CodeInvalidRequest, Description: "this endpoint accepts GET and HEAD only"})
}

// limitHeaders answers 431 in OAuth JSON when the request line and headers
// exceed MaxHeaderBytes (RFC 6585 §5). net/http's own limit, which answers in
// plain text, is set above this one (see MaxHeaderBytes).
func limitHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Counted as on the wire: "METHOD URI PROTO", "Name: value" lines.
		n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + len("Host: ") + len(r.Host) + 3*len("\r\n")
		for k, vs := range r.Header {
			for _, v := range vs {
				n += len(k) + len(": ") + len(v) + len("\r\n")
			}
		}
		if n > MaxHeaderBytes {
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusRequestHeaderFieldsTooLarge, protocol.ErrorResponse{Error: approvals.CodeInvalidRequest,
				Description: "the request headers are larger than " + strconv.Itoa(MaxHeaderBytes>>10) + " KiB"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

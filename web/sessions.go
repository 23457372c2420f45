package web

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/countersign/countersign/approvals"
)

// Session cookies. Over https the cookie is __Host- prefixed and Secure (so
// it is bound to this host and path /, and never sent in clear); on plain
// http (the dev server on localhost) the prefix and Secure are dropped,
// since a browser refuses both there.
const (
	sessionCookie    = "__Host-countersign-session"
	devSessionCookie = "countersign-session"
)

func (s *Server) sessionCookieName() string {
	if s.secureCookies {
		return sessionCookie
	}
	return devSessionCookie
}

// setSession gives the browser session token.
func (s *Server) setSession(w http.ResponseWriter, token string) {
	http.SetCookie(w, &http.Cookie{Name: s.sessionCookieName(), Value: token, Path: "/",
		MaxAge: int(approvals.SessionAbsolute / time.Second), HttpOnly: true, Secure: s.secureCookies, SameSite: http.SameSiteLaxMode})
}

func (s *Server) clearSession(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: s.sessionCookieName(), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.secureCookies, SameSite: http.SameSiteLaxMode})
}

// signedIn is the session a request carries and its user.
type signedIn struct {
	Session approvals.Session
	User    approvals.User
	Token   string
}

type signedInKey struct{}

// withSession reads the session cookie, if any, into the request's context.
// A cookie for no live session is cleared.
func (s *Server) withSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(s.sessionCookieName())
		if err != nil || c.Value == "" {
			next.ServeHTTP(w, r)
			return
		}
		sess, user, err := s.svc.Store().Session(r.Context(), c.Value)
		switch {
		case errors.Is(err, approvals.ErrNotFound):
			s.clearSession(w)
		case err != nil:
			s.pageError(w, r, err)
			return
		default:
			r = r.WithContext(context.WithValue(r.Context(), signedInKey{}, &signedIn{Session: sess, User: user, Token: c.Value}))
		}
		next.ServeHTTP(w, r)
	})
}

func sessionOf(r *http.Request) *signedIn {
	si, _ := r.Context().Value(signedInKey{}).(*signedIn)
	return si
}

// presentedToken is the session secret the browser sent, live or not: a
// sign-in ends that session (the id is rotated at sign-in).
func (s *Server) presentedToken(r *http.Request) string {
	if c, err := r.Cookie(s.sessionCookieName()); err == nil {
		return c.Value
	}
	return ""
}

// csrfOK checks a form's or a script's per-session token.
func csrfOK(r *http.Request, si *signedIn) bool {
	got := r.PostFormValue("csrf")
	if got == "" {
		got = r.Header.Get("X-CSRF-Token")
	}
	return si != nil && got != "" && approvals.CSRFMatches(si.Session, got)
}

package web

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/a-h/templ"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/web/pages"
)

// page returns the frame data of a page for r.
func (s *Server) page(r *http.Request, title string) pages.Page {
	p := pages.Page{Title: title, Nonce: nonceOf(r), Asset: s.assets.url}
	if si := sessionOf(r); si != nil {
		p.CSRF, p.SignedIn = si.Session.CSRF, si.User.Email
	}
	return p
}

// render writes component c with status.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := c.Render(r.Context(), w); err != nil {
		s.logger.DebugContext(r.Context(), "page not written", "err", err)
	}
}

// notFound is the one page for a request that does not exist and for one the
// visitor may not see: the same bytes for both (it carries no nonce).
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	p := s.page(r, "Not found")
	p.Nonce = ""
	s.render(w, r, http.StatusNotFound, pages.Problem(p, "Not found", "There is nothing here for you. The link may be wrong, or meant for someone else."))
}

// pageError renders the page for a domain error, never internal text.
func (s *Server) pageError(w http.ResponseWriter, r *http.Request, err error) {
	p := s.page(r, "Something went wrong")
	switch {
	case errors.Is(err, approvals.ErrNotFound):
		s.notFound(w, r)
	case errors.Is(err, approvals.ErrExpired):
		s.render(w, r, http.StatusGone, pages.Problem(p, "Expired", "This request expired before it was decided."))
	case errors.Is(err, approvals.ErrAlreadyDecided), errors.Is(err, approvals.ErrAlreadyReviewed):
		s.render(w, r, http.StatusConflict, pages.Problem(p, "Already decided", "Someone decided this first, or you already did."))
	case errors.Is(err, approvals.ErrLastPasskey):
		s.render(w, r, http.StatusConflict, pages.Problem(p, "Your only passkey", "Add another passkey before you remove this one: without one you could not sign in."))
	case errors.Is(err, approvals.ErrConflict):
		s.render(w, r, http.StatusConflict, pages.Problem(p, "Changed meanwhile", "Something changed while you were deciding. Look again and try once more."))
	case errors.Is(err, approvals.ErrStepUpRequired):
		s.render(w, r, http.StatusUnprocessableEntity, pages.Problem(p, "A passkey is needed", "This request must be approved with your passkey: use Approve with passkey (it needs JavaScript)."))
	case errors.Is(err, approvals.ErrNoEffect):
		s.render(w, r, http.StatusUnprocessableEntity, pages.Problem(p, "That would change nothing", "Your approval does not count towards what this request needs."))
	case errors.Is(err, approvals.ErrInvalidInput):
		msg := "Check what you entered and try again."
		if ie := (*approvals.InputError)(nil); errors.As(err, &ie) {
			msg = ie.Msg
		}
		s.render(w, r, http.StatusUnprocessableEntity, pages.Problem(p, "That did not work", msg))
	default:
		s.logger.ErrorContext(r.Context(), "approver page failed", "err", err)
		s.render(w, r, http.StatusInternalServerError, pages.Problem(p, "Something went wrong", "Please try again in a moment."))
	}
}

// formSession is the session of a page form's POST, with its form token
// checked; nil once it has answered (sign-in for a signed-out visitor, the
// refusal for a missing or wrong token).
func (s *Server) formSession(w http.ResponseWriter, r *http.Request) *signedIn {
	si := sessionOf(r)
	if si == nil {
		toSignIn(w, r)
		return nil
	}
	if !csrfOK(r, si) {
		s.forbidden(w, r)
		return nil
	}
	return si
}

// toSignIn sends a signed-out visitor to sign in and back to where they were.
func toSignIn(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.Path), http.StatusSeeOther)
}

// localNext is a post-sign-in destination, if it is one of our own pages;
// otherwise the inbox. Only paths are kept, never a host.
func localNext(next string) string {
	switch {
	case next == "/", next == "/settings":
		return next
	case strings.HasPrefix(next, "/approve/") && validID(strings.TrimPrefix(next, "/approve/")):
		return next
	}
	return "/"
}

// validID reports whether id looks like a request id (a UUID's text).
func validID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i, c := range id {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		default:
			return false
		}
	}
	return true
}

func (s *Server) inbox(w http.ResponseWriter, r *http.Request) {
	si := sessionOf(r)
	if si == nil {
		toSignIn(w, r)
		return
	}
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	in, err := s.svc.Inbox(r.Context(), si.User, page)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, pages.InboxPage(s.page(r, "Inbox"), in))
}

func (s *Server) signInPage(w http.ResponseWriter, r *http.Request) {
	next := localNext(r.URL.Query().Get("next"))
	if sessionOf(r) != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, pages.SignIn(s.page(r, "Sign in"), next))
}

func (s *Server) consent(w http.ResponseWriter, r *http.Request) {
	si := sessionOf(r)
	if si == nil {
		toSignIn(w, r)
		return
	}
	c, err := s.svc.Consent(r.Context(), r.PathValue("id"), si.User)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	// Only this full page GET records a view (once per session), not the
	// page re-rendered after a refused decision. A view not recorded does
	// not keep the person from the page: it is logged instead.
	if err := s.svc.Viewed(r.Context(), c.Request.ID, si.User, si.Session.ID); err != nil {
		s.logger.ErrorContext(r.Context(), "consent page view not recorded", "request", c.Request.ID, "err", err)
	}
	s.render(w, r, http.StatusOK, pages.ConsentPage(s.page(r, "Approve?"), c, ""))
}

// decide records the signed-in reviewer's verdict from the consent page's
// forms, then shows the page as it now stands (Post/Redirect/Get). A double
// click, a second tab or a second device finds the request decided and is
// shown what happened, with 409.
func (s *Server) decide(w http.ResponseWriter, r *http.Request) {
	si := s.formSession(w, r)
	if si == nil {
		return
	}
	id := r.PathValue("id")
	var verdict approvals.Verdict
	switch r.PostFormValue("verdict") {
	case "approve":
		verdict = approvals.VerdictApprove
	case "deny":
		verdict = approvals.VerdictDeny
	default:
		s.render(w, r, http.StatusUnprocessableEntity, pages.Problem(s.page(r, "That did not work"), "That did not work", "Choose Approve or Deny."))
		return
	}
	_, err := s.svc.Review(r.Context(), id, approvals.Reviewer{UserID: si.User.ID, AMR: si.Session.AMR},
		approvals.ReviewInput{Verdict: verdict, Reason: r.PostFormValue("reason")})
	if err != nil {
		s.decideError(w, r, id, si, err)
		return
	}
	http.Redirect(w, r, "/approve/"+id, http.StatusSeeOther)
}

// report is "this wasn't me": the agent is suspended and its pending
// requests for this person denied.
func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	si := s.formSession(w, r)
	if si == nil {
		return
	}
	id := r.PathValue("id")
	if err := s.svc.Report(r.Context(), id, si.User); err != nil {
		s.pageError(w, r, err)
		return
	}
	// Post/redirect/get: a reload does not report again.
	http.Redirect(w, r, "/approve/"+id, http.StatusSeeOther)
}

// decideError shows a refused decision on the consent page itself, with the
// status that says why, so the reviewer sees what happened instead.
func (s *Server) decideError(w http.ResponseWriter, r *http.Request, id string, si *signedIn, err error) {
	var status int
	var notice string
	switch {
	case errors.Is(err, approvals.ErrAlreadyDecided), errors.Is(err, approvals.ErrAlreadyReviewed):
		status, notice = http.StatusConflict, "This request was already decided; here is what happened."
	case errors.Is(err, approvals.ErrExpired):
		status, notice = http.StatusGone, "This request expired before your decision reached it."
	case errors.Is(err, approvals.ErrStepUpRequired):
		status, notice = http.StatusUnprocessableEntity, "Approving this request needs your passkey."
	case errors.Is(err, approvals.ErrInvalidInput):
		status, notice = http.StatusUnprocessableEntity, "A reason has at most 500 characters."
	default:
		s.pageError(w, r, err)
		return
	}
	c, cerr := s.svc.Consent(r.Context(), id, si.User)
	if cerr != nil {
		s.pageError(w, r, cerr)
		return
	}
	s.render(w, r, status, pages.ConsentPage(s.page(r, "Approve?"), c, notice))
}

func (s *Server) forbidden(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusForbidden, pages.Problem(s.page(r, "Refused"), "Refused",
		"This form is out of date or came from another site. Go back, reload the page and try again."))
}

func (s *Server) signOut(w http.ResponseWriter, r *http.Request) {
	si := sessionOf(r)
	if si != nil {
		if !csrfOK(r, si) {
			s.forbidden(w, r)
			return
		}
		if err := s.svc.Store().EndSession(r.Context(), si.Token); err != nil {
			s.pageError(w, r, err)
			return
		}
	}
	s.clearSession(w)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

func (s *Server) signOutEverywhere(w http.ResponseWriter, r *http.Request) {
	si := s.formSession(w, r)
	if si == nil {
		return
	}
	if _, err := s.svc.Store().EndSessions(r.Context(), si.User.ID); err != nil {
		s.pageError(w, r, err)
		return
	}
	s.clearSession(w)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

func (s *Server) settings(w http.ResponseWriter, r *http.Request) {
	si := sessionOf(r)
	if si == nil {
		toSignIn(w, r)
		return
	}
	s.renderSettings(w, r, si, "")
}

// newUserCode makes the signed-in user a new user code and shows it once
// (the database keeps only its hash).
func (s *Server) newUserCode(w http.ResponseWriter, r *http.Request) {
	si := s.formSession(w, r)
	if si == nil {
		return
	}
	code, err := s.svc.Store().NewUserCode(r.Context(), si.User.ID)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	si.User.UserCodeHash = new(string) // has one now
	s.renderSettings(w, r, si, code)
}

func (s *Server) renderSettings(w http.ResponseWriter, r *http.Request, si *signedIn, newCode string) {
	keys, err := s.svc.Store().Passkeys(r.Context(), si.User.ID)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	sessions, err := s.svc.Store().Sessions(r.Context(), si.User.ID)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	devices, err := s.svc.Store().PushSubscriptions(r.Context(), si.User.ID)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, pages.Settings(s.page(r, "Settings"), si.User, keys, sessions, devices, si.Session.ID, newCode))
}

// settingsAction runs one of the settings forms' changes.
func (s *Server) settingsAction(do func(r *http.Request, si *signedIn) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		si := sessionOf(r)
		if si == nil {
			toSignIn(w, r)
			return
		}
		if !csrfOK(r, si) {
			s.forbidden(w, r)
			return
		}
		if err := do(r, si); err != nil {
			s.pageError(w, r, err)
			return
		}
		http.Redirect(w, r, "/settings", http.StatusSeeOther)
	}
}

func (s *Server) enrollPage(w http.ResponseWriter, r *http.Request) {
	token := r.PathValue("token")
	user, err := s.svc.Store().LinkUser(r.Context(), approvals.LinkEnroll, token)
	if err != nil {
		if errors.Is(err, approvals.ErrNotFound) {
			s.render(w, r, http.StatusGone, pages.Problem(s.page(r, "Link expired"), "This link has expired or was used",
				"Ask your administrator for a new enrollment link."))
			return
		}
		s.pageError(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, pages.Enroll(s.page(r, "Create your passkey"), user.Email, token))
}

// devSignIn spends a one-time sign-in link (dev mode only): it lets a
// newcomer whose browser has no passkey provider try the consent page.
func (s *Server) devSignIn(w http.ResponseWriter, r *http.Request) {
	user, err := s.svc.Store().ConsumeLink(r.Context(), approvals.LinkSignIn, r.PathValue("token"))
	if err != nil {
		if errors.Is(err, approvals.ErrNotFound) || errors.Is(err, approvals.ErrSuspended) {
			s.render(w, r, http.StatusGone, pages.Problem(s.page(r, "Link expired"), "This link has expired or was used",
				"Restart the dev server for a new one."))
			return
		}
		s.pageError(w, r, err)
		return
	}
	token, _, err := s.svc.Store().CreateSession(r.Context(), user.ID, []string{"dev_link"}, r.UserAgent(), s.presentedToken(r))
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	s.setSession(w, token)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

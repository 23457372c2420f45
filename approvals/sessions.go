package approvals

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// Session limits: a session ends after SessionIdle without use, and
// SessionAbsolute after it began whatever its use.
const (
	SessionIdle     = 30 * time.Minute
	SessionAbsolute = 12 * time.Hour
)

// maxUserAgent bounds the browser description kept with a session.
const maxUserAgent = 200

// Session is a signed-in browser, kept server-side: the cookie carries a
// 256-bit secret, the database its SHA-256.
type Session struct {
	ID         string         `db:"public_id"` // to list and end it; not the secret
	UserID     string         `db:"user_id"`
	AMR        pq.StringArray `db:"amr"` // how the user signed in (RFC 8176)
	UserAgent  string         `db:"user_agent"`
	CreatedAt  time.Time      `db:"created_at"`
	LastSeenAt time.Time      `db:"last_seen_at"`
	ExpiresAt  time.Time      `db:"expires_at"`
	// CSRF is the session's form token, derived from its secret (set by
	// CreateSession and Session only).
	CSRF string `db:"-"`
}

const sessionColumns = `public_id, user_id, amr, user_agent, created_at, last_seen_at, expires_at`

// csrfFor derives a session's form token from its secret: nothing to store,
// and nobody without the cookie can compute it.
func csrfFor(secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("countersign csrf"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// CSRFMatches reports, in constant time, whether got is s's form token.
func CSRFMatches(s Session, got string) bool {
	return s.CSRF != "" && hmac.Equal([]byte(s.CSRF), []byte(got))
}

const insertSessionSQL = `
INSERT INTO web_sessions (id_hash, public_id, user_id, amr, user_agent, expires_at)
SELECT $1, $2, id, $4, $5, now() + make_interval(secs => $6) FROM users WHERE id = $3 AND status = 'active'
RETURNING ` + sessionColumns

// CreateSession signs user userID in and returns the cookie's secret. A
// session the browser presented (previous, its secret) ends in the same
// change: the session id is never carried across a sign-in.
func (s *Store) CreateSession(ctx context.Context, userID string, amr []string, userAgent, previous string) (string, Session, error) {
	if len(userAgent) > maxUserAgent {
		userAgent = userAgent[:maxUserAgent]
	}
	token := NewSecret()
	var out Session
	err := s.change(ctx, func(t *Tx) error {
		if previous != "" {
			if err := endSession(ctx, t, `id_hash = $1`, HashSecret(previous)); err != nil {
				return err
			}
		}
		if err := t.GetContext(ctx, &out, insertSessionSQL, HashSecret(token), newID("ses_"), userID,
			pq.StringArray(nonNil(amr)), toValidUTF8(userAgent), SessionAbsolute.Seconds()); err != nil {
			return fmt.Errorf("approvals: create session: %w", translate(err))
		}
		t.record(Event{Kind: KindSessionCreated, Actor: ActorUser(userID), UserID: &out.UserID,
			Body: mustJSON(map[string]any{"session": out.ID, "amr": out.AMR})})
		return nil
	})
	if err != nil {
		return "", Session{}, err
	}
	out.CSRF = csrfFor(token)
	return token, out, nil
}

func toValidUTF8(s string) string {
	out := []rune{}
	for _, r := range s {
		if r != '\uFFFD' && r >= 0x20 {
			out = append(out, r)
		}
	}
	return string(out)
}

var sessionSQL = `
UPDATE web_sessions s SET last_seen_at = now()
FROM users u
WHERE s.id_hash = $1 AND u.id = s.user_id AND u.status = 'active'
	AND s.expires_at > now() AND s.created_at > now() - make_interval(secs => ` + fmt.Sprint(int(SessionAbsolute.Seconds())) + `)
	AND s.last_seen_at > now() - make_interval(secs => ` + fmt.Sprint(int(SessionIdle.Seconds())) + `)
RETURNING ` + prefixedSessionColumns + `, ` + prefixedUserColumns

const prefixedSessionColumns = `s.public_id, s.user_id, s.amr, s.user_agent, s.created_at, s.last_seen_at, s.expires_at`

// Session returns the live session whose secret is token, and its user,
// and marks it used. ErrNotFound when it is unknown, ended, idle for longer
// than SessionIdle, older than SessionAbsolute or its user suspended.
func (s *Store) Session(ctx context.Context, token string) (Session, User, error) {
	rows, err := s.db.QueryxContext(ctx, sessionSQL, HashSecret(token))
	if err != nil {
		return Session{}, User{}, fmt.Errorf("approvals: session: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return Session{}, User{}, fmt.Errorf("approvals: session: %w", err)
		}
		return Session{}, User{}, fmt.Errorf("approvals: session: %w", ErrNotFound)
	}
	var sess Session
	var u User
	if err := rows.Scan(&sess.ID, &sess.UserID, &sess.AMR, &sess.UserAgent, &sess.CreatedAt, &sess.LastSeenAt, &sess.ExpiresAt,
		&u.ID, &u.Email, &u.Name, &u.Roles, &u.Groups, &u.UserCodeHash, &u.UserCodeFailures, &u.UserCodeLockedUntil, &u.Status, &u.CreatedAt); err != nil {
		return Session{}, User{}, fmt.Errorf("approvals: session: %w", err)
	}
	sess.CSRF = csrfFor(token)
	return sess, u, nil
}

// Sessions lists user userID's live sessions, newest first.
func (s *Store) Sessions(ctx context.Context, userID string) ([]Session, error) {
	var out []Session
	err := s.db.SelectContext(ctx, &out, `SELECT `+sessionColumns+` FROM web_sessions
		WHERE user_id = $1 AND expires_at > now() AND last_seen_at > now() - make_interval(secs => $2)
		ORDER BY created_at DESC`, userID, SessionIdle.Seconds())
	if err != nil {
		return nil, fmt.Errorf("approvals: sessions: %w", err)
	}
	return out, nil
}

// endSession ends the sessions matching where (on $1), recording each.
func endSession(ctx context.Context, t *Tx, where string, arg any) error {
	var ended []Session
	if err := t.SelectContext(ctx, &ended, `DELETE FROM web_sessions WHERE `+where+` RETURNING `+sessionColumns, arg); err != nil {
		return fmt.Errorf("approvals: end session: %w", err)
	}
	for _, e := range ended {
		t.record(Event{Kind: KindSessionEnded, Actor: ActorUser(e.UserID), UserID: &e.UserID, Body: mustJSON(map[string]any{"session": e.ID})})
	}
	return nil
}

// EndSession signs out the session whose secret is token; an unknown one is
// not an error.
func (s *Store) EndSession(ctx context.Context, token string) error {
	return s.change(ctx, func(t *Tx) error { return endSession(ctx, t, `id_hash = $1`, HashSecret(token)) })
}

// EndSessionByID signs out user userID's session id (ErrNotFound for
// another user's).
func (s *Store) EndSessionByID(ctx context.Context, userID, id string) error {
	return s.change(ctx, func(t *Tx) error {
		var n int
		if err := t.GetContext(ctx, &n, `SELECT count(*) FROM web_sessions WHERE public_id = $1 AND user_id = $2`, id, userID); err != nil {
			return fmt.Errorf("approvals: end session: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("approvals: end session: %w", ErrNotFound)
		}
		return endSession(ctx, t, `public_id = $1`, id)
	})
}

// EndSessions signs user userID out everywhere and says how many sessions
// ended.
func (s *Store) EndSessions(ctx context.Context, userID string) (int, error) {
	var n int
	err := s.change(ctx, func(t *Tx) error {
		before := len(t.events)
		if err := endSession(ctx, t, `user_id = $1`, userID); err != nil {
			return err
		}
		n = len(t.events) - before
		return nil
	})
	return n, err
}

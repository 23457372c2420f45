package approvals

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// LinkPurpose is what a one-time link is for.
type LinkPurpose string

// Link purposes.
const (
	LinkEnroll LinkPurpose = "enroll" // registers a first passkey
	LinkSignIn LinkPurpose = "signin" // signs in once (dev mode only)
)

// Link lifetimes.
const (
	EnrollmentLifetime = 24 * time.Hour
	SignInLinkLifetime = 15 * time.Minute
)

// Link is a one-time link for a user. Token, the secret in its URL, is
// there only when the link is made: the database keeps its SHA-256.
type Link struct {
	UserID, Email string
	Purpose       LinkPurpose
	Token         string
	ExpiresAt     time.Time
}

const insertLinkSQL = `
INSERT INTO user_links (token_hash, purpose, user_id, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
RETURNING expires_at`

func makeLink(ctx context.Context, t *Tx, u User, purpose LinkPurpose, life time.Duration) (Link, error) {
	l := Link{UserID: u.ID, Email: u.Email, Purpose: purpose, Token: NewSecret()}
	if err := t.GetContext(ctx, &l.ExpiresAt, insertLinkSQL, HashSecret(l.Token), purpose, u.ID, life.Seconds()); err != nil {
		return Link{}, fmt.Errorf("approvals: link: %w", translate(err))
	}
	return l, nil
}

// InviteUser makes an enrollment link for the user with email, creating the
// user (with name) when there is none.
func (s *Store) InviteUser(ctx context.Context, email, name string) (User, Link, error) {
	email = strings.ToLower(strings.TrimSpace(email))
	u, err := s.UserByHint(ctx, email)
	created := false
	if errors.Is(err, ErrNotFound) {
		u, err = s.CreateUser(ctx, NewUser{Email: email, Name: name})
		created = err == nil
	}
	if err != nil {
		return User{}, Link{}, err
	}
	var l Link
	err = s.change(ctx, func(t *Tx) error {
		var err error
		if l, err = makeLink(ctx, t, u, LinkEnroll, EnrollmentLifetime); err != nil {
			return err
		}
		t.record(Event{Kind: KindUserInvited, Actor: ActorCLI, UserID: &u.ID,
			Body: mustJSON(map[string]any{"expires_at": l.ExpiresAt, "email": u.Email, "user_created": created,
				"after": map[string]any{"enrollment_link": "issued", "expires_at": l.ExpiresAt}})})
		return nil
	})
	return u, l, err
}

// SignInLink makes a one-time sign-in link for user userID (the dev server
// prints one, for browsers without a passkey provider).
func (s *Store) SignInLink(ctx context.Context, userID string) (Link, error) {
	u, err := s.User(ctx, userID)
	if err != nil {
		return Link{}, err
	}
	var l Link
	err = s.change(ctx, func(t *Tx) error {
		var err error
		l, err = makeLink(ctx, t, u, LinkSignIn, SignInLinkLifetime)
		return err
	})
	return l, err
}

const linkUserSQL = `
SELECT ` + prefixedUserColumns + ` FROM user_links l JOIN users u ON u.id = l.user_id
WHERE l.token_hash = $1 AND l.purpose = $2 AND l.expires_at > now()`

// LinkUser says whose live link token is, without spending it; ErrNotFound
// when it is unknown, spent or expired.
func (s *Store) LinkUser(ctx context.Context, purpose LinkPurpose, token string) (User, error) {
	var u User
	if err := s.db.GetContext(ctx, &u, linkUserSQL, HashSecret(token), purpose); err != nil {
		return User{}, fmt.Errorf("approvals: link: %w", translate(err))
	}
	return u, nil
}

const consumeLinkSQL = `
WITH l AS (
	DELETE FROM user_links WHERE token_hash = $1 AND purpose = $2 AND expires_at > now()
	RETURNING user_id
)
SELECT ` + prefixedUserColumns + ` FROM l JOIN users u ON u.id = l.user_id`

// ConsumeLink spends link token atomically: of two concurrent uses one
// wins. ErrNotFound when it is unknown, spent or expired; ErrSuspended for
// a suspended user (the link is spent all the same).
func (s *Store) ConsumeLink(ctx context.Context, purpose LinkPurpose, token string) (User, error) {
	var u User
	var refused error
	err := s.change(ctx, func(t *Tx) error {
		var err error
		u, err = consumeLink(ctx, t, purpose, token)
		if errors.Is(err, ErrSuspended) {
			refused, err = err, nil // commit: the link is spent
		}
		return err
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return User{}, err
	}
	return u, nil
}

func consumeLink(ctx context.Context, t *Tx, purpose LinkPurpose, token string) (User, error) {
	var u User
	if err := t.GetContext(ctx, &u, consumeLinkSQL, HashSecret(token), purpose); err != nil {
		return User{}, fmt.Errorf("approvals: link: %w", translate(err))
	}
	if u.Status != "active" {
		return User{}, fmt.Errorf("approvals: link: %w", ErrSuspended)
	}
	return u, nil
}

// PurgeExpiredAccess deletes expired links, sessions and ceremonies.
func (s *Store) PurgeExpiredAccess(ctx context.Context) (int64, error) {
	var n int64
	for _, q := range []string{
		`WITH d AS (DELETE FROM user_links WHERE expires_at < now() RETURNING 1) SELECT count(*) FROM d`,
		// An ended session leaves its session.ended event, by the sweeper,
		// with why: its absolute limit, or idleness.
		`WITH d AS (
			DELETE FROM web_sessions WHERE expires_at < now() OR last_seen_at < now() - make_interval(secs => ` + fmt.Sprint(int(SessionIdle.Seconds())) + `)
			RETURNING public_id, user_id, expires_at < now() AS expired
		), ev AS (
			INSERT INTO audit_events (kind, actor, user_id, body)
			SELECT '` + KindSessionEnded + `', '` + ActorSweeper + `', user_id,
				jsonb_build_object('session', public_id, 'reason', CASE WHEN expired THEN 'expired' ELSE 'idle' END)
			FROM d
		)
		SELECT count(*) FROM d`,
		`WITH d AS (DELETE FROM webauthn_challenges WHERE expires_at < now() RETURNING 1) SELECT count(*) FROM d`,
	} {
		var m int64
		if err := s.db.GetContext(ctx, &m, q); err != nil {
			return n, fmt.Errorf("approvals: purge: %w", err)
		}
		n += m
	}
	return n, nil
}

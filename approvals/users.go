package approvals

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/lib/pq"
)

// User is a person who approves requests.
type User struct {
	ID           string         `db:"id" json:"id"`
	Email        string         `db:"email" json:"email"`
	Name         string         `db:"name" json:"name"`
	Roles        pq.StringArray `db:"roles" json:"roles"`
	Groups       pq.StringArray `db:"groups" json:"groups"`
	UserCodeHash *string        `db:"user_code_hash" json:"-"`
	// Wrong user codes in a row, and until when the code is locked.
	UserCodeFailures    int        `db:"user_code_failures" json:"-"`
	UserCodeLockedUntil *time.Time `db:"user_code_locked_until" json:"-"`
	Status              string     `db:"status" json:"status"`
	CreatedAt           time.Time  `db:"created_at" json:"created_at"`
}

// HasUserCode reports whether the user's requests must carry a user_code.
func (u User) HasUserCode() bool { return u.UserCodeHash != nil }

// NewUser is what an admin creates.
type NewUser struct {
	Email, Name   string
	Roles, Groups []string
	UserCode      string // optional; then every request for this user must carry it
}

const userColumns = `id, email, name, roles, groups, user_code_hash, user_code_failures, user_code_locked_until, status, created_at`

// prefixedUserColumns are userColumns of the users aliased u.
const prefixedUserColumns = `u.id, u.email, u.name, u.roles, u.groups, u.user_code_hash, u.user_code_failures, u.user_code_locked_until, u.status, u.created_at`

const createUserSQL = `
INSERT INTO users (id, email, name, roles, groups, user_code_hash)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING ` + userColumns

// CreateUser creates a user. Emails are unique, compared case-insensitively.
func (s *Store) CreateUser(ctx context.Context, n NewUser) (User, error) {
	addr, err := mail.ParseAddress(n.Email)
	if err != nil || addr.Address != strings.TrimSpace(n.Email) {
		return User{}, fmt.Errorf("%w: %q is not an email address", ErrInvalidInput, n.Email)
	}
	var codeHash *string
	if n.UserCode != "" {
		if len(n.UserCode) < 4 || len(n.UserCode) > 64 {
			return User{}, fmt.Errorf("%w: a user code has 4 to 64 characters", ErrInvalidInput)
		}
		h := HashUserCode(n.UserCode)
		codeHash = &h
	}
	var u User
	err = s.change(ctx, func(t *Tx) error {
		err := t.QueryRowxContext(ctx, createUserSQL, newID("usr_"), strings.ToLower(addr.Address), n.Name,
			pq.StringArray(sortedSet(n.Roles)), pq.StringArray(sortedSet(n.Groups)), codeHash).StructScan(&u)
		if err != nil {
			return err
		}
		// The user code is a secret: the event says only that there is one.
		t.record(Event{Kind: KindUserCreated, Actor: ActorCLI, UserID: &u.ID,
			Body: mustJSON(map[string]any{"after": u, "user_code": u.HasUserCode()})})
		return nil
	})
	if err != nil {
		return User{}, fmt.Errorf("approvals: create user: %w", translate(err))
	}
	return u, nil
}

const userByHintSQL = `SELECT ` + userColumns + ` FROM users WHERE id = $1 OR email = lower($1)`

// UserByHint finds a user by id or by email (a CIBA login_hint).
func (s *Store) UserByHint(ctx context.Context, hint string) (User, error) {
	var u User
	if err := s.db.GetContext(ctx, &u, userByHintSQL, hint); err != nil {
		return User{}, fmt.Errorf("approvals: user: %w", translate(err))
	}
	return u, nil
}

const userSQL = `SELECT ` + userColumns + ` FROM users WHERE id = $1`

// User returns the user with id.
func (s *Store) User(ctx context.Context, id string) (User, error) {
	var u User
	if err := s.db.GetContext(ctx, &u, userSQL, id); err != nil {
		return User{}, fmt.Errorf("approvals: user %s: %w", id, translate(err))
	}
	return u, nil
}

const usersSQL = `SELECT ` + userColumns + ` FROM users ORDER BY created_at, id`

// Users lists every user, oldest first.
func (s *Store) Users(ctx context.Context) ([]User, error) {
	var out []User
	if err := s.db.SelectContext(ctx, &out, usersSQL); err != nil {
		return nil, fmt.Errorf("approvals: users: %w", err)
	}
	return out, nil
}

const setUserStatusSQL = `
WITH before AS (SELECT id, status AS before_status FROM users WHERE id = $1 OR email = lower($1) FOR UPDATE)
UPDATE users u SET status = $2, updated_at = now() FROM before WHERE u.id = before.id
RETURNING u.id, before_status`

// SetUserStatus suspends or reactivates a user (by id or email). A suspended
// user's requests yield no token, and the tokens already issued for them are
// revoked in the same change.
func (s *Store) SetUserStatus(ctx context.Context, idOrEmail, status string) error {
	err := s.change(ctx, func(t *Tx) error {
		var got struct {
			ID     string `db:"id"`
			Before string `db:"before_status"`
		}
		if err := t.GetContext(ctx, &got, setUserStatusSQL, idOrEmail, status); err != nil {
			return err
		}
		kind := KindUserResumed
		if status == "suspended" {
			kind = KindUserSuspended
			if err := revokeTokensOf(ctx, t, "user", got.ID, ActorCLI, "user suspended"); err != nil {
				return err
			}
		}
		t.record(Event{Kind: kind, Actor: ActorCLI, UserID: &got.ID,
			Body: mustJSON(map[string]any{"before": map[string]string{"status": got.Before}, "after": map[string]string{"status": status}})})
		return nil
	})
	if err != nil {
		return fmt.Errorf("approvals: set status of user %q: %w", idOrEmail, translate(err))
	}
	return nil
}

func sortedSet(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Limits on guessing a user code.
const (
	userCodeMaxFailures = 5
	userCodeLockout     = 15 * time.Minute
)

// reserveUserCodeSQL counts an attempt as wrong before it is checked, in one
// guarded statement: concurrent attempts queue on the row, and once five are
// counted the code is locked and the rest match no row, so a burst of
// guesses gets no more argon2id evaluations than the lockout allows. After a
// lock runs out, the count stays: the next wrong code locks again at once.
const reserveUserCodeSQL = `
UPDATE users SET user_code_failures = user_code_failures + 1,
	user_code_locked_until = CASE WHEN user_code_failures + 1 >= $2 THEN now() + make_interval(secs => $3) END
WHERE id = $1 AND (user_code_locked_until IS NULL OR user_code_locked_until <= now())
RETURNING user_code_failures`

// reserveUserCodeAttempt counts one user code attempt as wrong, unless the
// code is locked (the database's clock); it reports whether the attempt may
// be checked, and how many wrong attempts are counted with it.
// userCodeMatched takes the count back.
func (s *Store) reserveUserCodeAttempt(ctx context.Context, userID string) (bool, int, error) {
	var failures int
	err := s.db.GetContext(ctx, &failures, reserveUserCodeSQL, userID, userCodeMaxFailures, userCodeLockout.Seconds())
	if errors.Is(translate(err), ErrNotFound) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("approvals: user code attempt: %w", err)
	}
	return true, failures, nil
}

// userCodeLocked records that a wrong user code locked the user's code. The
// reservation set the lock before the code was checked (so that a burst
// gets no more checks than the limit); it stands only once the attempt is
// known to be wrong, and this event says so then.
func (s *Store) userCodeLocked(ctx context.Context, userID, agentID string, failures int) error {
	return s.change(ctx, func(t *Tx) error {
		t.record(Event{Kind: KindUserCodeLocked, Actor: ActorAgent(agentID), UserID: ptr(userID), AgentID: ptr(agentID),
			Body: mustJSON(map[string]any{"failures": failures, "locked_for_seconds": int(userCodeLockout.Seconds())})})
		return nil
	})
}

// userCodeMatched clears the count of wrong user codes (and so the lock the
// matching attempt's own reservation may have set): five wrong in a row lock.
func (s *Store) userCodeMatched(ctx context.Context, userID string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE users SET user_code_failures = 0, user_code_locked_until = NULL WHERE id = $1`, userID)
	if err != nil {
		return fmt.Errorf("approvals: user code success: %w", err)
	}
	return nil
}

// checkUserCode checks a user code against the user's argon2id hash. Every
// attempt is counted as wrong before it is hashed and taken back when it
// matches, so five wrong codes lock the code even when they arrive at once;
// the memory-hard hash runs at most argonSlots at a time, so guessing cannot
// exhaust memory.
func (s *Service) checkUserCode(ctx context.Context, u User, agentID, code string) error {
	reserved, failures, err := s.store.reserveUserCodeAttempt(ctx, u.ID)
	if err != nil {
		return err
	}
	if !reserved {
		return refuse(CodeInvalidUserCode, "too many wrong user codes; the code is locked for a while")
	}
	select {
	case s.argon <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	ok, err := userCodeMatches(*u.UserCodeHash, code)
	<-s.argon
	if err != nil {
		return err
	}
	if !ok {
		if failures >= userCodeMaxFailures {
			if err := s.store.userCodeLocked(ctx, u.ID, agentID, failures); err != nil {
				return err
			}
		}
		return refuse(CodeInvalidUserCode, "the user_code is not valid")
	}
	return s.store.userCodeMatched(ctx, u.ID)
}

// argonSlots bounds concurrent argon2id hashes (64 MiB each).
const argonSlots = 2

// userCodeAlphabet is Crockford's base32: no I, L, O or U, so a code read
// aloud or copied by hand survives.
const userCodeAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewUserCode gives user userID a new random user code (CIBA §7.1: the
// secret a person hands to the agents allowed to ask for them), stores its
// argon2id hash and returns the code, which nobody can read back later. The
// old code stops working at once, and its failure count starts again.
func (s *Store) NewUserCode(ctx context.Context, userID string) (string, error) {
	raw := make([]byte, 10)
	_, _ = rand.Read(raw) // never fails (crypto/rand)
	var b strings.Builder
	for i, c := range raw {
		if i == 5 {
			b.WriteByte('-')
		}
		b.WriteByte(userCodeAlphabet[int(c)%len(userCodeAlphabet)])
	}
	code := b.String()
	err := s.change(ctx, func(t *Tx) error {
		res, err := t.ExecContext(ctx, `UPDATE users SET user_code_hash = $2, user_code_failures = 0, user_code_locked_until = NULL
			WHERE id = $1 AND status = 'active'`, userID, HashUserCode(code))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotFound
		}
		t.record(Event{Kind: KindUserCodeChanged, Actor: ActorUser(userID), UserID: &userID})
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("approvals: new user code: %w", translate(err))
	}
	return code, nil
}

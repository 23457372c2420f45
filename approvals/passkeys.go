package approvals

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"
)

// ErrCloneWarning: the passkey's signature counter did not grow (WebAuthn
// L3 §7.2 step 21), so a copy of it may exist. It is refused from then on.
// ErrLastPasskey: a user's last passkey is not removed (they could not sign
// in again).
var ErrLastPasskey = fmt.Errorf("%w: it is the user's last passkey", ErrConflict)

var ErrCloneWarning = errors.New("approvals: the passkey's signature counter went backwards; it is refused")

// Passkey is a user's WebAuthn credential (a discoverable one, made with
// user verification).
type Passkey struct {
	ID              string         `db:"id"`
	UserID          string         `db:"user_id"`
	CredentialID    []byte         `db:"credential_id"`
	PublicKey       []byte         `db:"public_key"` // COSE
	AAGUID          []byte         `db:"aaguid"`
	SignCount       uint32         `db:"sign_count"`
	Transports      pq.StringArray `db:"transports"`
	BackupEligible  bool           `db:"backup_eligible"`
	BackupState     bool           `db:"backup_state"`
	UserVerified    bool           `db:"user_verified"`
	AttestationType string         `db:"attestation_type"`
	Name            string         `db:"name"`
	CloneWarning    bool           `db:"clone_warning"`
	CreatedAt       time.Time      `db:"created_at"`
	LastUsedAt      *time.Time     `db:"last_used_at"`
}

const passkeyColumns = `id, user_id, credential_id, public_key, aaguid, sign_count, transports, backup_eligible,
	backup_state, user_verified, attestation_type, name, clone_warning, created_at, last_used_at`

const insertPasskeySQL = `
INSERT INTO passkeys (user_id, credential_id, public_key, aaguid, sign_count, transports, backup_eligible,
	backup_state, user_verified, attestation_type, name)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING ` + passkeyColumns

func addPasskey(ctx context.Context, t *Tx, p Passkey) (Passkey, error) {
	var out Passkey
	err := t.GetContext(ctx, &out, insertPasskeySQL, p.UserID, p.CredentialID, p.PublicKey, p.AAGUID, int64(p.SignCount),
		pq.StringArray(nonNil(p.Transports)), p.BackupEligible, p.BackupState, p.UserVerified, p.AttestationType, p.Name)
	if err != nil {
		return Passkey{}, fmt.Errorf("approvals: add passkey: %w", translate(err))
	}
	t.record(Event{Kind: KindPasskeyAdded, Actor: ActorUser(p.UserID), UserID: &out.UserID,
		Body: mustJSON(map[string]any{"passkey": out.ID, "name": out.Name, "backup_eligible": out.BackupEligible})})
	return out, nil
}

// AddPasskey stores p for its user; ErrConflict when its credential id is
// registered already.
func (s *Store) AddPasskey(ctx context.Context, p Passkey) (Passkey, error) {
	var out Passkey
	err := s.change(ctx, func(t *Tx) error {
		var err error
		out, err = addPasskey(ctx, t, p)
		return err
	})
	return out, err
}

// EnrollPasskey spends enrollment link token and stores p for its user in
// one change: the link is spent only if the passkey is stored.
func (s *Store) EnrollPasskey(ctx context.Context, token string, p Passkey) (User, Passkey, error) {
	var u User
	var out Passkey
	err := s.change(ctx, func(t *Tx) error {
		var err error
		if u, err = consumeLink(ctx, t, LinkEnroll, token); err != nil {
			return err
		}
		p.UserID = u.ID
		out, err = addPasskey(ctx, t, p)
		return err
	})
	return u, out, err
}

// Passkeys lists user userID's passkeys, oldest first.
func (s *Store) Passkeys(ctx context.Context, userID string) ([]Passkey, error) {
	var out []Passkey
	if err := s.db.SelectContext(ctx, &out, `SELECT `+passkeyColumns+` FROM passkeys WHERE user_id = $1 ORDER BY created_at, id`, userID); err != nil {
		return nil, fmt.Errorf("approvals: passkeys: %w", err)
	}
	return out, nil
}

// PasskeyByCredentialID returns the passkey with WebAuthn credential id id.
func (s *Store) PasskeyByCredentialID(ctx context.Context, id []byte) (Passkey, error) {
	var p Passkey
	if err := s.db.GetContext(ctx, &p, `SELECT `+passkeyColumns+` FROM passkeys WHERE credential_id = $1`, id); err != nil {
		return Passkey{}, fmt.Errorf("approvals: passkey: %w", translate(err))
	}
	return p, nil
}

// RenamePasskey names user userID's passkey id (1 to 64 characters).
func (s *Store) RenamePasskey(ctx context.Context, userID, id, name string) error {
	if _, ok := parseUUID(id); !ok {
		return fmt.Errorf("approvals: rename passkey: %w", ErrNotFound)
	}
	name = strings.TrimSpace(name)
	if err := displayName("passkey", name); err != nil {
		return err
	}
	return s.change(ctx, func(t *Tx) error {
		res, err := t.ExecContext(ctx, `UPDATE passkeys SET name = $3 WHERE id = $1 AND user_id = $2`, id, userID, name)
		if err != nil {
			return fmt.Errorf("approvals: rename passkey: %w", translate(err))
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("approvals: rename passkey: %w", ErrNotFound)
		}
		t.record(Event{Kind: KindPasskeyRenamed, Actor: ActorUser(userID), UserID: &userID,
			Body: mustJSON(map[string]any{"passkey": id, "name": name})})
		return nil
	})
}

const removePasskeySQL = `
DELETE FROM passkeys WHERE id = $1 AND user_id = $2
	AND (SELECT count(*) FROM passkeys WHERE user_id = $2) > 1
RETURNING id`

// RemovePasskey deletes user userID's passkey id. The last one is kept
// (ErrConflict): without it the user could not sign in again.
func (s *Store) RemovePasskey(ctx context.Context, userID, id string) error {
	if _, ok := parseUUID(id); !ok {
		return fmt.Errorf("approvals: remove passkey: %w", ErrNotFound)
	}
	return s.change(ctx, func(t *Tx) error {
		// The user's passkeys are locked first: two removals cannot both
		// see two passkeys and leave none.
		if _, err := t.ExecContext(ctx, `SELECT 1 FROM passkeys WHERE user_id = $1 FOR UPDATE`, userID); err != nil {
			return fmt.Errorf("approvals: remove passkey: %w", err)
		}
		var got string
		err := t.GetContext(ctx, &got, removePasskeySQL, id, userID)
		if errors.Is(translate(err), ErrNotFound) {
			var n int
			if err := t.GetContext(ctx, &n, `SELECT count(*) FROM passkeys WHERE id = $1 AND user_id = $2`, id, userID); err == nil && n == 1 {
				return fmt.Errorf("approvals: remove passkey: %w", ErrLastPasskey)
			}
			return fmt.Errorf("approvals: remove passkey: %w", ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("approvals: remove passkey: %w", err)
		}
		t.record(Event{Kind: KindPasskeyRemoved, Actor: ActorUser(userID), UserID: &userID, Body: mustJSON(map[string]any{"passkey": id})})
		return nil
	})
}

// usePasskeySQL records a verified assertion if its counter grew (or both
// counters are zero: the authenticator keeps none) and the passkey carries
// no clone warning; the condition is in the UPDATE, so of two uses with one
// counter only one passes.
const usePasskeySQL = `
UPDATE passkeys SET sign_count = $2, backup_state = $3, last_used_at = now()
WHERE id = $1 AND NOT clone_warning AND (($2 = 0 AND sign_count = 0) OR $2 > sign_count)
RETURNING id`

// UsePasskey records a verified assertion with signature counter
// signCount: ErrCloneWarning when the counter did not grow (the passkey is
// then marked and refused from then on) or the passkey was marked before.
func (s *Store) UsePasskey(ctx context.Context, id string, signCount uint32, backupState bool) error {
	var got string
	err := s.db.GetContext(ctx, &got, usePasskeySQL, id, int64(signCount), backupState)
	if err == nil {
		return nil
	}
	if !errors.Is(translate(err), ErrNotFound) {
		return fmt.Errorf("approvals: use passkey: %w", err)
	}
	// The mark is committed; then the use is refused.
	err = s.change(ctx, func(t *Tx) error {
		var userID string
		err := t.GetContext(ctx, &userID, `UPDATE passkeys SET clone_warning = true WHERE id = $1 RETURNING user_id`, id)
		if err != nil {
			return fmt.Errorf("approvals: use passkey: %w", translate(err))
		}
		t.record(Event{Kind: KindPasskeyCloneWarning, Actor: ActorServer, UserID: &userID,
			Body: mustJSON(map[string]any{"passkey": id, "sign_count": signCount})})
		return nil
	})
	if err != nil {
		return err
	}
	return fmt.Errorf("approvals: use passkey: %w", ErrCloneWarning)
}

package approvals

import (
	"context"
	"fmt"
	"time"
)

// ChallengeLifetime bounds a WebAuthn ceremony from its start to its end.
const ChallengeLifetime = 5 * time.Minute

// Challenge is a WebAuthn ceremony in progress, kept server-side until its
// end consumes it: Data is the relying party's session data (its challenge
// among it), Nonce a step-up's nonce.
type Challenge struct {
	ID        string    `db:"id"`
	Purpose   string    `db:"purpose"` // enroll, signin, add_passkey, step_up
	UserID    *string   `db:"user_id"`
	RequestID *string   `db:"request_id"`
	Data      []byte    `db:"data"`
	Nonce     []byte    `db:"nonce"`
	ExpiresAt time.Time `db:"expires_at"`
}

const challengeColumns = `id, purpose, user_id, request_id, data, nonce, expires_at`

// SaveChallenge stores c with a new id and its expiry.
func (s *Store) SaveChallenge(ctx context.Context, c Challenge) (Challenge, error) {
	var out Challenge
	err := s.db.GetContext(ctx, &out, `INSERT INTO webauthn_challenges (id, purpose, user_id, request_id, data, nonce, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7)) RETURNING `+challengeColumns,
		randomString(16), c.Purpose, c.UserID, c.RequestID, string(c.Data), c.Nonce, ChallengeLifetime.Seconds())
	if err != nil {
		return Challenge{}, fmt.Errorf("approvals: save challenge: %w", translate(err))
	}
	return out, nil
}

// TakeChallenge consumes ceremony id of purpose: once, before it expires;
// ErrNotFound otherwise.
func (s *Store) TakeChallenge(ctx context.Context, id, purpose string) (Challenge, error) {
	var out Challenge
	err := s.db.GetContext(ctx, &out, `DELETE FROM webauthn_challenges WHERE id = $1 AND purpose = $2 AND expires_at > now()
		RETURNING `+challengeColumns, id, purpose)
	if err != nil {
		return Challenge{}, fmt.Errorf("approvals: challenge: %w", translate(err))
	}
	return out, nil
}

package approvals

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// auditKeyPurpose derives the key that seals the audit checkpoint keys.
const auditKeyPurpose = "countersign audit_keys v1"

func auditKeyAAD(kid string) []byte { return []byte("audit_keys " + kid) }

// AuditKeyInfo describes an audit checkpoint key: its public half and
// whether it still signs.
type AuditKeyInfo struct {
	KID       string           `json:"kid"`
	Public    *jose.JSONWebKey `json:"public_jwk"`
	CreatedAt time.Time        `json:"created_at"`
	RetiredAt *time.Time       `json:"retired_at,omitempty"`
}

type auditKeyRow struct {
	KID       string     `db:"kid"`
	Public    []byte     `db:"public_jwk"`
	Sealed    []byte     `db:"private_sealed"`
	CreatedAt time.Time  `db:"created_at"`
	RetiredAt *time.Time `db:"retired_at"`
}

// newAuditKey makes a P-256 key and its row.
func (s *KeyStore) newAuditKey() (auditKeyRow, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return auditKeyRow{}, err
	}
	kid := randomString(16)
	pub, err := json.Marshal(jose.JSONWebKey{Key: &priv.PublicKey, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
	if err != nil {
		return auditKeyRow{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return auditKeyRow{}, err
	}
	sealed, err := seal(s.auditKey, der, auditKeyAAD(kid))
	if err != nil {
		return auditKeyRow{}, err
	}
	return auditKeyRow{KID: kid, Public: pub, Sealed: sealed}, nil
}

// openAuditKey opens a row's private half and checks that its public half
// is the published one: a row written without the KEK fails here.
func (s *KeyStore) openAuditKey(r auditKeyRow) (*ecdsa.PrivateKey, *jose.JSONWebKey, error) {
	der, err := open(s.auditKey, r.Sealed, auditKeyAAD(r.KID))
	if err != nil {
		return nil, nil, fmt.Errorf("approvals: audit key %s does not open under the KEK: %w", r.KID, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, nil, fmt.Errorf("approvals: audit key %s: %w", r.KID, err)
	}
	priv, ok := k.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, nil, fmt.Errorf("approvals: audit key %s is not a P-256 key", r.KID)
	}
	var pub jose.JSONWebKey
	if err := json.Unmarshal(r.Public, &pub); err != nil {
		return nil, nil, fmt.Errorf("approvals: audit key %s: public key: %w", r.KID, err)
	}
	pk, ok := pub.Key.(*ecdsa.PublicKey)
	if !ok || !pk.Equal(&priv.PublicKey) || pub.KeyID != r.KID || pub.Algorithm != string(jose.ES256) {
		return nil, nil, fmt.Errorf("approvals: audit key %s: the published public key is not the sealed key's", r.KID)
	}
	return priv, &pub, nil
}

const auditKeysSQL = `SELECT kid, public_jwk, private_sealed, created_at, retired_at FROM audit_keys ORDER BY created_at, kid`

// ForgedKeysError names audit_keys rows whose private half does not open
// under the KEK: written by someone without it. The keys that do open are
// returned beside it.
type ForgedKeysError struct {
	KIDs []string
	Errs []error
}

func (e *ForgedKeysError) Error() string {
	return fmt.Sprintf("approvals: audit keys not made with this KEK (written into the database by someone without it?): %s", strings.Join(e.KIDs, ", "))
}

// AuditKeys returns every audit checkpoint key, current and retired,
// oldest first, each checked against its sealed private half. Rows that
// fail the check are left out and named by a *ForgedKeysError, returned
// with the others.
func (s *KeyStore) AuditKeys(ctx context.Context) ([]AuditKeyInfo, error) {
	var rows []auditKeyRow
	if err := s.db.SelectContext(ctx, &rows, auditKeysSQL); err != nil {
		return nil, fmt.Errorf("approvals: audit keys: %w", err)
	}
	out := make([]AuditKeyInfo, 0, len(rows))
	var forged *ForgedKeysError
	for _, r := range rows {
		_, pub, err := s.openAuditKey(r)
		if err != nil {
			if forged == nil {
				forged = &ForgedKeysError{}
			}
			forged.KIDs, forged.Errs = append(forged.KIDs, r.KID), append(forged.Errs, err)
			continue
		}
		out = append(out, AuditKeyInfo{KID: r.KID, Public: pub, CreatedAt: r.CreatedAt, RetiredAt: r.RetiredAt})
	}
	if forged != nil {
		return out, forged
	}
	return out, nil
}

// AuditKeySet is AuditKeys as a JWK Set of public keys, oldest first: what
// checkpoints verify against, and what `countersign audit key` prints for
// offline verification. With a *ForgedKeysError it holds the keys that
// passed.
func (s *KeyStore) AuditKeySet(ctx context.Context) (*jose.JSONWebKeySet, error) {
	keys, err := s.AuditKeys(ctx)
	if keys == nil {
		return nil, err
	}
	set := &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, k := range keys {
		set.Keys = append(set.Keys, *k.Public)
	}
	return set, err
}

// auditSigner returns the current checkpoint key, making the first one
// when there is none (replicas racing: the unique index lets one win).
func (s *KeyStore) auditSigner(ctx context.Context) (string, *ecdsa.PrivateKey, error) {
	for range 2 {
		var r auditKeyRow
		err := s.db.GetContext(ctx, &r, `SELECT kid, public_jwk, private_sealed, created_at, retired_at FROM audit_keys WHERE retired_at IS NULL`)
		switch {
		case err == nil:
			priv, _, err := s.openAuditKey(r)
			return r.KID, priv, err
		case !errors.Is(err, sql.ErrNoRows):
			return "", nil, fmt.Errorf("approvals: audit key: %w", err)
		}
		nr, err := s.newAuditKey()
		if err != nil {
			return "", nil, err
		}
		if _, err := s.db.ExecContext(ctx, `INSERT INTO audit_keys (kid, public_jwk, private_sealed) VALUES ($1, $2, $3)
			ON CONFLICT ((true)) WHERE retired_at IS NULL DO NOTHING`, nr.KID, string(nr.Public), nr.Sealed); err != nil {
			return "", nil, fmt.Errorf("approvals: audit key: %w", err)
		}
	}
	return "", nil, errors.New("approvals: audit key: none current after creating one")
}

// RotateAuditKey makes a new checkpoint key current and retires the one
// before it, which stays published so that the checkpoints it signed keep
// verifying. It writes an audit event.
func (s *KeyStore) RotateAuditKey(ctx context.Context, actor string) (AuditKeyInfo, error) {
	nr, err := s.newAuditKey()
	if err != nil {
		return AuditKeyInfo{}, err
	}
	var info AuditKeyInfo
	err = inTx(ctx, s.db, nil, func(tx *Tx) error {
		var retired []string
		if err := tx.SelectContext(ctx, &retired, `UPDATE audit_keys SET retired_at = now() WHERE retired_at IS NULL RETURNING kid`); err != nil {
			return err
		}
		var created time.Time
		if err := tx.GetContext(ctx, &created, `INSERT INTO audit_keys (kid, public_jwk, private_sealed) VALUES ($1, $2, $3) RETURNING created_at`,
			nr.KID, string(nr.Public), nr.Sealed); err != nil {
			return err
		}
		_, pub, err := s.openAuditKey(nr)
		if err != nil {
			return err
		}
		info = AuditKeyInfo{KID: nr.KID, Public: pub, CreatedAt: created}
		tx.record(Event{Kind: KindAuditKeyRotated, Actor: actor, Subject: ptr("audit_key:" + nr.KID),
			Body: mustJSON(map[string]any{"before": map[string]any{"current": retired}, "after": map[string]any{"current": nr.KID}})})
		return nil
	})
	if err != nil {
		return AuditKeyInfo{}, fmt.Errorf("approvals: rotate audit key: %w", err)
	}
	return info, nil
}

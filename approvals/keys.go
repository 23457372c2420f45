package approvals

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/jmoiron/sqlx"
)

// keyringMaxAge is how long a Keyring is served from memory. A rotation on
// another replica is seen within it, or at once when a token names the new
// key (KeyStore.Verify).
const keyringMaxAge = 30 * time.Second

// sealPurpose derives the key that seals the private signing keys from the
// KEK, so that the KEK itself never encrypts anything.
const sealPurpose = "countersign signing_keys v1"

// Key statuses. Current keys sign; next, current and previous keys are
// published and verify; retired keys do neither, and their private half is
// erased. A next key becomes current at its activation time (PromoteDue).
const (
	KeyNext     = "next"
	KeyCurrent  = "current"
	KeyPrevious = "previous"
	KeyRetired  = "retired"
)

// KeyPublishDelay is how long a key prepared by Prepare is published before
// it signs: longer than a JWKS response may be cached (60 s, /jwks.json) plus
// keyringMaxAge, so that a resource server that verifies offline knows the
// key before the first token names it.
const KeyPublishDelay = 2 * time.Minute

// retireDelay is how long a current key must have been current before the
// key it replaced can be retired: every token the replaced key signed —
// including on replicas that saw the change up to keyringMaxAge late — has
// expired by then.
const retireDelay = DefaultTokenTTL + keyringMaxAge + 10*time.Second

// KeyStore keeps the token signing keys in PostgreSQL, sealed under the KEK.
//
// Each key has a random kid: base64url of 16 random bytes. The private half
// is stored as a JWK sealed with AES-256-GCM under DeriveKey(kek,
// "countersign signing_keys v1") with the kid as additional data. Every load
// opens every served key and checks it against its published public key, so
// someone who can write to the database but does not hold the KEK cannot add
// a key of their own, swap a public key, or bring a retired key back.
type KeyStore struct {
	db      *sqlx.DB
	sealKey []byte
	// vapidKey seals the Web Push private key; vapid caches the pair.
	vapidKey []byte
	vapidMu  sync.Mutex
	vapid    *VAPIDKeys
	// auditKey seals the audit checkpoint keys.
	auditKey []byte
	now      func() time.Time

	mu       sync.Mutex // guards the fields below and serialises loads
	ring     *Keyring   // nil: load on next use
	loadedAt time.Time
	gen      uint64 // counts loads, so concurrent reloads coalesce
}

// KeyInfo describes a signing key without its key material. ActivatesAt is
// when a next key becomes current, and when any other key became current.
type KeyInfo struct {
	KID         string    `json:"kid"`
	Alg         string    `json:"alg"`
	Status      string    `json:"status"`
	CreatedAt   time.Time `json:"created_at"`
	ActivatesAt time.Time `json:"activates_at"`
}

// NewKeyStore returns a KeyStore on db. kek is the 32-byte key-encryption key
// from configuration; now is the clock (nil: time.Now).
func NewKeyStore(db *sqlx.DB, kek []byte, now func() time.Time) (*KeyStore, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("approvals: key-encryption key is %d bytes, want %d", len(kek), KEKSize)
	}
	if now == nil {
		now = time.Now
	}
	return &KeyStore{db: db, sealKey: DeriveKey(kek, sealPurpose), vapidKey: DeriveKey(kek, vapidPurpose),
		auditKey: DeriveKey(kek, auditKeyPurpose), now: now}, nil
}

const hasCurrentKeySQL = `SELECT EXISTS (SELECT 1 FROM signing_keys WHERE alg = $1 AND status = 'current')`

// ensureKeySQL relies on the unique index signing_keys_one_current: when
// replicas start together, the first insert wins and the others do nothing.
const ensureKeySQL = `
INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, status, created_at, activates_at)
VALUES ($1, $2, $3, $4, 'current', $5, $5)
ON CONFLICT (alg) WHERE status = 'current' DO NOTHING`

// Ensure creates a current ES256 (P-256) and RS256 (RSA 2048) key when there
// is none. Several replicas may call it at once.
func (s *KeyStore) Ensure(ctx context.Context) error {
	for _, alg := range acceptedAlgs {
		var exists bool
		if err := s.db.GetContext(ctx, &exists, hasCurrentKeySQL, string(alg)); err != nil {
			return fmt.Errorf("approvals: ensure %s key: %w", alg, translate(err))
		}
		if exists {
			continue
		}
		k, err := s.newKey(alg)
		if err != nil {
			return err
		}
		created := false
		err = inTx(ctx, s.db, nil, func(t *Tx) error {
			res, err := t.ExecContext(ctx, ensureKeySQL, k.kid, string(alg), k.publicJWK, k.sealed, s.now())
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 1 {
				created = true
				t.record(keyEvent(KindKeyCreated, ActorServer, KeyInfo{KID: k.kid, Alg: string(alg), Status: "current"}))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("approvals: ensure %s key: %w", alg, translate(err))
		}
		if created {
			s.invalidate()
		}
	}
	return nil
}

// lockAlgSQL serialises rotations of one algorithm across replicas for the
// rest of the transaction.
const lockAlgSQL = `SELECT pg_advisory_xact_lock(hashtextextended('countersign signing_keys ' || $1, 0))`

const retirePreviousSQL = `
UPDATE signing_keys SET status = 'retired', private_sealed = ''::bytea
WHERE alg = $1 AND status = 'previous'`

const demoteCurrentSQL = `
UPDATE signing_keys SET status = 'previous', rotated_at = $2
WHERE alg = $1 AND status = 'current'`

const insertCurrentKeySQL = `
INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, status, created_at, activates_at)
VALUES ($1, $2, $3, $4, 'current', $5, $5)
RETURNING kid, alg, status, created_at, activates_at`

// Rotate makes a new current key for each algorithm at once, in one
// transaction per algorithm: the previous key is retired (its private half
// erased), the current key becomes previous and stays published, so tokens
// it signed keep verifying until the next rotation. Rotate no more often
// than the longest token lifetime. A resource server that cached the JWKS
// meets the new kid before it refetches; Prepare avoids that and is the
// routine way to rotate. It returns the new current keys.
func (s *KeyStore) Rotate(ctx context.Context) ([]KeyInfo, error) {
	return s.eachNewKey(ctx, "rotate", func(tx *sqlx.Tx, alg jose.SignatureAlgorithm, k newKey, now time.Time) (KeyInfo, error) {
		// A prepared key would retire the previous key too early: it goes.
		if err := moveKeys(ctx, tx, ActorCLI, "next", KindKeyRetired, retireNextSQL, string(alg)); err != nil {
			return KeyInfo{}, err
		}
		if err := moveKeys(ctx, tx, ActorCLI, "previous", KindKeyRetired, retirePreviousSQL, string(alg)); err != nil {
			return KeyInfo{}, err
		}
		if err := moveKeys(ctx, tx, ActorCLI, "current", KindKeyDemoted, demoteCurrentSQL, string(alg), now); err != nil {
			return KeyInfo{}, err
		}
		var info keyInfoRow
		err := tx.GetContext(ctx, &info, insertCurrentKeySQL, k.kid, string(alg), k.publicJWK, k.sealed, now)
		return KeyInfo(info), translate(err)
	})
}

const retireNextSQL = `
UPDATE signing_keys SET status = 'retired', private_sealed = ''::bytea
WHERE alg = $1 AND status = 'next'`

const currentActivationSQL = `SELECT activates_at FROM signing_keys WHERE alg = $1 AND status = 'current'`

const insertNextKeySQL = `
INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, status, created_at, activates_at)
VALUES ($1, $2, $3, $4, 'next', $5, $6)
RETURNING kid, alg, status, created_at, activates_at`

// Prepare publishes a new key for each algorithm that becomes current later
// (PromoteDue, run by every replica's sweeper): after KeyPublishDelay, and
// not before the current key has been current for retireDelay, since the
// promotion retires the previous key. A key prepared earlier and not yet
// current is replaced (and retired). It returns the prepared keys.
func (s *KeyStore) Prepare(ctx context.Context) ([]KeyInfo, error) {
	return s.eachNewKey(ctx, "prepare", func(tx *sqlx.Tx, alg jose.SignatureAlgorithm, k newKey, now time.Time) (KeyInfo, error) {
		if err := moveKeys(ctx, tx, ActorCLI, "next", KindKeyRetired, retireNextSQL, string(alg)); err != nil {
			return KeyInfo{}, err
		}
		activates := now.Add(KeyPublishDelay)
		var current time.Time
		switch err := tx.GetContext(ctx, &current, currentActivationSQL, string(alg)); {
		case err == nil:
			if t := current.Add(retireDelay); t.After(activates) {
				activates = t
			}
		case !errors.Is(err, sql.ErrNoRows):
			return KeyInfo{}, translate(err)
		}
		var info keyInfoRow
		err := tx.GetContext(ctx, &info, insertNextKeySQL, k.kid, string(alg), k.publicJWK, k.sealed, now, activates)
		return KeyInfo(info), translate(err)
	})
}

const anyNextDueSQL = `SELECT EXISTS (SELECT 1 FROM signing_keys WHERE status = 'next' AND activates_at <= $1)`

const nextDueSQL = `
SELECT kid FROM signing_keys WHERE alg = $1 AND status = 'next' AND activates_at <= $2
FOR UPDATE`

const promoteNextSQL = `
UPDATE signing_keys SET status = 'current' WHERE kid = $1
RETURNING kid, alg, status, created_at, activates_at`

// PromoteDue makes each next key whose activation time has come current:
// the previous key is retired and the current key becomes previous, in one
// transaction per algorithm. Every replica may run it; it returns the keys
// it made current.
func (s *KeyStore) PromoteDue(ctx context.Context) ([]KeyInfo, error) {
	var due bool
	if err := s.db.GetContext(ctx, &due, anyNextDueSQL, s.now()); err != nil {
		return nil, fmt.Errorf("approvals: promote keys: %w", translate(err))
	}
	if !due {
		return nil, nil
	}
	var out []KeyInfo
	for _, alg := range acceptedAlgs {
		var info keyInfoRow
		err := s.inAlgTx(ctx, alg, func(tx *sqlx.Tx, now time.Time) error {
			var kid string
			if err := tx.GetContext(ctx, &kid, nextDueSQL, string(alg), now); err != nil {
				return err // sql.ErrNoRows: nothing due, or another replica promoted it
			}
			if err := moveKeys(ctx, tx, ActorSweeper, "previous", KindKeyRetired, retirePreviousSQL, string(alg)); err != nil {
				return err
			}
			if err := moveKeys(ctx, tx, ActorSweeper, "current", KindKeyDemoted, demoteCurrentSQL, string(alg), now); err != nil {
				return err
			}
			if err := tx.GetContext(ctx, &info, promoteNextSQL, kid); err != nil {
				return translate(err)
			}
			return writeEvents(ctx, tx, []Event{keyEvent(KindKeyPromoted, ActorSweeper, KeyInfo(info))})
		})
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return out, fmt.Errorf("approvals: promote %s key: %w", alg, err)
		default:
			out = append(out, KeyInfo(info))
		}
	}
	if len(out) > 0 {
		s.invalidate()
	}
	return out, nil
}

// eachNewKey makes a new key for each algorithm and hands it to step, in a
// transaction holding the algorithm's lock; what names the step in errors.
func (s *KeyStore) eachNewKey(ctx context.Context, what string,
	step func(*sqlx.Tx, jose.SignatureAlgorithm, newKey, time.Time) (KeyInfo, error)) ([]KeyInfo, error) {
	defer s.invalidate()
	var out []KeyInfo
	for _, alg := range acceptedAlgs {
		// Generate outside the transaction: RSA key generation takes a while.
		k, err := s.newKey(alg)
		if err != nil {
			return out, err
		}
		var info KeyInfo
		err = s.inAlgTx(ctx, alg, func(tx *sqlx.Tx, now time.Time) error {
			var err error
			if info, err = step(tx, alg, k, now); err != nil {
				return err
			}
			return writeEvents(ctx, tx, []Event{keyEvent(KindKeyCreated, ActorCLI, info)})
		})
		if err != nil {
			return out, fmt.Errorf("approvals: %s %s key: %w", what, alg, err)
		}
		out = append(out, info)
	}
	return out, nil
}

// inAlgTx runs fn in a transaction that holds the lock serialising key
// changes of alg across replicas, and commits if fn succeeds.
func (s *KeyStore) inAlgTx(ctx context.Context, alg jose.SignatureAlgorithm, fn func(*sqlx.Tx, time.Time) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return translate(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, lockAlgSQL, string(alg)); err != nil {
		return translate(err)
	}
	if err := fn(tx, s.now()); err != nil {
		return err
	}
	return translate(tx.Commit())
}

// moveKeys runs q, an update of the status of the keys in status from,
// and records kind for each key it changed, with its statuses before and
// after.
func moveKeys(ctx context.Context, tx *sqlx.Tx, actor, from, kind, q string, args ...any) error {
	var moved []struct {
		KID    string `db:"kid"`
		Status string `db:"status"`
	}
	if err := tx.SelectContext(ctx, &moved, q+` RETURNING kid, status`, args...); err != nil {
		return translate(err)
	}
	events := make([]Event, 0, len(moved))
	for _, k := range moved {
		events = append(events, Event{Kind: kind, Actor: actor, Subject: ptr("key:" + k.KID),
			Body: mustJSON(map[string]any{"before": map[string]string{"status": from}, "after": map[string]string{"status": k.Status}})})
	}
	return writeEvents(ctx, tx, events)
}

// keyEvent is an event about signing key k: never its private half.
func keyEvent(kind, actor string, k KeyInfo) Event {
	return Event{Kind: kind, Actor: actor, Subject: ptr("key:" + k.KID),
		Body: mustJSON(map[string]any{"after": map[string]any{"alg": k.Alg, "status": k.Status, "activates_at": k.ActivatesAt}})}
}

const listKeysSQL = `
SELECT kid, alg, status, created_at, activates_at FROM signing_keys
ORDER BY created_at DESC, alg, kid`

// List returns every signing key, retired ones included, newest first.
func (s *KeyStore) List(ctx context.Context) ([]KeyInfo, error) { return listKeys(ctx, s.db) }

// SigningKeys is KeyStore.List for a process without the KEK: it reads no
// key material.
func (s *Store) SigningKeys(ctx context.Context) ([]KeyInfo, error) { return listKeys(ctx, s.db) }

func listKeys(ctx context.Context, db *sqlx.DB) ([]KeyInfo, error) {
	var rows []keyInfoRow
	if err := db.SelectContext(ctx, &rows, listKeysSQL); err != nil {
		return nil, fmt.Errorf("approvals: list signing keys: %w", translate(err))
	}
	out := make([]KeyInfo, len(rows))
	for i, r := range rows {
		out[i] = KeyInfo(r)
	}
	return out, nil
}

// Keyring returns the published keys (next, current and previous), loaded
// from the database at most keyringMaxAge ago.
func (s *KeyStore) Keyring(ctx context.Context) (*Keyring, error) {
	ring, _, err := s.keyring(ctx)
	return ring, err
}

// Verify is Keyring.Verify with the keys of the store. When the token names
// a key this replica has not loaded yet (rotated in on another replica), it
// reloads the keys once and tries again.
func (s *KeyStore) Verify(ctx context.Context, token, typ string, claims any) error {
	ring, gen, err := s.keyring(ctx)
	if err != nil {
		return err
	}
	err = ring.Verify(token, typ, claims)
	if !errors.Is(err, ErrUnknownKey) {
		return err
	}
	ring, err = s.reloadAfter(ctx, gen)
	if err != nil {
		return err
	}
	return ring.Verify(token, typ, claims)
}

// keyring returns the cached Keyring, loading it when missing or stale, and
// the generation it belongs to.
func (s *KeyStore) keyring(ctx context.Context) (*Keyring, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if age := s.now().Sub(s.loadedAt); s.ring != nil && age >= 0 && age < keyringMaxAge {
		return s.ring, s.gen, nil
	}
	if err := s.loadLocked(ctx); err != nil {
		return nil, 0, err
	}
	return s.ring, s.gen, nil
}

// reloadAfter returns a Keyring loaded after generation gen was handed out.
// The lock is held while loading, so a flood of tokens with unknown kids
// costs one query at a time, not one each.
func (s *KeyStore) reloadAfter(ctx context.Context, gen uint64) (*Keyring, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ring != nil && s.gen != gen {
		return s.ring, nil
	}
	if err := s.loadLocked(ctx); err != nil {
		return nil, err
	}
	return s.ring, nil
}

// invalidate makes the next use load the keys again.
func (s *KeyStore) invalidate() {
	s.mu.Lock()
	s.ring = nil
	s.mu.Unlock()
}

const loadKeysSQL = `
SELECT kid, alg, public_jwk, private_sealed, status FROM signing_keys
WHERE status IN ('next', 'current', 'previous')
ORDER BY alg, status, created_at DESC, kid`

func (s *KeyStore) loadLocked(ctx context.Context) error {
	var rows []keyRow
	if err := s.db.SelectContext(ctx, &rows, loadKeysSQL); err != nil {
		return fmt.Errorf("approvals: load signing keys: %w", translate(err))
	}
	ring, err := newKeyring(s.sealKey, rows)
	if err != nil {
		return err
	}
	s.ring, s.loadedAt = ring, s.now()
	s.gen++
	return nil
}

// keyRow is a row of signing_keys as loaded for a Keyring.
type keyRow struct {
	KID           string `db:"kid"`
	Alg           string `db:"alg"`
	PublicJWK     []byte `db:"public_jwk"`
	PrivateSealed []byte `db:"private_sealed"`
	Status        string `db:"status"`
}

// keyInfoRow is KeyInfo with the column names.
type keyInfoRow struct {
	KID         string    `db:"kid"`
	Alg         string    `db:"alg"`
	Status      string    `db:"status"`
	CreatedAt   time.Time `db:"created_at"`
	ActivatesAt time.Time `db:"activates_at"`
}

// newKeyring opens and checks every row. Any row that fails makes the whole
// load fail: a key that does not open under the KEK was not made by
// Countersign.
func newKeyring(sealKey []byte, rows []keyRow) (*Keyring, error) {
	ring := &Keyring{
		keys:    make(map[string]ringKey, len(rows)),
		current: make(map[jose.SignatureAlgorithm]ringKey, 2),
		private: make(map[string]crypto.Signer, 2),
	}
	for _, r := range rows {
		priv, err := openKey(sealKey, r)
		if err != nil {
			return nil, err
		}
		k := ringKey{kid: r.KID, alg: jose.SignatureAlgorithm(r.Alg), status: r.Status, public: priv.Public()}
		ring.keys[k.kid] = k
		if k.status == KeyCurrent {
			if _, dup := ring.current[k.alg]; dup {
				return nil, fmt.Errorf("approvals: two current %s signing keys", k.alg)
			}
			ring.current[k.alg] = k
			ring.private[k.kid] = priv
		}
		// RFC 7517 §4.2, §4.4, §4.5: use, alg and kid of each published key.
		ring.jwks = append(ring.jwks, jose.JSONWebKey{Key: k.public, KeyID: k.kid, Algorithm: r.Alg, Use: "sig"})
	}
	return ring, nil
}

// openKey unseals the private key of r and checks that it is a key of r's
// algorithm whose public half is r's public_jwk.
func openKey(sealKey []byte, r keyRow) (crypto.Signer, error) {
	plain, err := open(sealKey, r.PrivateSealed, []byte(r.KID))
	if err != nil {
		return nil, fmt.Errorf("approvals: signing key %s does not open under the KEK (other KEK, moved or tampered)", r.KID)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(plain); err != nil {
		return nil, fmt.Errorf("approvals: signing key %s: private JWK: %w", r.KID, err)
	}
	if jwk.KeyID != r.KID || jwk.Algorithm != r.Alg {
		return nil, fmt.Errorf("approvals: signing key %s: sealed kid/alg %s/%s do not match the row", r.KID, jwk.KeyID, jwk.Algorithm)
	}
	priv, ok := jwk.Key.(crypto.Signer)
	if !ok || !keyFitsAlg(priv, jose.SignatureAlgorithm(r.Alg)) {
		return nil, fmt.Errorf("approvals: signing key %s: not a private %s key", r.KID, r.Alg)
	}
	var pub jose.JSONWebKey
	if err := pub.UnmarshalJSON(r.PublicJWK); err != nil {
		return nil, fmt.Errorf("approvals: signing key %s: public JWK: %w", r.KID, err)
	}
	eq, ok := priv.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !pub.IsPublic() || pub.KeyID != r.KID || !ok || !eq.Equal(pub.Key) {
		return nil, fmt.Errorf("approvals: signing key %s: public JWK does not match the sealed private key", r.KID)
	}
	return priv, nil
}

// keyFitsAlg reports whether priv is a key for alg: P-256 for ES256 (RFC
// 7518 §3.4), RSA of at least 2048 bits for RS256 (RFC 7518 §3.3).
func keyFitsAlg(priv crypto.Signer, alg jose.SignatureAlgorithm) bool {
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		return alg == jose.ES256 && k.Curve == elliptic.P256()
	case *rsa.PrivateKey:
		return alg == jose.RS256 && k.N.BitLen() >= 2048
	}
	return false
}

// newKey is a freshly generated key, ready to insert.
type newKey struct {
	kid       string
	publicJWK string // JSON, for the jsonb column
	sealed    []byte
}

func (s *KeyStore) newKey(alg jose.SignatureAlgorithm) (newKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return newKey{}, fmt.Errorf("approvals: no signing keys for alg %s", alg)
	}
	if err != nil {
		return newKey{}, fmt.Errorf("approvals: generate %s key: %w", alg, err)
	}
	kid := randomString(16)
	jwk := jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(alg), Use: "sig"}
	private, err := jwk.MarshalJSON()
	if err != nil {
		return newKey{}, fmt.Errorf("approvals: encode %s key: %w", alg, err)
	}
	public, err := jwk.Public().MarshalJSON()
	if err != nil {
		return newKey{}, fmt.Errorf("approvals: encode %s key: %w", alg, err)
	}
	sealed, err := seal(s.sealKey, private, []byte(kid))
	if err != nil {
		return newKey{}, err
	}
	return newKey{kid: kid, publicJWK: string(public), sealed: sealed}, nil
}

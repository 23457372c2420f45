package approvals

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/internal/pgtest"
)

// keysClock is a settable clock shared by the KeyStores of one test.
type keysClock struct {
	mu sync.Mutex
	t  time.Time
}

func newKeysClock() *keysClock {
	return &keysClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *keysClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *keysClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newKeysForTest returns a KeyStore on db with the test KEK and clock.
func newKeysForTest(t *testing.T, db *sqlx.DB, clock *keysClock) *KeyStore {
	t.Helper()
	ks, err := NewKeyStore(db, testKEK(7), clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// ensuredKeys returns a KeyStore on a fresh database with its keys made.
func ensuredKeys(t *testing.T) (*KeyStore, *sqlx.DB, *keysClock) {
	t.Helper()
	db := pgtest.New(t)
	clock := newKeysClock()
	ks := newKeysForTest(t, db, clock)
	if err := ks.Ensure(context.Background()); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return ks, db, clock
}

// byStatus groups List by status and alg.
func byStatus(t *testing.T, ks *KeyStore) map[string]map[string][]string {
	t.Helper()
	infos, err := ks.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	out := map[string]map[string][]string{}
	for _, k := range infos {
		if out[k.Status] == nil {
			out[k.Status] = map[string][]string{}
		}
		out[k.Status][k.Alg] = append(out[k.Status][k.Alg], k.KID)
	}
	return out
}

func TestNewKeyStoreKEKSize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := NewKeyStore(nil, make([]byte, n), nil); err == nil {
			t.Errorf("NewKeyStore with a %d-byte KEK succeeded", n)
		}
	}
	if _, err := NewKeyStore(nil, make([]byte, 32), nil); err != nil {
		t.Errorf("NewKeyStore with a 32-byte KEK: %v", err)
	}
}

func TestKeyStoreEnsureIdempotent(t *testing.T) {
	ks, _, _ := ensuredKeys(t)
	ctx := context.Background()
	first := byStatus(t, ks)
	for i := range 3 {
		if err := ks.Ensure(ctx); err != nil {
			t.Fatalf("Ensure #%d: %v", i+2, err)
		}
	}
	after := byStatus(t, ks)
	for _, alg := range []string{"ES256", "RS256"} {
		if got := after[KeyCurrent][alg]; len(got) != 1 || got[0] != first[KeyCurrent][alg][0] {
			t.Errorf("%s current keys = %v, want %v", alg, got, first[KeyCurrent][alg])
		}
	}
	if len(after) != 1 {
		t.Errorf("statuses = %v, want only current", after)
	}
}

func TestKeyStoreEnsureConcurrent(t *testing.T) {
	db := pgtest.New(t)
	clock := newKeysClock()
	ctx := context.Background()

	// Ten replicas starting at once, each with its own KeyStore.
	const replicas = 10
	errs := make(chan error, replicas)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range replicas {
		ks := newKeysForTest(t, db, clock)
		wg.Go(func() {
			<-start
			errs <- ks.Ensure(ctx)
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Ensure: %v", err)
		}
	}

	var rows []struct {
		Alg    string `db:"alg"`
		Status string `db:"status"`
	}
	if err := db.SelectContext(ctx, &rows, `SELECT alg, status FROM signing_keys ORDER BY alg`); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Alg != "ES256" || rows[1].Alg != "RS256" ||
		rows[0].Status != KeyCurrent || rows[1].Status != KeyCurrent {
		t.Fatalf("signing_keys = %+v, want one current ES256 and one current RS256", rows)
	}
	// Every replica serves the same keys.
	ring, err := newKeysForTest(t, db, clock).Keyring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ring.JWKS().Keys); n != 2 {
		t.Fatalf("JWKS has %d keys, want 2", n)
	}
}

func TestKeyStorePrivateKeysSealed(t *testing.T) {
	ks, db, _ := ensuredKeys(t)
	var rows []keyRow
	if err := db.SelectContext(context.Background(), &rows,
		`SELECT kid, alg, public_jwk, private_sealed, status FROM signing_keys`); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	for _, r := range rows {
		t.Run(r.Alg, func(t *testing.T) {
			plain, err := open(ks.sealKey, r.PrivateSealed, []byte(r.KID))
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			var priv struct {
				D string `json:"d"`
			}
			if err := json.Unmarshal(plain, &priv); err != nil || priv.D == "" {
				t.Fatalf("sealed value is not a private JWK: %v", err)
			}
			d, err := base64.RawURLEncoding.DecodeString(priv.D)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(r.PrivateSealed, []byte(priv.D)) || bytes.Contains(r.PrivateSealed, d) {
				t.Error("private_sealed contains the private key")
			}
			if bytes.Contains(r.PrivateSealed, []byte(`"kty"`)) {
				t.Error("private_sealed contains plaintext JSON")
			}
			var pub map[string]any
			if err := json.Unmarshal(r.PublicJWK, &pub); err != nil {
				t.Fatal(err)
			}
			for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
				if _, ok := pub[private]; ok {
					t.Errorf("public_jwk has private member %q", private)
				}
			}
			if pub["kid"] != r.KID || pub["alg"] != r.Alg || pub["use"] != "sig" {
				t.Errorf("public_jwk = %v, want kid %s, alg %s, use sig", pub, r.KID, r.Alg)
			}
			// The kid is 16 random bytes, base64url.
			if b, err := base64.RawURLEncoding.DecodeString(r.KID); err != nil || len(b) != 16 {
				t.Errorf("kid %q is not base64url of 16 bytes", r.KID)
			}
		})
	}
}

func TestKeyStoreRotate(t *testing.T) {
	ks, db, _ := ensuredKeys(t)
	ctx := context.Background()
	algs := []jose.SignatureAlgorithm{jose.ES256, jose.RS256}

	signAll := func() map[jose.SignatureAlgorithm]string {
		t.Helper()
		ring, err := ks.Keyring(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[jose.SignatureAlgorithm]string{}
		for _, alg := range algs {
			tok, err := ring.Sign(alg, TypeAccessToken, testAccessClaims())
			if err != nil {
				t.Fatalf("Sign %s: %v", alg, err)
			}
			out[alg] = tok
		}
		return out
	}
	jwksKIDs := func() map[string]bool {
		t.Helper()
		ring, err := ks.Keyring(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, k := range ring.JWKS().Keys {
			out[k.KeyID] = true
		}
		return out
	}
	verify := func(tok string) error {
		var c AccessTokenClaims
		return ks.Verify(ctx, tok, TypeAccessToken, &c)
	}

	gen0 := byStatus(t, ks)
	tokens0 := signAll()

	// First rotation: the first keys become previous and stay valid.
	rotated, err := ks.Rotate(ctx)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	gen1 := byStatus(t, ks)
	if len(rotated) != 2 {
		t.Fatalf("Rotate returned %d keys, want 2", len(rotated))
	}
	for _, k := range rotated {
		if k.Status != KeyCurrent || gen1[KeyCurrent][k.Alg][0] != k.KID || k.CreatedAt.IsZero() {
			t.Errorf("Rotate returned %+v, current %s is %v", k, k.Alg, gen1[KeyCurrent][k.Alg])
		}
	}
	for _, alg := range []string{"ES256", "RS256"} {
		if got, want := gen1[KeyPrevious][alg], gen0[KeyCurrent][alg]; len(got) != 1 || got[0] != want[0] {
			t.Errorf("%s previous = %v, want %v", alg, got, want)
		}
		if gen1[KeyCurrent][alg][0] == gen0[KeyCurrent][alg][0] {
			t.Errorf("%s current key did not change", alg)
		}
	}
	if kids := jwksKIDs(); len(kids) != 4 {
		t.Errorf("JWKS after one rotation = %v, want 4 keys", kids)
	}
	for alg, tok := range tokens0 {
		if err := verify(tok); err != nil {
			t.Errorf("%s token of the previous key: %v", alg, err)
		}
	}
	var rotatedAt []time.Time
	if err := db.SelectContext(ctx, &rotatedAt, `SELECT rotated_at FROM signing_keys WHERE status = 'previous'`); err != nil {
		t.Fatal(err)
	}
	if len(rotatedAt) != 2 {
		t.Errorf("rotated_at set on %d previous keys, want 2", len(rotatedAt))
	}
	tokens1 := signAll()
	for alg, tok := range tokens1 {
		if err := verify(tok); err != nil {
			t.Errorf("%s token of the new key: %v", alg, err)
		}
	}

	// Second rotation: the first keys are retired.
	if _, err := ks.Rotate(ctx); err != nil {
		t.Fatalf("second Rotate: %v", err)
	}
	gen2 := byStatus(t, ks)
	kids := jwksKIDs()
	if len(kids) != 4 {
		t.Errorf("JWKS after two rotations = %v, want 4 keys", kids)
	}
	for _, alg := range []string{"ES256", "RS256"} {
		old := gen0[KeyCurrent][alg][0]
		if got := gen2[KeyRetired][alg]; len(got) != 1 || got[0] != old {
			t.Errorf("%s retired = %v, want [%s]", alg, got, old)
		}
		if kids[old] {
			t.Errorf("JWKS still lists retired key %s", old)
		}
		if got := gen2[KeyPrevious][alg]; len(got) != 1 || got[0] != gen1[KeyCurrent][alg][0] {
			t.Errorf("%s previous = %v, want %v", alg, got, gen1[KeyCurrent][alg])
		}
	}
	for alg, tok := range tokens0 {
		if err := verify(tok); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("%s token of a retired key: %v, want ErrUnknownKey", alg, err)
		}
	}
	for alg, tok := range tokens1 {
		if err := verify(tok); err != nil {
			t.Errorf("%s token of the previous key: %v", alg, err)
		}
	}
	// Retired keys lose their private half.
	var sealedLen []int
	if err := db.SelectContext(ctx, &sealedLen, `SELECT length(private_sealed) FROM signing_keys WHERE status = 'retired'`); err != nil {
		t.Fatal(err)
	}
	if len(sealedLen) != 2 || sealedLen[0] != 0 || sealedLen[1] != 0 {
		t.Errorf("retired private_sealed lengths = %v, want [0 0]", sealedLen)
	}
}

func TestKeyStoreRotateConcurrent(t *testing.T) {
	ks, db, clock := ensuredKeys(t)
	ctx := context.Background()
	const replicas = 8
	var wg sync.WaitGroup
	errs := make(chan error, replicas)
	start := make(chan struct{})
	for range replicas {
		other := newKeysForTest(t, db, clock)
		wg.Go(func() {
			<-start
			_, err := other.Rotate(ctx)
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Rotate: %v", err)
		}
	}
	got := byStatus(t, ks)
	for _, alg := range []string{"ES256", "RS256"} {
		if len(got[KeyCurrent][alg]) != 1 || len(got[KeyPrevious][alg]) != 1 || len(got[KeyRetired][alg]) != replicas-1 {
			t.Errorf("%s keys after %d rotations: %v", alg, replicas, got)
		}
	}
}

func TestKeyStoreReplicaSeesRotation(t *testing.T) {
	a, db, clock := ensuredKeys(t)
	b := newKeysForTest(t, db, clock)
	ctx := context.Background()

	stale, err := b.Keyring(ctx) // b caches the keys before the rotation
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	ringA, err := a.Keyring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []jose.SignatureAlgorithm{jose.ES256, jose.RS256} {
		t.Run(string(alg), func(t *testing.T) {
			want := testAccessClaims()
			tok, err := ringA.Sign(alg, TypeAccessToken, want)
			if err != nil {
				t.Fatal(err)
			}
			var got AccessTokenClaims
			if err := stale.Verify(tok, TypeAccessToken, &got); !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("stale keyring: %v, want ErrUnknownKey", err)
			}
			// The clock has not moved, so only reload-on-unknown-kid can help.
			if err := b.Verify(ctx, tok, TypeAccessToken, &got); err != nil {
				t.Fatalf("replica Verify: %v", err)
			}
			if got.JTI != want.JTI {
				t.Fatalf("jti = %q, want %q", got.JTI, want.JTI)
			}
		})
	}
	// A kid nobody has is still unknown after the reload.
	forged := rawJWS(t, ringA.private[ringA.current[jose.ES256].kid],
		map[string]string{"alg": "ES256", "kid": "no-such-kid", "typ": "at+jwt"}, []byte(`{}`))
	var c AccessTokenClaims
	if err := b.Verify(ctx, forged, TypeAccessToken, &c); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown kid: %v, want ErrUnknownKey", err)
	}
}

func TestKeyStoreCacheExpiry(t *testing.T) {
	a, db, clock := ensuredKeys(t)
	b := newKeysForTest(t, db, clock)
	ctx := context.Background()
	if _, err := b.Keyring(ctx); err != nil {
		t.Fatal(err)
	}
	rotated, err := a.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	has := func() bool {
		ring, err := b.Keyring(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ring.JWKS().Keys {
			if k.KeyID == rotated[0].KID {
				return true
			}
		}
		return false
	}
	clock.Advance(29 * time.Second)
	if has() {
		t.Fatal("keyring reloaded before 30 s")
	}
	clock.Advance(time.Second)
	if !has() {
		t.Fatal("keyring not reloaded after 30 s")
	}
}

func TestKeyStoreRejectsTamperedRows(t *testing.T) {
	tests := []struct {
		name   string
		tamper string // SQL run against one current, one previous and one retired key per alg
	}{
		{"public key swapped", `
			UPDATE signing_keys SET public_jwk = (SELECT public_jwk FROM signing_keys WHERE alg = 'ES256' AND status = 'previous')
			WHERE alg = 'ES256' AND status = 'current'`},
		{"sealed key moved to another row", `
			UPDATE signing_keys SET private_sealed = (SELECT private_sealed FROM signing_keys WHERE alg = 'RS256' AND status = 'previous')
			WHERE alg = 'RS256' AND status = 'current'`},
		{"kid changed", `UPDATE signing_keys SET kid = 'attacker' WHERE alg = 'ES256' AND status = 'previous'`},
		{"alg changed", `UPDATE signing_keys SET alg = 'RS256' WHERE alg = 'ES256' AND status = 'previous'`},
		{"retired key revived", `UPDATE signing_keys SET status = 'previous' WHERE alg = 'ES256' AND status = 'retired'`},
		{"sealed key truncated", `UPDATE signing_keys SET private_sealed = substring(private_sealed FROM 2) WHERE alg = 'ES256' AND status = 'current'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, db, clock := ensuredKeys(t)
			ctx := context.Background()
			for range 2 {
				if _, err := ks.Rotate(ctx); err != nil {
					t.Fatal(err)
				}
			}
			fresh := newKeysForTest(t, db, clock)
			if _, err := fresh.Keyring(ctx); err != nil {
				t.Fatalf("untampered keyring: %v", err)
			}
			if _, err := db.ExecContext(ctx, tt.tamper); err != nil {
				t.Fatalf("tamper: %v", err)
			}
			fresh = newKeysForTest(t, db, clock)
			if ring, err := fresh.Keyring(ctx); err == nil {
				t.Fatalf("tampered keyring loaded with %d keys", len(ring.JWKS().Keys))
			}
		})
	}

	t.Run("row sealed under another KEK", func(t *testing.T) {
		_, db, clock := ensuredKeys(t)
		ctx := context.Background()
		other, err := NewKeyStore(db, testKEK(8), clock.Now)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.Keyring(ctx); err == nil {
			t.Fatal("keyring sealed under another KEK loaded")
		}
		// Nor can a key sealed under another KEK be slipped in as previous.
		k, err := other.newKey(jose.ES256)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, status) VALUES ($1, 'ES256', $2, $3, 'previous')`,
			k.kid, k.publicJWK, k.sealed); err != nil {
			t.Fatal(err)
		}
		if _, err := newKeysForTest(t, db, clock).Keyring(ctx); err == nil {
			t.Fatal("keyring with a foreign key loaded")
		}
	})
}

func TestKeyStoreEmpty(t *testing.T) {
	db := pgtest.New(t)
	ks := newKeysForTest(t, db, newKeysClock())
	ring, err := ks.Keyring(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ring.JWKS().Keys); n != 0 {
		t.Fatalf("JWKS has %d keys before Ensure", n)
	}
	if _, err := ring.Sign(jose.ES256, TypeAccessToken, testAccessClaims()); err == nil {
		t.Fatal("Sign without keys succeeded")
	}
}

// TestKeyStorePrepare: a prepared key is published at once but signs only
// from its activation time, which leaves resource servers time to refetch
// the JWKS and the replaced key's tokens time to expire; the sweeper's
// PromoteDue makes it current then, on any replica.
func TestKeyStorePrepare(t *testing.T) {
	ks, db, clock := ensuredKeys(t)
	other := newKeysForTest(t, db, clock) // another replica
	ctx := context.Background()
	gen0 := byStatus(t, ks)
	created := clock.Now()

	prepared, err := ks.Prepare(ctx)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if len(prepared) != 2 {
		t.Fatalf("Prepare returned %d keys, want 2", len(prepared))
	}
	for _, k := range prepared {
		// The current keys were made just now, so the promotion waits until
		// their predecessors' tokens could have expired, not only for the
		// publication delay.
		if k.Status != KeyNext || !k.ActivatesAt.Equal(created.Add(retireDelay)) {
			t.Errorf("prepared %+v, want next active at %s", k, created.Add(retireDelay))
		}
	}
	ring, err := ks.Keyring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	published := map[string]bool{}
	for _, k := range ring.JWKS().Keys {
		published[k.KeyID] = true
	}
	for _, k := range prepared {
		if !published[k.KID] {
			t.Errorf("prepared key %s is not in the JWKS", k.KID)
		}
	}
	// Until then the current keys sign.
	for _, alg := range []jose.SignatureAlgorithm{jose.ES256, jose.RS256} {
		if got := ring.current[alg].kid; got != gen0[KeyCurrent][string(alg)][0] {
			t.Errorf("%s signs with %s before the activation time, want the current %s", alg, got, gen0[KeyCurrent][string(alg)][0])
		}
	}
	clock.Advance(retireDelay - time.Second)
	if keys, err := other.PromoteDue(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("PromoteDue before the activation time: %v, %v", keys, err)
	}

	clock.Advance(time.Second)
	promoted, err := other.PromoteDue(ctx)
	if err != nil || len(promoted) != 2 {
		t.Fatalf("PromoteDue at the activation time: %v, %v", promoted, err)
	}
	if again, err := ks.PromoteDue(ctx); err != nil || len(again) != 0 {
		t.Fatalf("second PromoteDue: %v, %v", again, err)
	}
	gen1 := byStatus(t, ks)
	for _, k := range prepared {
		if got := gen1[KeyCurrent][k.Alg]; len(got) != 1 || got[0] != k.KID {
			t.Errorf("%s current = %v, want the prepared %s", k.Alg, got, k.KID)
		}
		if got := gen1[KeyPrevious][k.Alg]; len(got) != 1 || got[0] != gen0[KeyCurrent][k.Alg][0] {
			t.Errorf("%s previous = %v, want %v", k.Alg, got, gen0[KeyCurrent][k.Alg])
		}
	}
	ring, err = other.Keyring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range prepared {
		if got := ring.current[jose.SignatureAlgorithm(k.Alg)].kid; got != k.KID {
			t.Errorf("%s signs with %s after the promotion, want %s", k.Alg, got, k.KID)
		}
	}

	// Preparing twice replaces the first prepared key; an old current key
	// waits only for the publication delay.
	clock.Advance(time.Hour)
	first, err := ks.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := ks.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gen2 := byStatus(t, ks)
	for i, k := range second {
		if !k.ActivatesAt.Equal(clock.Now().Add(KeyPublishDelay)) {
			t.Errorf("%s activates at %s, want %s", k.Alg, k.ActivatesAt, clock.Now().Add(KeyPublishDelay))
		}
		if got := gen2[KeyNext][k.Alg]; len(got) != 1 || got[0] != k.KID {
			t.Errorf("%s next = %v, want the second prepared %s", k.Alg, got, k.KID)
		}
		if !slices.Contains(gen2[KeyRetired][k.Alg], first[i].KID) {
			t.Errorf("%s: the replaced prepared key %s is not retired: %v", k.Alg, first[i].KID, gen2)
		}
	}

	// An immediate rotation drops the prepared keys.
	if _, err := ks.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if gen3 := byStatus(t, ks); len(gen3[KeyNext]) != 0 {
		t.Errorf("next keys after an immediate rotation: %v", gen3[KeyNext])
	}
}

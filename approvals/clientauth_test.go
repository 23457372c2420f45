package approvals

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/countersign/countersign/internal/egress"
	"github.com/countersign/countersign/internal/pgtest"
)

const assertionIssuer = "https://countersign.example.com"

// assertionFixture is a service with one private_key_jwt agent whose key
// (kid "k1") signs the assertions.
type assertionFixture struct {
	svc   *Service
	agent Agent
	key   *ecdsa.PrivateKey
	kid   string
}

func newAssertionFixture(t testing.TB, jwksURL string, key *ecdsa.PrivateKey) assertionFixture {
	t.Helper()
	db := pgtest.New(t)
	store := NewStore(db)
	keys, err := NewKeyStore(db, []byte("0123456789abcdef0123456789abcdef"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The JWKS servers of these tests are plain http on loopback, which only
	// dev mode's policy lets the client reach.
	svc := NewService(store, NewTypeStore(store), keys, Config{Issuer: assertionIssuer, KEK: []byte("0123456789abcdef0123456789abcdef"),
		HTTPClient: egress.Policy{DevLoopback: true}.Client(5*time.Second, nil, nil)})
	n := NewAgent{Name: "jwt agent", Domain: "jwt.example.com", Types: []string{"payment_initiation"}, AuthMethod: AuthPrivateKeyJWT}
	if jwksURL != "" {
		n.JWKSURL = jwksURL
	} else {
		n.JWKS = publicJWKS(t, key, "k1")
	}
	a, secret, err := store.CreateAgent(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		t.Fatal("a private_key_jwt agent got a client secret")
	}
	return assertionFixture{svc: svc, agent: a, key: key, kid: "k1"}
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func publicJWKS(t testing.TB, key *ecdsa.PrivateKey, kid string) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sign makes an assertion; edit changes the claims before signing.
func (f assertionFixture) sign(t *testing.T, kid string, key *ecdsa.PrivateKey, edit func(*jwt.Claims)) string {
	t.Helper()
	now := time.Now()
	c := jwt.Claims{Issuer: f.agent.ID, Subject: f.agent.ID, Audience: jwt.Audience{assertionIssuer + "/token"},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)), ID: randomString(12)}
	if edit != nil {
		edit(&c)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var assertionAudiences = []string{assertionIssuer, assertionIssuer + "/token"}

func TestPrivateKeyJWT(t *testing.T) {
	key := newECKey(t)
	f := newAssertionFixture(t, "", key)
	ctx := context.Background()
	other := newECKey(t)

	tests := []struct {
		name      string
		assertion func() string
		clientID  string
		ok        bool
	}{
		{"valid", func() string { return f.sign(t, "k1", key, nil) }, "", true},
		{"valid with client_id", func() string { return f.sign(t, "k1", key, nil) }, f.agent.ID, true},
		{"an hour's lifetime, as client libraries issue by default", func() string {
			return f.sign(t, "k1", key, func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(time.Now().Add(time.Hour + 5*time.Second)) })
		}, "", true},
		{"issuer as audience", func() string {
			return f.sign(t, "k1", key, func(c *jwt.Claims) { c.Audience = jwt.Audience{assertionIssuer} })
		}, "", true},
		{"wrong aud", func() string {
			return f.sign(t, "k1", key, func(c *jwt.Claims) { c.Audience = jwt.Audience{"https://other.example.com/token"} })
		}, "", false},
		{"expired", func() string {
			return f.sign(t, "k1", key, func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(time.Now().Add(-2 * time.Minute)) })
		}, "", false},
		{"no exp", func() string { return f.sign(t, "k1", key, func(c *jwt.Claims) { c.Expiry = nil }) }, "", false},
		{"exp too far", func() string {
			return f.sign(t, "k1", key, func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(time.Now().Add(2 * time.Hour)) })
		}, "", false},
		{"iat in the future", func() string {
			return f.sign(t, "k1", key, func(c *jwt.Claims) { c.IssuedAt = jwt.NewNumericDate(time.Now().Add(5 * time.Minute)) })
		}, "", false},
		{"no jti", func() string { return f.sign(t, "k1", key, func(c *jwt.Claims) { c.ID = "" }) }, "", false},
		{"sub is not the client", func() string { return f.sign(t, "k1", key, func(c *jwt.Claims) { c.Subject = "someone" }) }, "", false},
		{"client_id differs", func() string { return f.sign(t, "k1", key, nil) }, "agt_other", false},
		{"unknown kid", func() string { return f.sign(t, "k9", key, nil) }, "", false},
		{"signed by another key", func() string { return f.sign(t, "k1", other, nil) }, "", false},
		{"garbage", func() string { return "not.a.jwt" }, "", false},
		{"alg none", func() string {
			return "eyJhbGciOiJub25lIn0." + jsonB64(t, map[string]any{"iss": f.agent.ID, "sub": f.agent.ID, "aud": assertionIssuer, "exp": time.Now().Add(time.Minute).Unix(), "jti": "x"}) + "."
		}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := f.svc.AuthenticateAssertion(ctx, tc.clientID, tc.assertion(), assertionAudiences)
			if tc.ok {
				if err != nil || a.ID != f.agent.ID {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrAssertion) {
				t.Fatalf("err = %v, want ErrAssertion", err)
			}
		})
	}

	t.Run("replayed jti", func(t *testing.T) {
		a := f.sign(t, "k1", key, nil)
		if _, err := f.svc.AuthenticateAssertion(ctx, "", a, assertionAudiences); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.AuthenticateAssertion(ctx, "", a, assertionAudiences); !errors.Is(err, ErrAssertion) {
			t.Fatalf("replay accepted: %v", err)
		}
	})
}

func jsonB64(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestPrivateKeyJWTFromURL: keys from a JWKS URL are cached and refreshed when
// an assertion names a kid the cache does not know (a rotated-in key).
func TestPrivateKeyJWTFromURL(t *testing.T) {
	key1, key2 := newECKey(t), newECKey(t)
	var current atomic.Value
	current.Store(publicJWKS(t, key1, "k1"))
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(current.Load().([]byte))
	}))
	defer srv.Close()
	f := newAssertionFixture(t, srv.URL, key1)
	f.svc.clientKeys.minRefetch = 0 // the rotation below comes at once
	ctx := context.Background()

	for range 3 {
		if _, err := f.svc.AuthenticateAssertion(ctx, "", f.sign(t, "k1", key1, nil), assertionAudiences); err != nil {
			t.Fatal(err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("JWKS fetched %d times for 3 assertions, want 1 (cached)", n)
	}
	// The client rotates to k2; the first assertion with k2 triggers a refetch.
	current.Store(publicJWKS(t, key2, "k2"))
	if _, err := f.svc.AuthenticateAssertion(ctx, "", f.sign(t, "k2", key2, nil), assertionAudiences); err != nil {
		t.Fatalf("rotated-in key refused: %v", err)
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("JWKS fetched %d times, want 2", n)
	}
	// An unknown kid within the refetch wait does not fetch again.
	f.svc.clientKeys.minRefetch = time.Hour
	if _, err := f.svc.AuthenticateAssertion(ctx, "", f.sign(t, "k7", key2, nil), assertionAudiences); !errors.Is(err, ErrAssertion) {
		t.Fatalf("unknown kid accepted: %v", err)
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("JWKS fetched %d times after an unknown kid within the wait, want 2", n)
	}
}

// FuzzClientAssertion: arbitrary assertions never panic and are never
// accepted unless properly signed by the registered key.
func FuzzClientAssertion(f *testing.F) {
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.")
	f.Add("a.b.c")
	f.Add("")
	f.Add("eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.e30.AAAA")
	f.Add(`{"payload":"e30","signatures":[]}`)
	fx := newAssertionFixture(f, "", newECKey(f))
	f.Fuzz(func(t *testing.T, assertion string) {
		if _, err := fx.svc.AuthenticateAssertion(context.Background(), "", assertion, assertionAudiences); err == nil {
			t.Fatalf("accepted %q", assertion)
		}
	})
}

// TestPrivateKeyJWTFetchOnce: a burst of assertions from a client whose keys
// are not cached yet costs its JWKS endpoint one fetch.
func TestPrivateKeyJWTFetchOnce(t *testing.T) {
	key := newECKey(t)
	jwks := publicJWKS(t, key, "k1")
	var fetches atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		<-release // hold the fetch until every caller is waiting on it
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(jwks)
	}))
	defer srv.Close()
	f := newAssertionFixture(t, srv.URL, key)
	const n = 20
	assertions := make([]string, n)
	for i := range assertions {
		assertions[i] = f.sign(t, "k1", key, nil)
	}
	errs := make(chan error, n)
	for _, a := range assertions {
		go func() {
			_, err := f.svc.AuthenticateAssertion(context.Background(), "", a, assertionAudiences)
			errs <- err
		}()
	}
	for fetches.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the others join the fetch
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := fetches.Load(); got != 1 {
		t.Fatalf("JWKS fetched %d times for %d concurrent assertions, want 1", got, n)
	}
}

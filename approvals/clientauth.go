package approvals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/sync/singleflight"

	"github.com/countersign/countersign/internal/egress"
	"github.com/countersign/countersign/protocol"
)

// ClientAssertionType is the client_assertion_type of private_key_jwt
// (RFC 7523 §2.2).
const ClientAssertionType = protocol.ClientAssertionType

// Limits on client assertions.
const (
	assertionSkew = time.Minute // clock skew allowed on exp, nbf and iat
	// An assertion that lives longer is refused (RFC 7523 §3: "unreasonably
	// far in the future"). An hour is what common client libraries issue by
	// default; replayed jtis are remembered until exp.
	assertionMaxLifetime = time.Hour
	maxAssertionSize     = 16 << 10
	maxJWKSBytes         = 256 << 10
)

// assertionAlgs are the signature algorithms accepted from clients; never
// "none" and never a MAC, which a public JWKS cannot verify (RFC 8725 §3.1).
var assertionAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256, jose.PS256, jose.EdDSA}

// AssertionAlgs names the algorithms accepted in client assertions, for
// discovery.
func AssertionAlgs() []string {
	out := make([]string, len(assertionAlgs))
	for i, a := range assertionAlgs {
		out[i] = string(a)
	}
	return out
}

// ErrAssertion is wrapped by every refusal of a client assertion.
var ErrAssertion = errors.New("approvals: client assertion refused")

type assertionClaims struct {
	jwt.Claims
}

// AuthenticateAssertion authenticates an agent by a private_key_jwt client
// assertion (RFC 7523 §2.2, §3; OpenID Connect Core §9): iss and sub are the
// client_id, aud names one of audiences (the issuer or the endpoint's URL),
// exp is in the future (and not too far), iat and nbf are not, and the jti has
// not been seen before. clientID, when the request carried one, must match.
func (s *Service) AuthenticateAssertion(ctx context.Context, clientID, assertion string, audiences []string) (Agent, error) {
	if len(assertion) > maxAssertionSize {
		return Agent{}, fmt.Errorf("%w: too large", ErrAssertion)
	}
	tok, err := jwt.ParseSigned(assertion, assertionAlgs)
	if err != nil {
		return Agent{}, fmt.Errorf("%w: %v", ErrAssertion, err)
	}
	var unverified assertionClaims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return Agent{}, fmt.Errorf("%w: claims: %v", ErrAssertion, err)
	}
	if unverified.Issuer == "" || unverified.Issuer != unverified.Subject || (clientID != "" && clientID != unverified.Issuer) {
		return Agent{}, fmt.Errorf("%w: iss and sub must both be the client_id", ErrAssertion)
	}
	agent, err := s.agent(ctx, unverified.Issuer)
	if errors.Is(err, ErrNotFound) {
		return Agent{}, fmt.Errorf("%w: unknown client", ErrAssertion)
	}
	if err != nil {
		return Agent{}, err
	}
	if agent.AuthMethod != AuthPrivateKeyJWT {
		return Agent{}, fmt.Errorf("%w: the client does not use private_key_jwt", ErrAssertion)
	}
	keys, err := s.clientKeys.get(ctx, agent, tok.Headers[0].KeyID, false)
	if err != nil {
		return Agent{}, err
	}
	var claims assertionClaims
	if err := verifyWithAny(tok, keys, &claims); err != nil {
		// A key the client rotated in since we cached its JWKS URL.
		if agent.JWKSURL != nil {
			if keys, err = s.clientKeys.get(ctx, agent, tok.Headers[0].KeyID, true); err != nil {
				return Agent{}, err
			}
			err = verifyWithAny(tok, keys, &claims)
		}
		if err != nil {
			return Agent{}, fmt.Errorf("%w: %v", ErrAssertion, err)
		}
	}
	if err := checkAssertionClaims(claims, audiences, s.now()); err != nil {
		return Agent{}, err
	}
	// RFC 7523 §3 item 7: the jti is single use, for as long as the assertion lives.
	fresh, err := s.store.RecordAssertionJTI(ctx, agent.ID, claims.ID, claims.Expiry.Time().Add(assertionSkew))
	if err != nil {
		return Agent{}, err
	}
	if !fresh {
		return Agent{}, fmt.Errorf("%w: jti was already used", ErrAssertion)
	}
	return agent, nil
}

func checkAssertionClaims(c assertionClaims, audiences []string, now time.Time) error {
	if c.Expiry == nil {
		return fmt.Errorf("%w: exp is required", ErrAssertion)
	}
	if c.ID == "" || len(c.ID) > 256 {
		return fmt.Errorf("%w: jti is required", ErrAssertion)
	}
	if !slices.ContainsFunc(audiences, func(a string) bool { return c.Audience.Contains(a) }) {
		return fmt.Errorf("%w: aud must name this server", ErrAssertion)
	}
	exp := c.Expiry.Time()
	if !now.Before(exp.Add(assertionSkew)) {
		return fmt.Errorf("%w: expired", ErrAssertion)
	}
	if exp.Sub(now) > assertionMaxLifetime+assertionSkew {
		return fmt.Errorf("%w: exp is too far in the future", ErrAssertion)
	}
	if c.IssuedAt != nil && c.IssuedAt.Time().After(now.Add(assertionSkew)) {
		return fmt.Errorf("%w: iat is in the future", ErrAssertion)
	}
	if c.NotBefore != nil && c.NotBefore.Time().After(now.Add(assertionSkew)) {
		return fmt.Errorf("%w: not valid yet", ErrAssertion)
	}
	return nil
}

func verifyWithAny(tok *jwt.JSONWebToken, keys []jose.JSONWebKey, claims any) error {
	if len(keys) == 0 {
		return errors.New("no key of the client matches the assertion's kid")
	}
	var last error
	for _, k := range keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if err := tok.Claims(k.Key, claims); err != nil {
			last = err
			continue
		}
		return nil
	}
	if last == nil {
		last = errors.New("no signing key")
	}
	return fmt.Errorf("signature: %v", last)
}

const recordJTISQL = `
INSERT INTO client_assertion_jtis (client_id, jti, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (client_id, jti) DO NOTHING
RETURNING jti`

// RecordAssertionJTI records a client assertion's jti and reports whether it
// was new. login_hint_token jtis are kept here too, under "hint:" and their
// issuer. Expired entries are purged by PurgeAssertionJTIs.
func (s *Store) RecordAssertionJTI(ctx context.Context, clientID, jti string, expiresAt time.Time) (bool, error) {
	var got string
	err := s.db.GetContext(ctx, &got, recordJTISQL, clientID, jti, expiresAt)
	if errors.Is(translate(err), ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("approvals: record jti: %w", err)
	}
	return true, nil
}

// PurgeAssertionJTIs forgets jtis whose assertions (or login_hint_tokens)
// have expired.
func (s *Store) PurgeAssertionJTIs(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM client_assertion_jtis WHERE expires_at < now()`)
	if err != nil {
		return 0, fmt.Errorf("approvals: purge jtis: %w", err)
	}
	return res.RowsAffected()
}

// clientKeySource yields an agent's public keys: its inline JWKS, or its JWKS
// URL fetched and cached (refreshed on an unknown kid, at most every 10 s).
type clientKeySource struct {
	client *http.Client
	now    func() time.Time
	// minRefetch keeps a stream of unknown kids from making us fetch the
	// client's JWKS URL on every request.
	minRefetch time.Duration

	mu    sync.Mutex
	cache map[string]cachedJWKS // by agent id
	// flight makes concurrent fetches of one agent's JWKS URL one request:
	// a burst of assertions from a client that just rotated its key (or
	// after a restart) costs its JWKS endpoint one fetch, not one each.
	flight singleflight.Group
}

type cachedJWKS struct {
	url       string
	keys      jose.JSONWebKeySet
	fetchedAt time.Time
}

const jwksTTL = 5 * time.Minute

func (c *clientKeySource) get(ctx context.Context, a Agent, kid string, refresh bool) ([]jose.JSONWebKey, error) {
	var set jose.JSONWebKeySet
	switch {
	case len(a.JWKS) > 0:
		if err := json.Unmarshal(a.JWKS, &set); err != nil {
			return nil, fmt.Errorf("%w: the registered JWKS is malformed", ErrAssertion)
		}
	case a.JWKSURL != nil:
		var err error
		if set, err = c.fetch(ctx, a, kid, refresh); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: the client has no keys", ErrAssertion)
	}
	if kid == "" {
		return set.Keys, nil
	}
	return set.Key(kid), nil
}

func (c *clientKeySource) fetch(ctx context.Context, a Agent, kid string, refresh bool) (jose.JSONWebKeySet, error) {
	now := c.now()
	c.mu.Lock()
	cached, ok := c.cache[a.ID]
	c.mu.Unlock()
	fresh := ok && cached.url == *a.JWKSURL && now.Sub(cached.fetchedAt) < jwksTTL
	knowsKid := kid == "" || len(cached.keys.Key(kid)) > 0
	if fresh && (knowsKid || !refresh || now.Sub(cached.fetchedAt) < c.minRefetch) {
		return cached.keys, nil
	}
	url := *a.JWKSURL
	// The fetch is shared, so it must not end with the request that happened
	// to start it; the HTTP client's timeout bounds it.
	ch := c.flight.DoChan(a.ID+" "+url, func() (any, error) {
		return c.download(context.WithoutCancel(ctx), a.ID, url, now)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return jose.JSONWebKeySet{}, r.Err
		}
		return r.Val.(jose.JSONWebKeySet), nil
	case <-ctx.Done():
		return jose.JSONWebKeySet{}, fmt.Errorf("%w: fetching jwks_uri: %v", ErrAssertion, ctx.Err())
	}
}

// download fetches and caches the JWKS at url for the agent.
func (c *clientKeySource) download(ctx context.Context, agentID, url string, now time.Time) (jose.JSONWebKeySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("%w: jwks_uri: %v", ErrAssertion, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("%w: fetching jwks_uri: %v", ErrAssertion, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return jose.JSONWebKeySet{}, fmt.Errorf("%w: jwks_uri answered %d", ErrAssertion, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes))
	if err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("%w: reading jwks_uri: %v", ErrAssertion, err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("%w: jwks_uri is not a JWKS", ErrAssertion)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return jose.JSONWebKeySet{}, fmt.Errorf("%w: jwks_uri holds a private key", ErrAssertion)
		}
	}
	c.mu.Lock()
	c.cache[agentID] = cachedJWKS{url: url, keys: set, fetchedAt: now}
	c.mu.Unlock()
	return set, nil
}

// newClientKeySource fetches with client; nil means egress's client under
// the zero Policy (https to public addresses only, no redirects), since the
// URLs are chosen outside this server.
func newClientKeySource(client *http.Client, now func() time.Time) *clientKeySource {
	if client == nil {
		client = egress.Policy{}.Client(5*time.Second, nil, nil)
	}
	return &clientKeySource{
		client:     client,
		now:        now,
		minRefetch: 10 * time.Second,
		cache:      map[string]cachedJWKS{},
	}
}

// AuthenticateAgent checks a client_id and client secret (client_secret_basic
// or _post) in constant time against the registration (cached; see
// cache.go). Unknown client, wrong secret and wrong method all return
// ErrNotAllowed, so the answer does not tell which. A suspended agent
// authenticates; what it may do is decided by the guarded statements.
func (s *Service) AuthenticateAgent(ctx context.Context, id, secret, method string) (Agent, error) {
	a, err := s.agent(ctx, id)
	if err != nil {
		secretMatches(nil, secret) // same work as a known client
		if errors.Is(err, ErrNotFound) {
			return Agent{}, ErrNotAllowed
		}
		return Agent{}, err
	}
	if !secretMatches(a.SecretHash, secret) || a.AuthMethod != method {
		return Agent{}, ErrNotAllowed
	}
	return a, nil
}

// AuthenticateResourceServer checks a resource server's credentials in
// constant time; any failure is ErrNotAllowed.
func (s *Service) AuthenticateResourceServer(ctx context.Context, id, secret string) (ResourceServer, error) {
	all, err := s.resourceServers(ctx)
	if err != nil {
		return ResourceServer{}, err
	}
	i := slices.IndexFunc(all, func(r ResourceServer) bool { return r.ID == id })
	if i < 0 {
		secretMatches(nil, secret)
		return ResourceServer{}, ErrNotAllowed
	}
	if r := all[i]; secretMatches(r.SecretHash, secret) && r.Status == "active" {
		return r, nil
	}
	return ResourceServer{}, ErrNotAllowed
}

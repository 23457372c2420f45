package approvals

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/approvals/policy"
	"github.com/countersign/countersign/rar"
)

// Cache lifetimes. Caches only save reads: every guard that matters is in
// SQL, so a stale entry can delay a change's effect but never let through
// what the database refuses (a suspended agent or user gets no request and
// no token).
const (
	// cacheMaxAge bounds an entry while the event listener hears every
	// change: invalidation does the work, the age is a backstop.
	cacheMaxAge = 5 * time.Minute
	// cacheStaleAge bounds an entry while the listener is away: changes on
	// other replicas are then seen within it.
	cacheStaleAge = time.Second
)

// cache keeps values read from the database in memory, by key. The event
// listener drops entries when their rows change, on any replica, and all
// of them on a resync. Without a listener nothing is kept.
type cache[K comparable, V any] struct {
	listener *Listener
	now      func() time.Time

	mu      sync.Mutex
	entries map[K]cacheEntry[V]
	// gen counts invalidations: a value loaded while one happened is not
	// kept, since it may predate the change.
	gen uint64
}

type cacheEntry[V any] struct {
	v  V
	at time.Time
}

func newCache[K comparable, V any](l *Listener, now func() time.Time) *cache[K, V] {
	return &cache[K, V]{listener: l, now: now, entries: map[K]cacheEntry[V]{}}
}

// maxAge is how long an entry may be served now.
func (c *cache[K, V]) maxAge() time.Duration {
	switch {
	case c.listener == nil:
		return 0
	case c.listener.Connected():
		return cacheMaxAge
	}
	return cacheStaleAge
}

// get returns the value for k, from memory when it is fresh enough, else
// from load (errors are not kept).
func (c *cache[K, V]) get(ctx context.Context, k K, load func(context.Context) (V, error)) (V, error) {
	maxAge := c.maxAge()
	c.mu.Lock()
	e, ok := c.entries[k]
	gen := c.gen
	c.mu.Unlock()
	now := c.now()
	if ok && now.Sub(e.at) < maxAge && !now.Before(e.at) {
		return e.v, nil
	}
	v, err := load(ctx)
	if err != nil || maxAge == 0 {
		return v, err
	}
	c.mu.Lock()
	if c.gen == gen {
		c.entries[k] = cacheEntry[V]{v: v, at: now}
	}
	c.mu.Unlock()
	return v, nil
}

// drop forgets k.
func (c *cache[K, V]) drop(k K) {
	c.mu.Lock()
	delete(c.entries, k)
	c.gen++
	c.mu.Unlock()
}

// dropAll forgets everything.
func (c *cache[K, V]) dropAll() {
	c.mu.Lock()
	clear(c.entries)
	c.gen++
	c.mu.Unlock()
}

// caches are the Service's in-memory copies of what rarely changes.
type caches struct {
	agents    *cache[string, Agent]
	users     *cache[string, User] // by login hint
	resources *cache[struct{}, []ResourceServer]
	registry  *cache[struct{}, registryVersion]
	policy    *cache[struct{}, policyVersion]
}

func newCaches(l *Listener, now func() time.Time) *caches {
	return &caches{
		agents:    newCache[string, Agent](l, now),
		users:     newCache[string, User](l, now),
		resources: newCache[struct{}, []ResourceServer](l, now),
		registry:  newCache[struct{}, registryVersion](l, now),
		policy:    newCache[struct{}, policyVersion](l, now),
	}
}

// invalidate drops what notice n says has changed; a resync drops all.
func (c *caches) invalidate(n Notice, keys *KeyStore) {
	kind, _, _ := strings.Cut(n.Kind, ".")
	switch {
	case n.Resync:
		c.agents.dropAll()
		c.users.dropAll()
		c.resources.dropAll()
		c.registry.dropAll()
		c.policy.dropAll()
		if keys != nil {
			keys.invalidate()
		}
	case kind == "agent":
		c.agents.drop(n.AgentID)
	case kind == "user":
		// Users are kept by hint (email or id): forget them all.
		c.users.dropAll()
	case kind == "resource_server":
		c.resources.dropAll()
	case kind == "type":
		c.registry.dropAll()
	case kind == "policy":
		c.policy.dropAll()
	case kind == "key" && keys != nil:
		keys.invalidate()
	}
}

// registryVersion is the compiled type registry and the versions it holds.
type registryVersion struct {
	reg      *rar.Registry
	versions TypeVersions
}

// policyVersion is the compiled current policy (nil when none is published)
// and its version.
type policyVersion struct {
	set     *policy.Set
	version int
}

// agent returns the registration of agent id.
func (s *Service) agent(ctx context.Context, id string) (Agent, error) {
	return s.caches.agents.get(ctx, id, func(ctx context.Context) (Agent, error) { return s.store.Agent(ctx, id) })
}

// userByHint returns the user a login hint (email or id) names.
func (s *Service) userByHint(ctx context.Context, hint string) (User, error) {
	return s.caches.users.get(ctx, hint, func(ctx context.Context) (User, error) {
		return s.store.UserByHint(ctx, hint)
	})
}

// resourceServers returns every registered resource server.
func (s *Service) resourceServers(ctx context.Context) ([]ResourceServer, error) {
	return s.caches.resources.get(ctx, struct{}{}, s.store.ResourceServers)
}

// registry returns the compiled registry of the current request types.
func (s *Service) registry(ctx context.Context) (*rar.Registry, TypeVersions, error) {
	rv, err := s.caches.registry.get(ctx, struct{}{}, func(ctx context.Context) (registryVersion, error) {
		reg, v, err := s.types.Registry(ctx)
		return registryVersion{reg, v}, err
	})
	return rv.reg, rv.versions, err
}

// currentPolicy returns the compiled current policy and its version; nil
// and 0 when none is published.
func (s *Service) currentPolicy(ctx context.Context) (*policy.Set, int, error) {
	pv, err := s.caches.policy.get(ctx, struct{}{}, func(ctx context.Context) (policyVersion, error) {
		set, v, err := s.policies.Current(ctx)
		return policyVersion{set, v}, err
	})
	return pv.set, pv.version, err
}

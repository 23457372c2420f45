package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Bounds on how long a fetched JWKS is used before it is fetched again:
// the server's Cache-Control max-age (60 s), within these.
const (
	minJWKSAge     = 10 * time.Second
	maxJWKSAge     = time.Hour
	defaultJWKSAge = 5 * time.Minute
)

// jwksCache holds the server's signing keys by kid. It fetches them when
// first needed, again when their max-age has passed, and again for an
// unknown kid — at most once every minRefresh, however many unknown kids
// come. A failed fetch leaves the keys it had in use.
type jwksCache struct {
	meta       *metadataSource
	http       *http.Client
	minRefresh time.Duration
	now        func() time.Time

	mu      sync.Mutex
	keys    map[string]jose.JSONWebKey
	fetched time.Time     // the last successful fetch
	maxAge  time.Duration // of that fetch
	// unknownRefresh is the last fetch made for an unknown kid.
	unknownRefresh time.Time
}

func (j *jwksCache) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := j.now()
	var ferr error
	switch k, known := j.keys[kid]; {
	case j.keys == nil || now.Sub(j.fetched) >= j.maxAge:
		// First use, or past max-age: fetch, and use what was had if that fails.
		ferr = j.refresh(ctx)
	case known:
		return k, nil
	case now.Sub(j.unknownRefresh) >= j.minRefresh:
		// A kid rotated in since the last fetch, or a made-up one: only
		// one fetch per minRefresh either way.
		j.unknownRefresh = now
		ferr = j.refresh(ctx)
	}
	if k, ok := j.keys[kid]; ok {
		return k, nil
	}
	if ferr != nil {
		return jose.JSONWebKey{}, ferr
	}
	return jose.JSONWebKey{}, fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
}

func (j *jwksCache) refresh(ctx context.Context) error {
	md, err := j.meta.get(ctx)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, md.JWKSURI, nil)
	if err != nil {
		return fmt.Errorf("client: jwks: %w", err)
	}
	resp, err := j.http.Do(req)
	if err != nil {
		return fmt.Errorf("client: jwks: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("client: jwks: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("client: jwks: HTTP %d", resp.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return fmt.Errorf("client: jwks: %w", err)
	}
	keys := make(map[string]jose.JSONWebKey, len(set.Keys))
	for _, k := range set.Keys {
		if k.KeyID == "" || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
			continue
		}
		keys[k.KeyID] = k
	}
	j.keys, j.fetched, j.maxAge = keys, j.now(), maxAge(resp.Header.Get("Cache-Control"))
	return nil
}

// maxAge reads max-age from Cache-Control (RFC 9111 §5.2.2.1), bounded.
func maxAge(cc string) time.Duration {
	for _, d := range strings.Split(cc, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(strings.ToLower(d)), "max-age="); ok {
			if n, err := strconv.Atoi(v); err == nil {
				return min(max(time.Duration(n)*time.Second, minJWKSAge), maxJWKSAge)
			}
		}
	}
	return defaultJWKSAge
}

package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/countersign/countersign/protocol"
)

// maxResponseBytes bounds what is read of any answer: a token response
// carries authorization_details (at most 16 KiB) twice.
const maxResponseBytes = 1 << 20

// Config configures a Client: the agent's registration.
type Config struct {
	// Issuer is Countersign's issuer URL, such as http://localhost:8080.
	// The endpoints come from its metadata (RFC 8414), whose issuer must be
	// exactly this (RFC 8414 §3.3).
	Issuer   string
	ClientID string
	// ClientSecret authenticates the agent with client_secret_basic, or
	// client_secret_post when AuthMethod says so.
	ClientSecret string
	// Key signs private_key_jwt client assertions (RFC 7523): a private
	// key (*ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey or a
	// crypto.Signer) whose KeyID names the public key registered for the
	// agent. Algorithm defaults to ES256, RS256 or EdDSA by the key's type.
	Key *jose.JSONWebKey
	// AuthMethod is protocol.AuthClientSecretBasic,
	// protocol.AuthClientSecretPost or protocol.AuthPrivateKeyJWT; by
	// default client_secret_basic with a secret, private_key_jwt with a Key.
	AuthMethod string
	// Ping, when set, makes the client wait for ping callbacks (CIBA §10.2)
	// instead of polling: the agent must be registered for ping delivery
	// with the URL where Ping is served as its notification endpoint.
	Ping *PingReceiver
	// HTTPClient sends the requests (nil: http.DefaultClient).
	HTTPClient *http.Client
}

// Client is an agent's connection to Countersign. It is safe for
// concurrent use.
type Client struct {
	cfg  Config
	http *http.Client
	meta *metadataSource
	auth clientAuth
}

// New checks cfg and returns a Client. It does not contact the server.
func New(cfg Config) (*Client, error) {
	if cfg.ClientID == "" {
		return nil, errors.New("client: ClientID is required")
	}
	if cfg.AuthMethod == "" {
		cfg.AuthMethod = protocol.AuthClientSecretBasic
		if cfg.Key != nil && cfg.ClientSecret == "" {
			cfg.AuthMethod = protocol.AuthPrivateKeyJWT
		}
	}
	meta, err := newMetadataSource(cfg.Issuer, cfg.HTTPClient)
	if err != nil {
		return nil, err
	}
	auth, err := newClientAuth(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, http: httpClient(cfg.HTTPClient), meta: meta, auth: auth}, nil
}

func httpClient(c *http.Client) *http.Client {
	if c == nil {
		return http.DefaultClient
	}
	return c
}

// metadataSource fetches the authorization server metadata once it is
// first needed and keeps it; a failed fetch is tried again next time.
type metadataSource struct {
	issuer string
	http   *http.Client
	mu     sync.Mutex
	meta   *protocol.ProviderMetadata
}

func newMetadataSource(issuer string, c *http.Client) (*metadataSource, error) {
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: Issuer %q is not an http(s) URL", issuer)
	}
	return &metadataSource{issuer: strings.TrimRight(issuer, "/"), http: httpClient(c)}, nil
}

func (m *metadataSource) get(ctx context.Context) (*protocol.ProviderMetadata, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.meta != nil {
		return m.meta, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.issuer+protocol.MetadataPath, nil)
	if err != nil {
		return nil, fmt.Errorf("client: metadata: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := m.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: metadata: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("client: metadata: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("client: metadata: HTTP %d", resp.StatusCode)
	}
	var md protocol.ProviderMetadata
	if err := json.Unmarshal(body, &md); err != nil {
		return nil, fmt.Errorf("client: metadata: %w", err)
	}
	// RFC 8414 §3.3: the issuer must be the one the metadata was asked of.
	if md.Issuer != m.issuer {
		return nil, fmt.Errorf("client: metadata names issuer %q, want %q", md.Issuer, m.issuer)
	}
	m.meta = &md
	return m.meta, nil
}

// postForm POSTs form to endpoint, authenticated by auth when it is not
// nil, and decodes a 200 answer into out (nil: the body is ignored). Any
// other answer is an *Error.
func postForm(ctx context.Context, hc *http.Client, endpoint string, form url.Values, auth func(*http.Request, url.Values) error, out any) error {
	if form == nil {
		form = url.Values{}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, nil)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if auth != nil {
		if err := auth(req, form); err != nil {
			return err
		}
	}
	body := form.Encode()
	req.Body = io.NopCloser(strings.NewReader(body))
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return &transportError{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return &transportError{err: err}
	}
	if resp.StatusCode == http.StatusOK {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("client: %s answered 200 with an unreadable body: %w", endpoint, err)
		}
		return nil
	}
	return errorFromResponse(resp, b)
}

// errorFromResponse reads an OAuth error answer (RFC 6749 §5.2). An answer
// without one, such as a proxy's 502, is an *Error with only the status.
func errorFromResponse(resp *http.Response, body []byte) *Error {
	e := &Error{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var er protocol.ErrorResponse
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" && json.Unmarshal(bytes.TrimSpace(body), &er) == nil {
		e.Code, e.Description = er.Error, er.Description
	}
	return e
}

// retryAfter reads Retry-After (RFC 9110 §10.2.3): seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// randomToken returns 256 random bits, base64url.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

package approvals

import (
	"encoding/json"

	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/lib/pq"

	"github.com/countersign/countersign/protocol"
)

// Delivery modes (CIBA §5) and client authentication methods.
const (
	DeliveryPoll = protocol.DeliveryPoll
	DeliveryPing = protocol.DeliveryPing

	AuthClientSecretBasic = protocol.AuthClientSecretBasic
	AuthClientSecretPost  = protocol.AuthClientSecretPost
	AuthPrivateKeyJWT     = protocol.AuthPrivateKeyJWT
)

// Agent is a registered OAuth client: an AI agent that asks for approval.
type Agent struct {
	ID           string         `db:"id" json:"client_id"`
	Name         string         `db:"name" json:"name"`
	Domain       string         `db:"domain" json:"domain"`
	Types        pq.StringArray `db:"types" json:"types"`
	Labels       Labels         `db:"labels" json:"labels"`
	DeliveryMode string         `db:"delivery_mode" json:"delivery_mode"`
	NotifyURL    *string        `db:"notify_url" json:"client_notification_endpoint,omitempty"`
	AuthMethod   string         `db:"auth_method" json:"token_endpoint_auth_method"`
	SecretHash   []byte         `db:"secret_hash" json:"-"`
	JWKS         NullJSON       `db:"jwks" json:"jwks,omitempty"`
	JWKSURL      *string        `db:"jwks_url" json:"jwks_uri,omitempty"`
	IDTokenAlg   string         `db:"id_token_alg" json:"id_token_signed_response_alg"`
	Status       string         `db:"status" json:"status"`
	CreatedAt    time.Time      `db:"created_at" json:"created_at"`
}

// NewAgent is what an admin registers.
type NewAgent struct {
	Name, Domain string
	Types        []string
	Labels       map[string]string
	DeliveryMode string // poll (default) or ping
	NotifyURL    string // required for ping
	AuthMethod   string // client_secret_basic (default), client_secret_post, private_key_jwt
	JWKS         []byte // private_key_jwt: inline JWKS
	JWKSURL      string // private_key_jwt: or a JWKS URL
	IDTokenAlg   string // ES256 (default) or RS256
}

func (a *NewAgent) validate() error {
	if strings.TrimSpace(a.Name) == "" {
		return fmt.Errorf("%w: name is required", ErrInvalidInput)
	}
	if !validDomain(a.Domain) {
		return fmt.Errorf("%w: domain %q is not a host name", ErrInvalidInput, a.Domain)
	}
	if len(a.Types) == 0 {
		return fmt.Errorf("%w: at least one request type is required", ErrInvalidInput)
	}
	if a.DeliveryMode == "" {
		a.DeliveryMode = DeliveryPoll
	}
	switch a.DeliveryMode {
	case DeliveryPoll:
		if a.NotifyURL != "" {
			return fmt.Errorf("%w: a notification endpoint is only for ping delivery", ErrInvalidInput)
		}
	case DeliveryPing:
		if !outboundURL(a.NotifyURL) {
			return fmt.Errorf("%w: ping delivery needs a client_notification_endpoint https URL (http only to loopback, for development)", ErrInvalidInput)
		}
	default:
		return fmt.Errorf("%w: delivery must be poll or ping, not %q", ErrInvalidInput, a.DeliveryMode)
	}
	if a.AuthMethod == "" {
		a.AuthMethod = AuthClientSecretBasic
	}
	switch a.AuthMethod {
	case AuthClientSecretBasic, AuthClientSecretPost:
		if len(a.JWKS) > 0 || a.JWKSURL != "" {
			return fmt.Errorf("%w: a JWKS is only for private_key_jwt", ErrInvalidInput)
		}
	case AuthPrivateKeyJWT:
		if (len(a.JWKS) > 0) == (a.JWKSURL != "") {
			return fmt.Errorf("%w: private_key_jwt needs exactly one of a JWKS file or a JWKS URL", ErrInvalidInput)
		}
		if a.JWKSURL != "" && !outboundURL(a.JWKSURL) {
			return fmt.Errorf("%w: the JWKS URL must be https (http only to loopback, for development)", ErrInvalidInput)
		}
		if len(a.JWKS) > 0 {
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(a.JWKS, &set); err != nil || len(set.Keys) == 0 {
				return fmt.Errorf("%w: the JWKS is not a JSON Web Key Set with at least one key", ErrInvalidInput)
			}
			for _, k := range set.Keys {
				if !k.IsPublic() {
					return fmt.Errorf("%w: the JWKS holds a private key; register the public keys only", ErrInvalidInput)
				}
			}
		}
	default:
		return fmt.Errorf("%w: auth must be client_secret_basic, client_secret_post or private_key_jwt, not %q", ErrInvalidInput, a.AuthMethod)
	}
	if a.IDTokenAlg == "" {
		a.IDTokenAlg = "ES256"
	}
	if a.IDTokenAlg != "ES256" && a.IDTokenAlg != "RS256" {
		return fmt.Errorf("%w: id_token_signed_response_alg must be ES256 or RS256", ErrInvalidInput)
	}
	return nil
}

// outboundURL accepts a URL this server will call: https, or plain http to a
// loopback host (development). Where it may actually connect is decided at
// connect time (egress.Policy).
func outboundURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Hostname() == "" || u.Fragment != "" || u.User != nil {
		return false
	}
	switch u.Scheme {
	case "https":
		return true
	case "http":
		h := u.Hostname()
		return h == "localhost" || h == "127.0.0.1" || h == "::1"
	}
	return false
}

func validDomain(d string) bool {
	if d == "" || len(d) > 253 || strings.ContainsAny(d, "/:@ ") {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
	}
	return true
}

const agentColumns = `id, name, domain, types, labels, delivery_mode, notify_url, auth_method, secret_hash, jwks, jwks_url, id_token_alg, status, created_at`

const createAgentSQL = `
INSERT INTO agents (id, name, domain, types, labels, delivery_mode, notify_url, auth_method, secret_hash, jwks, jwks_url, id_token_alg)
VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, ''), $8, $9, $10, NULLIF($11, ''), $12)
RETURNING ` + agentColumns

// CreateAgent registers an agent. It returns the one-time client secret ("" for
// private_key_jwt); only its hash is stored.
func (s *Store) CreateAgent(ctx context.Context, n NewAgent) (Agent, string, error) {
	if err := n.validate(); err != nil {
		return Agent{}, "", err
	}
	var secret string
	var hash []byte
	if n.AuthMethod != AuthPrivateKeyJWT {
		secret = NewSecret()
		hash = HashSecret(secret)
	}
	types := slices.Clone(n.Types)
	slices.Sort(types)
	var a Agent
	err := s.change(ctx, func(t *Tx) error {
		err := t.QueryRowxContext(ctx, createAgentSQL, newID("agt_"), n.Name, n.Domain, pq.StringArray(slices.Compact(types)),
			Labels(n.Labels), n.DeliveryMode, n.NotifyURL, n.AuthMethod, hash, NullJSON(n.JWKS), n.JWKSURL, n.IDTokenAlg).StructScan(&a)
		if err != nil {
			return err
		}
		t.record(Event{Kind: KindAgentCreated, Actor: ActorCLI, AgentID: &a.ID, Body: mustJSON(map[string]any{"after": a})})
		return nil
	})
	if err != nil {
		return Agent{}, "", fmt.Errorf("approvals: create agent: %w", translate(err))
	}
	return a, secret, nil
}

const agentSQL = `SELECT ` + agentColumns + ` FROM agents WHERE id = $1`

// Agent returns the agent with client_id id.
func (s *Store) Agent(ctx context.Context, id string) (Agent, error) {
	var a Agent
	if err := s.db.GetContext(ctx, &a, agentSQL, id); err != nil {
		return Agent{}, fmt.Errorf("approvals: agent %q: %w", id, translate(err))
	}
	return a, nil
}

const agentsSQL = `SELECT ` + agentColumns + ` FROM agents ORDER BY created_at, id`

// Agents lists every agent, oldest first.
func (s *Store) Agents(ctx context.Context) ([]Agent, error) {
	var out []Agent
	if err := s.db.SelectContext(ctx, &out, agentsSQL); err != nil {
		return nil, fmt.Errorf("approvals: agents: %w", err)
	}
	return out, nil
}

const rotateAgentSecretSQL = `
WITH before AS (SELECT id, updated_at AS before_updated_at FROM agents WHERE id = $1 FOR UPDATE)
UPDATE agents a SET secret_hash = $2, updated_at = now()
FROM before WHERE a.id = before.id AND a.auth_method <> 'private_key_jwt'
RETURNING a.id, a.auth_method, before_updated_at, a.updated_at`

// RotateAgentSecret replaces an agent's client secret; the old one stops
// working at once. It returns the new one-time secret.
func (s *Store) RotateAgentSecret(ctx context.Context, id string) (string, error) {
	secret := NewSecret()
	err := s.change(ctx, func(t *Tx) error {
		var got struct {
			ID         string    `db:"id"`
			AuthMethod string    `db:"auth_method"`
			Before     time.Time `db:"before_updated_at"`
			After      time.Time `db:"updated_at"`
		}
		if err := t.GetContext(ctx, &got, rotateAgentSecretSQL, id, HashSecret(secret)); err != nil {
			return err
		}
		// Neither secret nor its hash: when each was set, and that the old
		// one no longer works.
		t.record(Event{Kind: KindAgentSecretRotated, Actor: ActorCLI, AgentID: &got.ID, Body: mustJSON(map[string]any{
			"auth_method": got.AuthMethod, "old_secret_revoked": true,
			"before": map[string]any{"updated_at": got.Before}, "after": map[string]any{"updated_at": got.After}})})
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("approvals: rotate secret of %q (agents using private_key_jwt have none): %w", id, translate(err))
	}
	return secret, nil
}

const setAgentStatusSQL = `
WITH before AS (SELECT id, status AS before_status FROM agents WHERE id = $1 FOR UPDATE)
UPDATE agents a SET status = $2, updated_at = now() FROM before WHERE a.id = before.id
RETURNING a.id, before_status`

// SetAgentStatus suspends ("suspended") or resumes ("active") an agent. A
// suspended agent gets no new request and no token, and the tokens it holds
// are revoked in the same change.
func (s *Store) SetAgentStatus(ctx context.Context, id, status string) error {
	err := s.change(ctx, func(t *Tx) error {
		var got struct {
			ID     string `db:"id"`
			Before string `db:"before_status"`
		}
		if err := t.GetContext(ctx, &got, setAgentStatusSQL, id, status); err != nil {
			return err
		}
		kind := KindAgentResumed
		if status == "suspended" {
			kind = KindAgentSuspended
			if err := revokeTokensOf(ctx, t, "agent", got.ID, ActorCLI, "agent suspended"); err != nil {
				return err
			}
		}
		t.record(Event{Kind: kind, Actor: ActorCLI, AgentID: &got.ID,
			Body: mustJSON(map[string]any{"before": map[string]string{"status": got.Before}, "after": map[string]string{"status": status}})})
		return nil
	})
	if err != nil {
		return fmt.Errorf("approvals: set status of agent %q: %w", id, translate(err))
	}
	return nil
}

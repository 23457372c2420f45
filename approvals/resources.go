package approvals

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/countersign/countersign/rar"
	"github.com/lib/pq"
)

// ResourceServer is an API that verifies and redeems tokens.
type ResourceServer struct {
	ID         string         `db:"id" json:"client_id"`
	Name       string         `db:"name" json:"name"`
	Audience   string         `db:"audience" json:"audience"`
	Types      pq.StringArray `db:"types" json:"types"`
	SecretHash []byte         `db:"secret_hash" json:"-"`
	Status     string         `db:"status" json:"status"`
	CreatedAt  time.Time      `db:"created_at" json:"created_at"`
}

// NewResourceServer is what an admin registers.
type NewResourceServer struct {
	Name, Audience string
	// Types are the request types this server executes: tokens for them carry
	// its audience when the request named neither resource nor locations.
	Types []string
}

const resourceColumns = `id, name, audience, types, secret_hash, status, created_at`

const createResourceSQL = `
INSERT INTO resource_servers (id, name, audience, types, secret_hash)
VALUES ($1, $2, $3, $4, $5)
RETURNING ` + resourceColumns

// CreateResourceServer registers a resource server and returns its one-time secret.
func (s *Store) CreateResourceServer(ctx context.Context, n NewResourceServer) (ResourceServer, string, error) {
	if strings.TrimSpace(n.Name) == "" {
		return ResourceServer{}, "", fmt.Errorf("%w: name is required", ErrInvalidInput)
	}
	if u, err := url.Parse(n.Audience); err != nil || !u.IsAbs() || u.Fragment != "" {
		return ResourceServer{}, "", fmt.Errorf("%w: audience %q must be an absolute URI without a fragment (RFC 8707 §2)", ErrInvalidInput, n.Audience)
	}
	secret := NewSecret()
	var r ResourceServer
	err := s.change(ctx, func(t *Tx) error {
		err := t.QueryRowxContext(ctx, createResourceSQL, newID("rs_"), n.Name, n.Audience,
			pq.StringArray(sortedSet(n.Types)), HashSecret(secret)).StructScan(&r)
		if err != nil {
			return err
		}
		t.record(Event{Kind: KindResourceCreated, Actor: ActorCLI, Subject: ptr("resource_server:" + r.ID),
			Body: mustJSON(map[string]any{"after": r})})
		return nil
	})
	if err != nil {
		return ResourceServer{}, "", fmt.Errorf("approvals: create resource server: %w", translate(err))
	}
	return r, secret, nil
}

const resourceServersSQL = `SELECT ` + resourceColumns + ` FROM resource_servers ORDER BY created_at, id`

// ResourceServers lists every resource server.
func (s *Store) ResourceServers(ctx context.Context) ([]ResourceServer, error) {
	var out []ResourceServer
	if err := s.db.SelectContext(ctx, &out, resourceServersSQL); err != nil {
		return nil, fmt.Errorf("approvals: resource servers: %w", err)
	}
	return out, nil
}

const rotateResourceSecretSQL = `UPDATE resource_servers SET secret_hash = $2 WHERE id = $1 RETURNING id`

// RotateResourceServerSecret replaces a resource server's secret and returns
// the new one-time secret.
func (s *Store) RotateResourceServerSecret(ctx context.Context, id string) (string, error) {
	secret := NewSecret()
	err := s.change(ctx, func(t *Tx) error {
		var got string
		if err := t.GetContext(ctx, &got, rotateResourceSecretSQL, id, HashSecret(secret)); err != nil {
			return err
		}
		t.record(Event{Kind: KindResourceSecretRotate, Actor: ActorCLI, Subject: ptr("resource_server:" + got),
			Body: mustJSON(map[string]any{"old_secret_revoked": true})})
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("approvals: rotate secret of %q: %w", id, translate(err))
	}
	return secret, nil
}

// audience decides the token's aud: the resource indicators given (RFC 8707),
// else the details' locations (RFC 9396 §2.2), else the resource servers
// registered for the request's types. Every audience must be an active
// registered resource server that executes the request's types (when it
// declares them): an agent cannot aim a token anywhere else.
func (s *Service) audience(ctx context.Context, resources []string, d *rar.Details, types []string) (pq.StringArray, error) {
	candidates := resources
	if len(candidates) == 0 {
		for _, e := range d.Elements {
			if ls, ok := e.Value["locations"].([]any); ok {
				for _, l := range ls {
					if s, ok := l.(string); ok {
						candidates = append(candidates, s)
					}
				}
			}
		}
	}
	known, err := s.resourceServers(ctx)
	if err != nil {
		return nil, err
	}
	if len(candidates) == 0 {
		// The active resource servers that execute every one of types.
		var aud []string
		for _, rs := range known {
			if rs.Status == "active" && !slices.ContainsFunc(types, func(t string) bool { return !slices.Contains(rs.Types, t) }) {
				aud = append(aud, rs.Audience)
			}
		}
		if len(aud) == 0 {
			return nil, refuse(CodeInvalidTarget, "no audience for the token: give a resource parameter or locations in authorization_details")
		}
		return sortedSet(aud), nil
	}
	for _, a := range candidates {
		i := slices.IndexFunc(known, func(rs ResourceServer) bool { return rs.Audience == a && rs.Status == "active" })
		if i < 0 {
			return nil, refuse(CodeInvalidTarget, "the resource or location does not name a registered resource server")
		}
		if rs := known[i]; len(rs.Types) > 0 {
			for _, t := range types {
				if !slices.Contains(rs.Types, t) {
					return nil, refuse(CodeInvalidTarget, "the resource server named does not execute requests of type "+t)
				}
			}
		}
	}
	return sortedSet(candidates), nil
}

package approvals

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/countersign/countersign/rar"
)

// VAPIDKeys are the server's Web Push key pair (RFC 8292): the public key
// is the application server key a browser subscribes with, as an
// uncompressed P-256 point in base64url; the private key, the P-256 scalar
// in base64url, signs each push's VAPID JWT.
type VAPIDKeys struct {
	Public, Private string
}

const vapidPurpose = "countersign vapid v1"

// vapidAAD binds the sealed private key to its row.
var vapidAAD = []byte("vapid_keys")

// VAPID returns the server's Web Push keys, making them on first use (once
// across replicas: the first insert wins). The private key is kept sealed
// with the key-encryption key.
func (s *KeyStore) VAPID(ctx context.Context) (VAPIDKeys, error) {
	s.vapidMu.Lock()
	defer s.vapidMu.Unlock()
	if s.vapid != nil {
		return *s.vapid, nil
	}
	key := s.vapidKey
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return VAPIDKeys{}, err
	}
	sealed, err := seal(key, priv.Bytes(), vapidAAD)
	if err != nil {
		return VAPIDKeys{}, err
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO vapid_keys (public_key, private_sealed) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
		rawURL64(priv.PublicKey().Bytes()), sealed); err != nil {
		return VAPIDKeys{}, fmt.Errorf("approvals: vapid keys: %w", err)
	}
	var row struct {
		Public string `db:"public_key"`
		Sealed []byte `db:"private_sealed"`
	}
	if err := s.db.GetContext(ctx, &row, `SELECT public_key, private_sealed FROM vapid_keys`); err != nil {
		return VAPIDKeys{}, fmt.Errorf("approvals: vapid keys: %w", err)
	}
	raw, err := open(key, row.Sealed, vapidAAD)
	if err != nil {
		return VAPIDKeys{}, fmt.Errorf("approvals: vapid keys: %w", err)
	}
	k := VAPIDKeys{Public: row.Public, Private: rawURL64(raw)}
	s.vapid = &k
	return k, nil
}

func rawURL64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// PushSubscription is one device's Web Push subscription (the browser's
// PushSubscription: its endpoint and keys), named by its person.
type PushSubscription struct {
	ID           string     `db:"id" json:"id"`
	UserID       string     `db:"user_id" json:"-"`
	Endpoint     string     `db:"endpoint" json:"-"`
	P256dh       string     `db:"p256dh" json:"-"`
	Auth         string     `db:"auth" json:"-"`
	Name         string     `db:"name" json:"name"`
	UserAgent    string     `db:"user_agent" json:"user_agent"`
	CreatedAt    time.Time  `db:"created_at" json:"created_at"`
	LastPushedAt *time.Time `db:"last_pushed_at" json:"last_pushed_at"`
}

const pushColumns = `id, user_id, endpoint, p256dh, auth, name, user_agent, created_at, last_pushed_at`

// checkSubscription validates what a browser sent (W3C Push API
// PushSubscription.toJSON()): an https endpoint, a P-256 public key and a
// 16-byte authentication secret (RFC 8291 §3), and a name.
func checkSubscription(p PushSubscription) error {
	u, err := url.Parse(p.Endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || len(p.Endpoint) > 2048 {
		return invalid("the push endpoint must be an https URL of at most 2048 characters")
	}
	if k, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(p.P256dh, "=")); err != nil || len(k) != 65 || k[0] != 4 {
		return invalid("keys.p256dh must be an uncompressed P-256 point in base64url")
	} else if _, err := ecdh.P256().NewPublicKey(k); err != nil {
		return invalid("keys.p256dh is not a point on P-256")
	}
	if a, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(p.Auth, "=")); err != nil || len(a) != 16 {
		return invalid("keys.auth must be 16 bytes in base64url")
	}
	return displayName("device", p.Name)
}

const upsertPushSQL = `
INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, name, user_agent)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (endpoint) DO UPDATE SET user_id = excluded.user_id, p256dh = excluded.p256dh, auth = excluded.auth,
	name = excluded.name, user_agent = excluded.user_agent
RETURNING ` + pushColumns

// AddPushSubscription stores p for its user. A browser's endpoint is its
// own: subscribing it again (after a new sign-in, say) replaces the old
// row, keys and person included.
func (s *Store) AddPushSubscription(ctx context.Context, p PushSubscription) (PushSubscription, error) {
	p.P256dh, p.Auth, p.Name = strings.TrimRight(p.P256dh, "="), strings.TrimRight(p.Auth, "="), strings.TrimSpace(p.Name)
	if err := checkSubscription(p); err != nil {
		return PushSubscription{}, err
	}
	if len(p.UserAgent) > 200 {
		p.UserAgent = p.UserAgent[:200]
	}
	var out PushSubscription
	err := s.change(ctx, func(t *Tx) error {
		if err := t.GetContext(ctx, &out, upsertPushSQL, newID("dev_"), p.UserID, p.Endpoint, p.P256dh, p.Auth, p.Name, p.UserAgent); err != nil {
			return err
		}
		t.record(Event{Kind: KindPushSubscribed, Actor: ActorUser(p.UserID), UserID: &p.UserID,
			Body: mustJSON(map[string]any{"device": out.ID, "name": out.Name})})
		return nil
	})
	if err != nil {
		return PushSubscription{}, fmt.Errorf("approvals: push subscription: %w", translate(err))
	}
	return out, nil
}

// PushSubscriptions lists user userID's devices, oldest first.
func (s *Store) PushSubscriptions(ctx context.Context, userID string) ([]PushSubscription, error) {
	var out []PushSubscription
	if err := s.db.SelectContext(ctx, &out, `SELECT `+pushColumns+` FROM push_subscriptions WHERE user_id = $1 ORDER BY created_at, id`, userID); err != nil {
		return nil, fmt.Errorf("approvals: push subscriptions: %w", err)
	}
	return out, nil
}

// RemovePushSubscription removes user userID's device id (ErrNotFound when
// it is not theirs).
func (s *Store) RemovePushSubscription(ctx context.Context, userID, id string) error {
	return s.change(ctx, func(t *Tx) error {
		res, err := t.ExecContext(ctx, `DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2`, id, userID)
		if err != nil {
			return fmt.Errorf("approvals: remove device: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("approvals: remove device: %w", ErrNotFound)
		}
		t.record(Event{Kind: KindPushRemoved, Actor: ActorUser(userID), UserID: &userID, Body: mustJSON(map[string]any{"device": id})})
		return nil
	})
}

// PushMessage is what a push tells a device (SPEC §5: least data): which
// request, its summary sentence and binding message, and what is needed —
// never a token or the raw details. Type "decided" carries only the id, to
// close the notification on the person's other devices.
type PushMessage struct {
	Type           string `json:"type"` // "new" or "decided"
	RequestID      string `json:"request_id"`
	Summary        string `json:"summary,omitempty"`
	BindingMessage string `json:"binding_message,omitempty"`
	Need           string `json:"need,omitempty"` // approve, step_up, quorum
	URL            string `json:"url"`            // the consent page, a path
}

// pushNeed names what a pending request needs, for a notification.
func pushNeed(r Request) string {
	switch {
	case r.StepUp:
		return "step_up"
	case len(r.Quorum) > 0:
		return "quorum"
	}
	return "approve"
}

// newRequestPush is the message of pending request r whose elements sum
// up as summary.
func newRequestPush(r Request, summary string) []byte {
	return mustJSON(PushMessage{Type: "new", RequestID: r.ID, Summary: summary, BindingMessage: r.BindingMessage,
		Need: pushNeed(r), URL: "/approve/" + r.ID})
}

// summarySentence is a notification's one line for details: the first
// element's sentence, and how many more there are.
func summarySentence(reg *rar.Registry, d *rar.Details) string {
	sums := reg.Summarize(d)
	if len(sums) == 0 {
		return ""
	}
	if len(sums) > 1 {
		return fmt.Sprintf("%s (and %d more)", sums[0].Sentence, len(sums)-1)
	}
	return sums[0].Sentence
}

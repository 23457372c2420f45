package approvals

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// Event is one row of the event spine (audit_events): something that
// happened, written in the same transaction as the change it records. A
// committed event is announced on EventsChannel with its ids and kind only.
type Event struct {
	ID        int64     `db:"id" json:"id"`
	At        time.Time `db:"at" json:"at"`
	Kind      string    `db:"kind" json:"kind"`
	Actor     string    `db:"actor" json:"actor"`
	RequestID *string   `db:"request_id" json:"request_id,omitempty"`
	AgentID   *string   `db:"agent_id" json:"agent_id,omitempty"`
	UserID    *string   `db:"user_id" json:"user_id,omitempty"`
	Subject   *string   `db:"subject" json:"subject,omitempty"`
	// Body says what happened; admin changes carry "before" and "after".
	// It never holds a secret or the authorization_details themselves.
	Body json.RawMessage `db:"body" json:"body"`
}

// EventsChannel is the PostgreSQL NOTIFY channel of committed events.
const EventsChannel = "countersign_events"

// Kinds of events.
const (
	KindRequestCreated   = "request.created"
	KindRequestApproved  = "request.approved"
	KindRequestDenied    = "request.denied"
	KindRequestExpired   = "request.expired"
	KindRequestCancelled = "request.cancelled"
	KindReviewRecorded   = "review.recorded"
	KindTokenIssued      = "token.issued"
	KindTokenRedeemed    = "token.redeemed"
	KindTokenRevoked     = "token.revoked"

	KindAgentCreated         = "agent.created"
	KindAgentSecretRotated   = "agent.secret_rotated"
	KindAgentSuspended       = "agent.suspended"
	KindAgentResumed         = "agent.resumed"
	KindAgentReported        = "agent.reported"
	KindUserCreated          = "user.created"
	KindUserSuspended        = "user.suspended"
	KindUserResumed          = "user.resumed"
	KindUserInvited          = "user.invited"
	KindUserCodeChanged      = "user.user_code_changed"
	KindPasskeyAdded         = "passkey.added"
	KindPasskeyRenamed       = "passkey.renamed"
	KindPasskeyRemoved       = "passkey.removed"
	KindPushSubscribed       = "push.subscribed"
	KindPushRemoved          = "push.removed"
	KindPasskeyCloneWarning  = "passkey.clone_warning"
	KindSessionCreated       = "session.created"
	KindSessionEnded         = "session.ended"
	KindResourceCreated      = "resource_server.created"
	KindResourceSecretRotate = "resource_server.secret_rotated"
	KindTypeCreated          = "type.created"
	KindTypeUpdated          = "type.updated"
	KindPolicyPublished      = "policy.published"
	KindVelocityCounting     = "policy.velocity_counting" // the types whose velocity is counted changed
	KindKeyCreated           = "key.created"
	KindKeyPromoted          = "key.promoted"
	KindKeyRetired           = "key.retired"
)

// Actors that are not a principal with an id.
const (
	ActorCLI     = "admin:cli"
	ActorSweeper = "system:sweeper"
	ActorServer  = "system:server"
)

// ActorAgent, ActorUser, ActorResourceServer and ActorRule name the
// principal that caused an event.
func ActorAgent(id string) string          { return "agent:" + id }
func ActorUser(id string) string           { return "user:" + id }
func ActorResourceServer(id string) string { return "resource_server:" + id }
func ActorRule(version int, rule string) string {
	return fmt.Sprintf("rule:%d/%s", version, rule)
}

// newEvent is an event about request r.
func newEvent(kind, actor string, r Request, body any) Event {
	return Event{Kind: kind, Actor: actor, RequestID: ptr(r.ID), AgentID: ptr(r.AgentID), UserID: ptr(r.UserID), Body: mustJSON(body)}
}

func ptr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// mustJSON encodes an event body; bodies are maps and structs of plain
// values, so encoding cannot fail.
func mustJSON(v any) json.RawMessage {
	if v == nil {
		return json.RawMessage("{}")
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic("approvals: event body: " + err.Error())
	}
	return b
}

// insertEventsSQL writes a batch of events in one statement.
const insertEventsSQL = `
INSERT INTO audit_events (kind, actor, request_id, agent_id, user_id, subject, body)
SELECT kind, actor, request_id, agent_id, user_id, subject, coalesce(body, '{}')
FROM jsonb_to_recordset($1::jsonb) AS e(kind text, actor text, request_id uuid, agent_id text, user_id text, subject text, body jsonb)`

// writeEvents inserts events on tx.
func writeEvents(ctx context.Context, tx *sqlx.Tx, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	b, err := json.Marshal(events)
	if err != nil {
		return fmt.Errorf("approvals: events: %w", err)
	}
	if _, err := tx.ExecContext(ctx, insertEventsSQL, string(b)); err != nil {
		return fmt.Errorf("approvals: events: %w", translate(err))
	}
	return nil
}

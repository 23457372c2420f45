package approvals

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"
)

// RequestInfo is what an admin reads of a request: everything but the
// authorization_details themselves (their hash and summary stand for them)
// and the client_notification_token.
type RequestInfo struct {
	ID             string         `db:"id" json:"id"`
	State          State          `db:"state" json:"state"`
	AgentID        string         `db:"agent_id" json:"agent_id"`
	AgentName      string         `db:"agent_name" json:"agent_name"`
	UserID         string         `db:"user_id" json:"user_id"`
	UserEmail      string         `db:"user_email" json:"user_email"`
	Types          pq.StringArray `db:"types" json:"types"`
	DetailsHash    string         `db:"details_hash" json:"authorization_details_hash"`
	BindingMessage string         `db:"binding_message" json:"binding_message,omitempty"`
	Outcome        string         `db:"outcome" json:"outcome"`
	PolicyVersion  *int           `db:"policy_version" json:"policy_version,omitempty"`
	PolicyRule     string         `db:"policy_rule" json:"policy_rule,omitempty"`
	PolicyReason   string         `db:"policy_reason" json:"policy_reason,omitempty"`
	CreatedAt      time.Time      `db:"created_at" json:"created_at"`
	ExpiresAt      time.Time      `db:"expires_at" json:"expires_at"`
	DecidedAt      *time.Time     `db:"decided_at" json:"decided_at,omitempty"`
	DecisionReason string         `db:"decision_reason" json:"decision_reason,omitempty"`
	ACR            string         `db:"acr" json:"acr,omitempty"`
	TokenIssuedAt  *time.Time     `db:"token_issued_at" json:"token_issued_at,omitempty"`
	RedeemedAt     *time.Time     `db:"redeemed_at" json:"redeemed_at,omitempty"`
	RevokedAt      *time.Time     `db:"revoked_at" json:"revoked_at,omitempty"`
}

// requestInfoColumns reads a RequestInfo from requests r, agents a and
// users u. A pending request past its expiry reads as expired, as the
// sweeper will make it.
const requestInfoColumns = `r.id, ` + effectiveStateSQL + ` AS state,
	r.agent_id, a.name AS agent_name, r.user_id, u.email AS user_email, r.types, r.details_hash, r.binding_message,
	r.outcome, r.policy_version, r.policy_rule, r.policy_reason, r.created_at, r.expires_at, r.decided_at,
	r.decision_reason, r.acr, r.token_issued_at, r.redeemed_at, r.revoked_at`

// TimelineEvent is one event of a request's trail, with the name of its
// actor where it has one (a user's email, an agent's or resource server's
// name).
type TimelineEvent struct {
	Event
	ActorName string `db:"actor_name" json:"actor_name,omitempty"`
}

// Timeline is a request's whole story as the audit trail tells it: the
// request, its summary sentences, and its events in the order they were
// written.
type Timeline struct {
	Request   RequestInfo     `json:"request"`
	Summaries []string        `json:"summaries"`
	Events    []TimelineEvent `json:"events"`
}

const timelineRequestSQL = `SELECT ` + requestInfoColumns + `
FROM requests r JOIN agents a ON a.id = r.agent_id JOIN users u ON u.id = r.user_id
WHERE r.id = $1`

const timelineEventsSQL = `
SELECT e.id, e.at, e.kind, e.actor, e.request_id, e.agent_id, e.user_id, e.subject, e.body,
	coalesce(u.email, a.name, rs.name, '') AS actor_name
FROM audit_events e
LEFT JOIN users u ON e.actor LIKE 'user:%' AND u.id = substr(e.actor, 6)
LEFT JOIN agents a ON e.actor LIKE 'agent:%' AND a.id = substr(e.actor, 7)
LEFT JOIN resource_servers rs ON e.actor LIKE 'resource\_server:%' AND rs.id = substr(e.actor, 17)
WHERE e.request_id = $1
ORDER BY e.id`

// Timeline returns request id's timeline: ErrInvalidInput when id is not a
// request id (a UUID), ErrNotFound when there is no such request.
func (s *Service) Timeline(ctx context.Context, id string) (Timeline, error) {
	if _, ok := parseUUID(id); !ok {
		return Timeline{}, fmt.Errorf("approvals: timeline of %q: %w", id, invalid("a request id is a UUID"))
	}
	var tl Timeline
	if err := s.store.db.GetContext(ctx, &tl.Request, timelineRequestSQL, id); err != nil {
		return Timeline{}, fmt.Errorf("approvals: timeline of %s: %w", id, translate(err))
	}
	if err := s.store.db.SelectContext(ctx, &tl.Events, timelineEventsSQL, id); err != nil {
		return Timeline{}, fmt.Errorf("approvals: timeline of %s: %w", id, translate(err))
	}
	r, err := s.store.Request(ctx, id)
	if err != nil {
		return Timeline{}, err
	}
	tl.Summaries = []string{}
	for _, sum := range s.summarize(ctx, r) {
		tl.Summaries = append(tl.Summaries, sum.Sentence)
	}
	if tl.Events == nil {
		tl.Events = []TimelineEvent{}
	}
	return tl, nil
}

// RequestFilter selects requests to list; zero fields select all.
type RequestFilter struct {
	State   State
	AgentID string
	User    string // a user's id or email
	Type    string
	Since   time.Time // created at or after
	Until   time.Time // created before
	Limit   int       // at most this many, newest first; 0: DefaultListLimit
}

// Limits of ListRequests.
const (
	DefaultListLimit = 50
	MaxListLimit     = 10000
)

// effectiveStateSQL is request r's state as the sweeper will make it: a
// pending request past its expiry is expired.
const effectiveStateSQL = `CASE WHEN r.state = 'pending' AND r.expires_at <= now() THEN 'expired' ELSE r.state END`

const listRequestsSQL = `SELECT ` + requestInfoColumns + `
FROM requests r JOIN agents a ON a.id = r.agent_id JOIN users u ON u.id = r.user_id
WHERE ($1 = '' OR ` + effectiveStateSQL + ` = $1)
	AND ($2 = '' OR r.agent_id = $2)
	AND ($3 = '' OR r.user_id = $3 OR u.email = lower($3))
	AND ($4 = '' OR $4 = ANY(r.types))
	AND ($5::timestamptz IS NULL OR r.created_at >= $5)
	AND ($6::timestamptz IS NULL OR r.created_at < $6)
ORDER BY r.created_at DESC, r.id
LIMIT $7`

// ListRequests lists the requests f selects, newest first. An unknown
// state, a negative or too large limit, or Until not after Since is
// ErrInvalidInput.
func (s *Service) ListRequests(ctx context.Context, f RequestFilter) ([]RequestInfo, error) {
	if f.State != "" && !knownState(f.State) {
		return nil, invalid("state %q is not one of %s", f.State, strings.Join(stateNames(), ", "))
	}
	switch {
	case f.Limit < 0 || f.Limit > MaxListLimit:
		return nil, invalid("the limit is 1 to %d", MaxListLimit)
	case f.Limit == 0:
		f.Limit = DefaultListLimit
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return nil, invalid("until must be after since")
	}
	out := []RequestInfo{}
	if err := s.store.db.SelectContext(ctx, &out, listRequestsSQL, string(f.State), f.AgentID, f.User, f.Type,
		nullTime(f.Since), nullTime(f.Until), f.Limit); err != nil {
		return nil, fmt.Errorf("approvals: list requests: %w", translate(err))
	}
	return out, nil
}

var allStates = []State{StatePending, StateApproved, StateDenied, StateExpired, StateCancelled, StateTokenIssued,
	StateRedeemed, StateRevoked}

func knownState(st State) bool {
	for _, k := range allStates {
		if k == st {
			return true
		}
	}
	return false
}

func stateNames() []string {
	out := make([]string, len(allStates))
	for i, st := range allStates {
		out[i] = string(st)
	}
	return out
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Describe says in one line what event e of a request's timeline records,
// from its kind and body.
func Describe(e TimelineEvent) string {
	var b map[string]any
	_ = json.Unmarshal(e.Body, &b)
	str := func(k string) string {
		switch v := b[k].(type) {
		case string:
			return v
		case float64:
			return fmt.Sprint(v)
		case bool:
			return fmt.Sprint(v)
		case []any:
			parts := make([]string, len(v))
			for i, x := range v {
				parts[i] = fmt.Sprint(x)
			}
			return strings.Join(parts, ",")
		}
		return ""
	}
	opt := func(format, k string) string {
		if v := str(k); v != "" {
			return fmt.Sprintf(format, v)
		}
		return ""
	}
	switch e.Kind {
	case KindRequestCreated:
		if v := str("policy_version"); v != "" && v != "0" {
			return fmt.Sprintf("asked for %s; policy version %s, rule %q: %s%s", str("types"), v, str("rule"),
				str("outcome"), opt(" (%s)", "reason"))
		}
		return fmt.Sprintf("asked for %s; decided without a policy rule: %s%s", str("types"), str("outcome"), opt(" (%s)", "reason"))
	case KindRequestApproved:
		return "approved" + opt(", acr %s", "acr") + opt(", amr %s", "amr")
	case KindRequestDenied:
		return "denied" + opt(": %s", "reason")
	case KindRequestExpired:
		return "expired undecided"
	case KindRequestCancelled:
		return "cancelled by the agent"
	case KindRequestViewed:
		return "consent page viewed" + opt(" in session %s", "session") + opt(" (the request was %s)", "state")
	case KindReviewRecorded:
		s := "reviewed: " + str("verdict") + opt(", amr %s", "amr") + opt(", groups %s", "groups") + opt(", reason %q", "reason")
		if str("evidence_id") != "" {
			s += ", with step-up evidence " + str("evidence_id")
		}
		return s
	case KindEvidenceRecorded:
		return fmt.Sprintf("step-up evidence %s stored: passkey %s signed details hash %s%s, assertion sha256 %s",
			str("evidence_id"), str("credential_id"), str("details_hash"), opt(" (amr %s)", "amr"), str("assertion_sha256"))
	case KindNotificationQueued:
		return str("channel") + opt(" %q", "message") + " queued" + opt(" for device %s", "device") + opt(" (outbox row %s)", "outbox_id")
	case KindNotificationSent:
		return str("channel") + " delivered" + opt(" to device %s", "device") + opt(", attempt %s", "attempt") + opt(", HTTP %s", "status") +
			opt(" (outbox row %s)", "outbox_id")
	case KindNotificationFailed:
		s := str("channel") + " failed" + opt(", attempt %s", "attempt") + opt(": %s", "error") + opt(" (HTTP %s)", "status")
		if str("final") == "true" {
			s += opt(", given up: %s", "reason")
		} else {
			s += opt(", retry in %s s", "retry_in_seconds")
		}
		return s + opt(" (outbox row %s)", "outbox_id")
	case KindNotificationDropped:
		return str("channel") + " dropped unsent" + opt(": %s", "reason") + opt(" (outbox row %s)", "outbox_id")
	case KindTokenIssued:
		return "token issued" + opt(", jti %s", "jti") + opt(", expires %s", "expires_at") + opt(", audience %s", "audience")
	case KindTokenRedeemed:
		return "token redeemed" + opt(", jti %s", "jti")
	case KindTokenRevoked:
		return "token revoked" + opt(", jti %s", "jti") + opt(": %s", "reason")
	case KindAgentReported:
		s := "reported as not theirs (\"this wasn't me\")"
		if str("suspended") == "true" {
			s += "; the agent was suspended"
		}
		if d, ok := b["denied"].([]any); ok {
			s += fmt.Sprintf("; %d pending request(s) denied", len(d))
		}
		return s
	}
	return e.Kind + " " + string(e.Body)
}

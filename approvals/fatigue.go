package approvals

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jmoiron/sqlx"
)

// Fatigue are the approval-fatigue guards (SPEC §5): limits that keep one
// agent from burying a person in requests until they approve without
// reading. A zero field turns its guard off.
type Fatigue struct {
	// JoinIdentical makes a call identical to a live pending request (same
	// agent, user and details hash) join it: the same auth_req_id, one
	// decision, one token. The request keeps its first call's binding
	// message and client_notification_token.
	JoinIdentical bool
	// MaxPendingPerAgent and MaxPendingPerUser bound the live pending
	// requests of one agent and for one user: over either, /bc-authorize
	// answers access_denied with a Retry-After of when the oldest of them
	// expires.
	MaxPendingPerAgent int
	MaxPendingPerUser  int
	// SuspendAfterDenials suspends an agent once people have denied that
	// many of its requests within SuspendWindow ("this wasn't me" suspends
	// at once).
	SuspendAfterDenials int
	SuspendWindow       time.Duration
	// PushesPerMinute bounds the new-request pushes one person's devices
	// get a minute; past it a request waits in the inbox unannounced.
	PushesPerMinute int
}

// DefaultFatigue are the guards of a server that sets none.
var DefaultFatigue = Fatigue{JoinIdentical: true, MaxPendingPerAgent: 200, MaxPendingPerUser: 50, SuspendAfterDenials: 5, SuspendWindow: time.Hour,
	PushesPerMinute: 10}

// pendingIdenticalSQL finds a live pending request of agent $1 for user $2
// with details hash $3: a second identical call joins it. Only while both
// are active: the registrations may come from a cache, and a suspended
// agent or user is refused by the insert that follows instead.
const pendingIdenticalSQL = `
SELECT ` + requestColumns + ` FROM requests
WHERE agent_id = $1 AND user_id = $2 AND details_hash = $3 AND state = 'pending' AND expires_at > now()
	AND EXISTS (SELECT 1 FROM agents WHERE id = $1 AND status = 'active')
	AND EXISTS (SELECT 1 FROM users WHERE id = $2 AND status = 'active')
ORDER BY created_at LIMIT 1`

// pendingCountsSQL counts the live pending requests of agent $1 and of user
// $2, with the seconds until the oldest of each expires.
const pendingCountsSQL = `
SELECT
	(SELECT count(*) FROM requests WHERE agent_id = $1 AND state = 'pending' AND expires_at > now()) AS agent_n,
	(SELECT coalesce(extract(epoch FROM min(expires_at) - now()), 0) FROM requests
		WHERE agent_id = $1 AND state = 'pending' AND expires_at > now()) AS agent_wait,
	(SELECT count(*) FROM requests WHERE user_id = $2 AND state = 'pending' AND expires_at > now()) AS user_n,
	(SELECT coalesce(extract(epoch FROM min(expires_at) - now()), 0) FROM requests
		WHERE user_id = $2 AND state = 'pending' AND expires_at > now()) AS user_wait`

// guardPending runs, under the admission's locks (see admissionKeys: the
// agent's and the user's under a pending limit, else the identical
// request's), before a request that waits for people is stored: an identical live
// pending request is returned (the caller joins it instead), and a request
// over a pending limit is refused.
func (s *Service) guardPending(ctx context.Context, q sqlx.QueryerContext, r Request) (*Request, error) {
	f := s.fatigue
	if f.JoinIdentical {
		var same Request
		err := s.store.pendingIdenticalStmt.get(ctx, s.store.db, q, &same, r.AgentID, r.UserID, r.DetailsHash)
		if err == nil {
			return &same, nil
		}
		if err = translate(err); !errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("approvals: admission: %w", err)
		}
	}
	if f.MaxPendingPerAgent == 0 && f.MaxPendingPerUser == 0 {
		return nil, nil
	}
	var c struct {
		AgentN    int     `db:"agent_n"`
		AgentWait float64 `db:"agent_wait"`
		UserN     int     `db:"user_n"`
		UserWait  float64 `db:"user_wait"`
	}
	if err := s.store.pendingCountsStmt.get(ctx, s.store.db, q, &c, r.AgentID, r.UserID); err != nil {
		return nil, fmt.Errorf("approvals: admission: %w", err)
	}
	over := func(who string, n, limit int, wait float64) error {
		s.logger.WarnContext(ctx, "request refused: too many pending requests", "agent", r.AgentID, "user", r.UserID,
			"for", who, "pending", n, "limit", limit)
		ref := refuse(CodeAccessDenied, fmt.Sprintf("too many pending requests %s (%d, the limit is %d); try again when one is decided or expires", who, n, limit))
		ref.RetryAfter = max(1, int(math.Ceil(wait)))
		return ref
	}
	switch {
	case f.MaxPendingPerAgent > 0 && c.AgentN >= f.MaxPendingPerAgent:
		return nil, over("of this client", c.AgentN, f.MaxPendingPerAgent, c.AgentWait)
	case f.MaxPendingPerUser > 0 && c.UserN >= f.MaxPendingPerUser:
		return nil, over("for this user", c.UserN, f.MaxPendingPerUser, c.UserWait)
	}
	return nil, nil
}

// deniedRecentlySQL counts agent $1's requests denied by a person in the
// last $2 seconds, after locking the agent's row so that concurrent denials
// of one agent count each other.
const deniedRecentlySQL = `
WITH a AS (SELECT id FROM agents WHERE id = $1 AND status = 'active' FOR UPDATE)
SELECT count(*) FROM requests r JOIN a ON r.agent_id = a.id
WHERE r.state = 'denied' AND r.decided_by IS NOT NULL AND r.decided_at > now() - make_interval(secs => $2)`

// suspendIfDenied suspends agentID, in the change of a person's denial,
// when people have denied SuspendAfterDenials of its requests within
// SuspendWindow. It reports whether it did.
func (s *Service) suspendIfDenied(ctx context.Context, t *Tx, agentID string) (bool, error) {
	f := s.fatigue
	if f.SuspendAfterDenials == 0 {
		return false, nil
	}
	var n int
	if err := t.GetContext(ctx, &n, deniedRecentlySQL, agentID, f.SuspendWindow.Seconds()); err != nil {
		return false, fmt.Errorf("approvals: denial count: %w", err)
	}
	if n < f.SuspendAfterDenials {
		return false, nil
	}
	var got struct {
		ID     string `db:"id"`
		Before string `db:"before_status"`
	}
	if err := t.GetContext(ctx, &got, setAgentStatusSQL, agentID, "suspended"); err != nil {
		return false, fmt.Errorf("approvals: suspend %s: %w", agentID, translate(err))
	}
	if got.Before == "suspended" {
		return false, nil
	}
	reason := fmt.Sprintf("%d requests denied within %s", n, f.SuspendWindow)
	if err := revokeTokensOf(ctx, t, "agent", agentID, ActorServer, "agent suspended: "+reason); err != nil {
		return false, err
	}
	t.record(Event{Kind: KindAgentSuspended, Actor: ActorServer, AgentID: &agentID,
		Body: mustJSON(map[string]any{"before": map[string]string{"status": got.Before},
			"after": map[string]string{"status": "suspended"}, "reason": reason, "automatic": true})})
	return true, nil
}

// guardsPending says whether a request that waits for people passes a
// guard before it is stored.
func (f Fatigue) guardsPending() bool {
	return f.JoinIdentical || f.limitsPending()
}

// limitsPending reports whether the number of pending requests of an agent
// or for a user is bounded.
func (f Fatigue) limitsPending() bool {
	return f.MaxPendingPerAgent > 0 || f.MaxPendingPerUser > 0
}

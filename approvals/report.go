package approvals

import (
	"context"
	"fmt"
)

// ReportReason is the decision reason of the requests a report denies.
const ReportReason = "the user reported that they did not ask for this"

// reportDenySQL denies every pending request of agent $1 for user $2 (the
// reported one among them), keeping each one's notification token for its
// ping.
const reportDenySQL = `
WITH before AS (
	SELECT id AS before_id, client_notification_token AS before_token FROM requests
	WHERE agent_id = $1 AND user_id = $2 AND state = 'pending'
		AND velocity_lock_shared(agent_id, user_id, types) -- migration 00021
	FOR UPDATE
)
UPDATE requests
SET version = version + 1, state = 'denied', decided_at = now(), decided_by = $2, decision_reason = $3,
	client_notification_token = NULL
FROM before
WHERE id = before_id
RETURNING before_token, ` + requestColumns

// Report is a person's "this wasn't me" on request id: the agent that made
// it is suspended until an admin resumes it (its tokens revoked), the
// report is recorded, and the agent's pending requests for this person are
// denied — one change. Only the request's own user may report it, and only
// while it is pending and live (ErrAlreadyDecided, ErrExpired); for anyone
// else the request does not exist (ErrNotFound).
func (s *Service) Report(ctx context.Context, id string, user User) error {
	if _, ok := parseUUID(id); !ok || user.Status != "active" {
		return fmt.Errorf("approvals: report %s: %w", id, ErrNotFound)
	}
	actor := ActorUser(user.ID)
	err := s.store.change(ctx, func(t *Tx) error {
		var cur struct {
			AgentID string `db:"agent_id"`
			State   State  `db:"state"`
			Live    bool   `db:"live"`
		}
		if err := t.GetContext(ctx, &cur, `SELECT agent_id, state, expires_at > now() AS live FROM requests WHERE id = $1 AND user_id = $2 FOR UPDATE`,
			id, user.ID); err != nil {
			return fmt.Errorf("approvals: report %s: %w", id, translate(err))
		}
		// A report answers a request that waits: one decided or expired
		// already has had its answer.
		switch {
		case cur.State != StatePending:
			return fmt.Errorf("approvals: report %s: %w: request is %s", id, ErrAlreadyDecided, cur.State)
		case !cur.Live:
			return fmt.Errorf("approvals: report %s: %w", id, ErrExpired)
		}
		agentID := cur.AgentID
		var got struct {
			ID     string `db:"id"`
			Before string `db:"before_status"`
		}
		if err := t.GetContext(ctx, &got, setAgentStatusSQL, agentID, "suspended"); err != nil {
			return fmt.Errorf("approvals: report %s: %w", id, translate(err))
		}
		report := len(t.events)
		t.record(Event{Kind: KindAgentReported, Actor: actor, RequestID: &id, AgentID: &agentID, UserID: &user.ID})
		if got.Before != "suspended" {
			if err := revokeTokensOf(ctx, t, "agent", agentID, actor, "agent reported by a user"); err != nil {
				return err
			}
			t.record(Event{Kind: KindAgentSuspended, Actor: actor, AgentID: &agentID,
				Body: mustJSON(map[string]any{"before": map[string]string{"status": got.Before},
					"after": map[string]string{"status": "suspended"}, "reason": "reported by a user"})})
		}
		var rows []struct {
			BeforeToken *string `db:"before_token"`
			Request
		}
		if err := t.SelectContext(ctx, &rows, reportDenySQL, agentID, user.ID, ReportReason); err != nil {
			return fmt.Errorf("approvals: report %s: %w", id, translate(err))
		}
		denied := []string{}
		for _, r := range rows {
			t.record(newEvent(KindRequestDenied, actor, r.Request, map[string]any{"reason": ReportReason}))
			t.ping(r.Request, r.BeforeToken)
			t.pushDecided(r.Request.ID)
			denied = append(denied, r.Request.ID)
		}
		// The report says what it did: whether it suspended the agent (it
		// may have been suspended already) and which requests it denied.
		t.events[report].Body = mustJSON(map[string]any{"request_id": id, "reason": ReportReason,
			"suspended": got.Before != "suspended", "agent_status_before": got.Before, "denied": denied})
		return nil
	})
	if err != nil {
		return err
	}
	s.logger.WarnContext(ctx, "agent reported and suspended", "request", id, "user", user.ID)
	return nil
}

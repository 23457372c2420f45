package approvals

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Tx is one change of state in progress: a transaction on one connection.
// Its guarded statements run on it; the events and outbox rows recorded on it
// are written just before it commits, in one statement, so a change that
// fails or is refused writes none of them. Everything a change reads, it
// reads through Tx too: a transaction never takes a second pool connection.
type Tx struct {
	*sqlx.Tx
	// flushStmt is the store's prepared flushSQL (nil: run its text).
	flushStmt *prepared
	events    []Event
	pings     []pingRow
	decided   []string // requests whose people's devices hear they are decided
	// The velocity read in the change, with the requests it stored since
	// (see Store.recent).
	recent map[recentKey]*recentRead
}

// pingRow is a CIBA ping callback (CIBA §10.2) to enqueue for a request: to
// its agent's notification endpoint, with the client_notification_token as
// the bearer credential, until the request expires.
type pingRow struct {
	RequestID string    `json:"request_id"`
	AgentID   string    `json:"agent_id"`
	Bearer    string    `json:"bearer"`
	ExpiresAt time.Time `json:"expires_at"`
}

// record adds events to the change.
func (t *Tx) record(events ...Event) { t.events = append(t.events, events...) }

// ping enqueues the ping callback for r, if r's agent uses ping delivery and
// r carried a client_notification_token (bearer).
func (t *Tx) ping(r Request, bearer *string) {
	if bearer == nil || *bearer == "" {
		return
	}
	t.pings = append(t.pings, pingRow{RequestID: r.ID, AgentID: r.AgentID, Bearer: *bearer, ExpiresAt: r.ExpiresAt})
}

// pushDecided tells the devices that were notified of request id that it is
// decided, which closes its notification there.
func (t *Tx) pushDecided(id string) { t.decided = append(t.decided, id) }

// flushSQL writes a change's events and outbox rows in one statement. A ping
// row is enqueued only for an agent registered for ping delivery; a decided
// request's "decided" push goes to each device its "new" push went to (the
// push's Topic makes it replace that one where it still waits), and the
// "new" pushes not yet sent are dropped.
var flushSQL = `
WITH ev AS (` + insertEventsSQL + `
	RETURNING id
), ping AS (
	INSERT INTO outbox (kind, request_id, target, bearer, expires_at)
	SELECT 'ping', p.request_id, a.notify_url, p.bearer, p.expires_at
	FROM jsonb_to_recordset($2::jsonb) AS p(request_id uuid, agent_id text, bearer text, expires_at timestamptz)
	-- One agent looked up by its key per ping (OFFSET 0 keeps the planner
	-- from joining the whole agents table to the pings, which it guesses
	-- are a hundred: a sequential scan of every agent per decision).
	CROSS JOIN LATERAL (SELECT notify_url FROM agents
		WHERE id = p.agent_id AND delivery_mode = 'ping' AND notify_url IS NOT NULL OFFSET 0) a
	RETURNING id, kind, request_id, subscription_id, payload
), decided AS (
	INSERT INTO outbox (kind, request_id, target, payload, expires_at, subscription_id)
	SELECT 'push', o.request_id, o.target,
		jsonb_build_object('type', 'decided', 'request_id', o.request_id, 'url', '/approve/' || o.request_id),
		greatest(o.expires_at, now() + interval '1 minute'), o.subscription_id
	FROM outbox o
	WHERE o.request_id = ANY($3::uuid[]) AND o.kind = 'push' AND o.payload->>'type' = 'new'
	ON CONFLICT DO NOTHING
	RETURNING id, kind, request_id, subscription_id, payload
), superseded AS (
	UPDATE outbox SET dropped_at = now(), drop_reason = 'superseded', lease_until = NULL
	-- The decided requests' pushes, found by request: "open" is written
	-- as one coalesce so that it does not match the partial index of the
	-- open rows, which the planner would otherwise walk whole for them.
	WHERE request_id = ANY($3::uuid[]) AND kind = 'push' AND payload->>'type' = 'new'
		AND coalesce(delivered_at, dropped_at) IS NULL AND (lease_until IS NULL OR lease_until <= now())
	RETURNING id, kind, request_id, subscription_id, attempts, drop_reason
), queued AS (` + queuedEventsSQL + `
	FROM (SELECT * FROM ping UNION ALL SELECT * FROM decided) q ` + RequestOfSQL("q") + `
	WHERE (SELECT count(*) FROM ev) >= 0 -- after the change's own events
), dropped AS (` + DroppedEventsSQL + `
	FROM superseded d ` + RequestOfSQL("d") + `
	WHERE (SELECT count(*) FROM ev) >= 0
)
SELECT 1`

func (t *Tx) flush(ctx context.Context) error {
	switch {
	case len(t.events) == 0 && len(t.pings) == 0 && len(t.decided) == 0:
		return nil
	case len(t.pings) == 0 && len(t.decided) == 0:
		return writeEvents(ctx, t.Tx, t.events)
	}
	ev, err := json.Marshal(nonNilSlice(t.events))
	if err != nil {
		return fmt.Errorf("approvals: events: %w", err)
	}
	pings, err := json.Marshal(nonNilSlice(t.pings))
	if err != nil {
		return fmt.Errorf("approvals: outbox: %w", err)
	}
	args := []any{string(ev), string(pings), pq.StringArray(nonNil(t.decided))}
	if t.flushStmt != nil {
		_, err = t.flushStmt.execTx(ctx, t, args...)
	} else {
		_, err = t.ExecContext(ctx, flushSQL, args...)
	}
	if err != nil {
		return fmt.Errorf("approvals: events and outbox: %w", translate(err))
	}
	return nil
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// change runs fn as one change of state (see Tx) and commits it. An error
// from fn rolls everything back.
func (s *Store) change(ctx context.Context, fn func(*Tx) error) error {
	s.warm(ctx, &s.flushStmt)
	return inTx(ctx, s.db, &s.flushStmt, fn)
}

// inTx runs fn as one change on db; its events and outbox rows are written
// by flush, the store's prepared flushSQL (nil: its text, unprepared).
func inTx(ctx context.Context, db *sqlx.DB, flush *prepared, fn func(*Tx) error) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("approvals: begin: %w", err)
	}
	defer tx.Rollback()
	t := &Tx{Tx: tx, flushStmt: flush}
	if err := fn(t); err != nil {
		return err
	}
	if err := t.flush(ctx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%w: %w", errCommit, translate(err))
	}
	return nil
}

// Package notify delivers outbound work — CIBA ping callbacks now, Web Push
// later — from a PostgreSQL outbox. Rows are written by the domain in the same
// statement as the event that causes them (approvals.Store.Decide), claimed
// by the worker of any replica with FOR UPDATE SKIP LOCKED under a lease,
// retried with backoff until they expire, and delivered at least once.
package notify

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/countersign/countersign/approvals"
)

// Kinds of outbox rows.
const (
	KindPing = "ping" // CIBA §10.2 ping callback
	KindPush = "push" // Web Push to a person's device (RFC 8030)
)

// Reasons a row is dropped undelivered (outbox.drop_reason).
const (
	DropRejected   = "rejected"         // the target answered 4xx: not retried
	DropRedirected = "redirected"       // the target answered 3xx: never followed (CIBA §10.2)
	DropForbidden  = "forbidden_target" // the target is not https or not a public address
	DropExpired    = "expired"          // the request expired before delivery succeeded
	DropInvalid    = "invalid"          // the row cannot be sent (no bearer, bad request id)
)

// row is one claimed outbox row.
type row struct {
	ID        int64   `db:"id"`
	Kind      string  `db:"kind"`
	RequestID string  `db:"request_id"`
	Target    string  `db:"target"`
	Payload   []byte  `db:"payload"`
	Bearer    *string `db:"bearer"`
	// SubscriptionID is a push row's device (nil once it was removed).
	SubscriptionID *string   `db:"subscription_id"`
	Attempts       int       `db:"attempts"`
	Duplicates     int       `db:"duplicates"`
	ExpiresAt      time.Time `db:"expires_at"`
	LeaseUntil     time.Time `db:"lease_until"`
	// Reclaimed is set when the previous claim of this row ran out without a
	// result: that attempt may have been delivered.
	Reclaimed bool `db:"reclaimed"`
}

// LogValue keeps the bearer credential out of logs.
func (r row) LogValue() slog.Value {
	return slog.GroupValue(slog.Int64("id", r.ID), slog.String("kind", r.Kind), slog.String("request", r.RequestID),
		slog.Int("attempt", r.Attempts))
}

// claimSQL leases up to $1 due rows of the kinds $3 for $2 seconds, but none
// for the targets $4 (those this worker is busy with). SKIP LOCKED
// keeps concurrent workers off each other's rows, and the lease keeps them off
// rows being sent once this statement has committed; a row whose lease has run
// out is due again (its worker died), and that claim is counted as a possible
// duplicate.
const claimSQL = `
WITH due AS (
	SELECT id, lease_until IS NOT NULL AS reclaimed
	FROM outbox
	WHERE delivered_at IS NULL AND dropped_at IS NULL AND kind = ANY($3)
		AND next_attempt_at <= now() AND expires_at > now()
		AND (lease_until IS NULL OR lease_until <= now())
		AND NOT (target = ANY($4))
	ORDER BY next_attempt_at
	LIMIT $1
	FOR UPDATE SKIP LOCKED
)
UPDATE outbox o
SET lease_until = now() + make_interval(secs => $2),
	attempts = o.attempts + 1,
	duplicates = o.duplicates + due.reclaimed::int
FROM due
WHERE o.id = due.id
RETURNING o.id, o.kind, o.request_id, o.target, o.payload, o.bearer, o.subscription_id, o.attempts, o.duplicates, o.expires_at,
	o.lease_until, due.reclaimed`

func claim(ctx context.Context, db *sqlx.DB, limit int, lease time.Duration, kinds, busy []string) ([]row, error) {
	var rows []row
	if busy == nil {
		busy = []string{}
	}
	if err := db.SelectContext(ctx, &rows, claimSQL, limit, lease.Seconds(), pq.StringArray(kinds), pq.StringArray(busy)); err != nil {
		return nil, fmt.Errorf("notify: claim: %w", err)
	}
	return rows, nil
}

// The result of an attempt is recorded only while the row still carries this
// worker's lease ($2): if the lease ran out and another worker claimed the row,
// that worker's result counts. The statement that records it writes its
// audit event too (notification.sent or notification.failed), so the trail
// holds exactly the results that count.
var (
	deliveredSQL = `
WITH o AS (
	UPDATE outbox SET delivered_at = now(), bearer = NULL, lease_until = NULL
	WHERE id = $1 AND lease_until = $2
	RETURNING id, kind, request_id, subscription_id, attempts
), ev AS (` + attemptEventSQL(approvals.KindNotificationSent, `'status', NULLIF($3::int, 0)`) + `)
SELECT count(*) FROM o`

	droppedSQL = `
WITH o AS (
	UPDATE outbox SET dropped_at = now(), drop_reason = $3, last_error = $4, bearer = NULL, lease_until = NULL
	WHERE id = $1 AND lease_until = $2
	RETURNING id, kind, request_id, subscription_id, attempts
), ev AS (` + attemptEventSQL(approvals.KindNotificationFailed,
		`'status', NULLIF($5::int, 0), 'error', $6::text, 'final', true, 'reason', $3::text`) + `)
SELECT count(*) FROM o`

	retrySQL = `
WITH o AS (
	UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $3), last_error = $4, lease_until = NULL
	WHERE id = $1 AND lease_until = $2
	RETURNING id, kind, request_id, subscription_id, attempts
), ev AS (` + attemptEventSQL(approvals.KindNotificationFailed,
		`'status', NULLIF($5::int, 0), 'error', $6::text, 'final', false, 'retry_in_seconds', ceil($3::float8)::int`) + `)
SELECT count(*) FROM o`
)

// attemptEventSQL is the event of the attempt on the outbox row o: kind,
// with its channel, row, device and attempt, and the fields of extra.
func attemptEventSQL(kind, extra string) string {
	return `
	INSERT INTO audit_events (kind, actor, request_id, agent_id, user_id, body)
	SELECT '` + kind + `', '` + approvals.ActorNotify + `', o.request_id, r.agent_id, r.user_id,
		jsonb_strip_nulls(jsonb_build_object('channel', o.kind, 'outbox_id', o.id, 'device', o.subscription_id,
			'attempt', o.attempts, ` + extra + `))
	FROM o ` + approvals.RequestOfSQL("o")
}

// outcome is what one attempt came to.
type outcome struct {
	delivered bool
	drop      string        // a Drop* reason, or ""
	retryIn   time.Duration // when neither delivered nor dropped
	status    int           // the HTTP status, 0 when there was no answer
	err       string        // for last_error; never holds a credential
}

// class names what went wrong with an attempt that was not delivered, for
// its audit event: the drop reason, "http_status" for an answer that is
// retried, "timeout" or "connection" when there was none. Unlike err it
// holds nothing the target chose (no host, no message).
func (o outcome) class() string {
	switch {
	case o.delivered:
		return ""
	case o.drop != "":
		return o.drop
	case o.status != 0:
		return "http_status"
	case strings.HasPrefix(o.err, "timeout"):
		return "timeout"
	}
	return "connection"
}

// record stores o for r, with its event. It reports false when r's lease
// was lost.
func record(ctx context.Context, db *sqlx.DB, r row, o outcome) (bool, error) {
	var q string
	args := []any{r.ID, r.LeaseUntil}
	switch {
	case o.delivered:
		q, args = deliveredSQL, append(args, o.status)
	case o.drop != "":
		q, args = droppedSQL, append(args, o.drop, o.err, o.status, o.class())
	default:
		q, args = retrySQL, append(args, o.retryIn.Seconds(), o.err, o.status, o.class())
	}
	var n int
	if err := db.GetContext(ctx, &n, q, args...); err != nil {
		return false, fmt.Errorf("notify: record attempt on outbox row %d: %w", r.ID, err)
	}
	return n == 1, nil
}

// expireSQL drops open rows whose request has expired, unless a worker holds
// them (its result is recorded first, and the next pass drops them).
var expireSQL = `
WITH x AS (
	UPDATE outbox SET dropped_at = now(), drop_reason = 'expired', bearer = NULL, lease_until = NULL
	WHERE id IN (
		SELECT id FROM outbox
		WHERE delivered_at IS NULL AND dropped_at IS NULL AND expires_at <= now()
			AND (lease_until IS NULL OR lease_until <= now())
		LIMIT 500
		FOR UPDATE SKIP LOCKED
	)
	RETURNING id, kind, request_id, subscription_id, attempts, last_error, drop_reason
), ev AS (` + approvals.DroppedEventsSQL + `
	FROM x d ` + approvals.RequestOfSQL("d") + `
)
SELECT id, kind, request_id, attempts, last_error FROM x`

type expired struct {
	ID        int64  `db:"id"`
	Kind      string `db:"kind"`
	RequestID string `db:"request_id"`
	Attempts  int    `db:"attempts"`
	LastError string `db:"last_error"`
}

func expire(ctx context.Context, db *sqlx.DB) ([]expired, error) {
	var out []expired
	if err := db.SelectContext(ctx, &out, expireSQL); err != nil {
		return nil, fmt.Errorf("notify: drop expired: %w", err)
	}
	return out, nil
}

// releaseSQL gives a claimed row back unsent: the attempt is not counted
// (a possible duplicate already counted stays counted).
const releaseSQL = `UPDATE outbox SET lease_until = NULL, attempts = attempts - 1 WHERE id = $1 AND lease_until = $2`

// release gives claimed row r back, for any worker to claim now; a
// failure leaves it to its lease.
func release(ctx context.Context, db *sqlx.DB, r row) {
	_, _ = db.ExecContext(ctx, releaseSQL, r.ID, r.LeaseUntil)
}

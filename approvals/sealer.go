package approvals

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/approvals/audit"
)

// SealBatch is how many events one sealed batch holds at most.
const SealBatch = 5000

// sealerLockSQL takes the sealer's leadership: a session advisory lock,
// held by the leader's connection until it closes, so at most one sealer
// runs across replicas and a dead leader's lock goes with its session.
const sealerLockSQL = `SELECT pg_try_advisory_lock(hashtextextended('countersign audit sealer', 0))`

// Sealer seals committed audit events into the hash chain (package audit)
// in batches, each ending with a signed checkpoint. Run it on every replica:
// one leads at a time, the others wait to take over.
type Sealer struct {
	db      *sqlx.DB
	keys    *KeyStore
	logger  *slog.Logger
	name    string
	batch   int
	metrics *sealerMetrics
	// interval is Run's; the leader's session ends on the server when it
	// has been idle for ten of them.
	interval time.Duration
}

// NewSealer returns the sealer of s's database; name says which process
// seals (host/pid) in the checkpoints it writes. reg, when not nil, gets
// its metrics.
func (s *Service) NewSealer(name string, reg prometheus.Registerer) *Sealer {
	return &Sealer{db: s.store.db, keys: s.keys, logger: s.logger, name: name, batch: SealBatch,
		metrics: newSealerMetrics(reg)}
}

// Run seals every interval until ctx ends.
func (z *Sealer) Run(ctx context.Context, interval time.Duration) {
	z.interval = interval
	t := time.NewTicker(interval)
	defer t.Stop()
	var conn *sqlx.Conn
	defer func() {
		if conn != nil {
			z.resign(conn)
		}
	}()
	for {
		if conn == nil {
			conn = z.lead(ctx)
		}
		if conn != nil {
			for {
				n, err := z.SealOnce(ctx, conn)
				if err != nil {
					if ctx.Err() == nil {
						z.metrics.failed()
						z.logger.ErrorContext(ctx, "audit sealer: batch failed; giving up the lead (events stay unsealed until a batch succeeds)", "err", err)
					}
					z.resign(conn)
					conn = nil
					break
				}
				if n < z.batch {
					break
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lead returns a connection holding the sealer's lock, or nil when another
// process holds it.
func (z *Sealer) lead(ctx context.Context) *sqlx.Conn {
	conn, err := z.db.Connx(ctx)
	if err != nil {
		return nil
	}
	var got bool
	if err := conn.QueryRowContext(ctx, sealerLockSQL).Scan(&got); err != nil {
		z.discard(conn)
		return nil
	}
	if !got {
		_ = conn.Close() // no lock taken: the connection goes back to the pool
		return nil
	}
	// A leader whose host dies without closing its connection would hold
	// the lock until the server noticed: these end its session on the
	// server once it has been silent for ten intervals (at least 30 s) or
	// its TCP peer stops answering. Servers without a setting ignore it.
	idle := max(30*time.Second, 10*z.interval)
	for _, set := range []string{
		fmt.Sprintf("SET idle_session_timeout = %d", idle.Milliseconds()),
		"SET tcp_keepalives_idle = 10", "SET tcp_keepalives_interval = 5", "SET tcp_keepalives_count = 3",
	} {
		if _, err := conn.ExecContext(ctx, set); err != nil {
			z.logger.DebugContext(ctx, "audit sealer: session setting refused", "setting", set, "err", err)
		}
	}
	z.logger.InfoContext(ctx, "audit sealer: leading", "sealer", z.name)
	z.metrics.setLeader(true)
	return conn
}

// resign gives up the lead by closing the session that holds the lock.
func (z *Sealer) resign(conn *sqlx.Conn) {
	z.metrics.setLeader(false)
	z.discard(conn)
}

// discard closes conn's session rather than returning it to the pool, so no
// session lock outlives it.
func (z *Sealer) discard(conn *sqlx.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}

// lastCheckpointSQL reads the chain's tail: every batch ends with its
// checkpoint, so the last checkpoint is the chain's last position and hash.
const lastCheckpointSQL = `SELECT position, head, horizon::text AS horizon, sealed_at FROM audit_checkpoints ORDER BY position DESC LIMIT 1`

// atTextSQL is an event's time as its sealed form writes it (audit.TimeFormat),
// made by the database so that any stored value reads the same everywhere
// (±infinity as PostgreSQL spells it).
const atTextSQL = `CASE WHEN isfinite(e.at) THEN to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') ELSE e.at::text END`

// unsealedSQL selects the committed events not yet in the chain, oldest
// transaction first. Events whose transaction is older than the last
// checkpoint's horizon ($1) are all sealed, and events of transactions the
// snapshot cannot have seen begin ($2, its xmax: rows restored from another
// cluster) are not looked at either.
const unsealedSQL = `
SELECT e.id, ` + atTextSQL + ` AS at_text, CASE WHEN isfinite(e.at) THEN e.at END AS at_finite,
	e.kind, e.actor, e.request_id, e.agent_id, e.user_id, e.subject, e.body, e.xid::text
FROM audit_events e
WHERE e.xid >= $1::xid8 AND e.xid < $2::xid8 AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id)
ORDER BY e.xid, e.id
LIMIT $3`

const insertChainSQL = `
INSERT INTO audit_chain (position, event_id, hash)
SELECT (r->>0)::bigint, (r->>1)::bigint, decode(r->>2, 'hex')
FROM jsonb_array_elements($1::jsonb) AS r`

const insertCheckpointSQL = `
INSERT INTO audit_checkpoints (position, head, horizon, sealed_at, sealer, kid, jws)
VALUES ($1, $2, $3::xid8, $4, $5, $6, $7)`

type tail struct {
	Position int64      `db:"position"`
	Head     []byte     `db:"head"`
	Horizon  string     `db:"horizon"`
	SealedAt *time.Time `db:"sealed_at"`
}

// lateSlack is how much older than the previous checkpoint an event may be
// dated before the sealer says so: a backdated row written straight into
// the database is sealed like any other, and this is how it shows.
const lateSlack = time.Minute

// SealOnce seals one batch on conn, which must hold the sealer's lock, and
// returns how many events it sealed.
func (z *Sealer) SealOnce(ctx context.Context, conn *sqlx.Conn) (int, error) {
	kid, key, err := z.keys.auditSigner(ctx)
	if err != nil {
		return 0, err
	}
	// One snapshot for the whole batch: the horizon is read in the same
	// snapshot as the events it vouches for.
	tx, err := conn.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return 0, fmt.Errorf("approvals: sealer: %w", err)
	}
	defer tx.Rollback()
	t := tail{Horizon: "0"}
	if err := tx.GetContext(ctx, &t, lastCheckpointSQL); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("approvals: sealer: %w", err)
	}
	prev := audit.Hash{}
	if t.Position > 0 {
		if prev, err = audit.HashFrom(t.Head); err != nil {
			return 0, err
		}
	}
	var xmin, xmax string
	var now time.Time
	if err := tx.QueryRowContext(ctx, `SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text, now() FROM pg_current_snapshot() AS s`).
		Scan(&xmin, &xmax, &now); err != nil {
		return 0, fmt.Errorf("approvals: sealer: %w", err)
	}
	from := t.Horizon
	if xidLess(xmin, from) {
		// Transaction ids went back: the database was restored into
		// another cluster. Every unsealed event of this cluster is newer
		// than its first transaction.
		z.logger.WarnContext(ctx, "audit sealer: transaction ids are below the last checkpoint's horizon (the database moved to another cluster?): sealing from the start of this cluster's ids",
			"horizon", t.Horizon, "xmin", xmin)
		from = "0"
	}
	events, err := scanUnsealed(ctx, tx, from, xmax, z.batch)
	if err != nil {
		return 0, fmt.Errorf("approvals: sealer: %w", err)
	}
	if len(events) == 0 {
		return 0, nil
	}
	horizon := xmin
	if len(events) == z.batch {
		// More may be waiting. Every candidate of an older transaction
		// than the last one taken is in this batch; the next one starts
		// there, or at the oldest running transaction if that is older.
		if last := events[len(events)-1].xid; xidLess(last, horizon) {
			horizon = last
		}
	}
	rows := make([][3]any, len(events))
	pos := t.Position
	var late []int64
	oldest := now
	for i, e := range events {
		pos++
		prev = audit.Link(prev, e.rec.SealForm())
		rows[i] = [3]any{pos, e.rec.ID, prev.String()}
		if e.at != nil {
			oldest = minTime(oldest, *e.at)
			if t.SealedAt != nil && e.at.Before(t.SealedAt.Add(-lateSlack)) {
				late = append(late, e.rec.ID)
			}
		}
	}
	chain, err := json.Marshal(rows)
	if err != nil {
		return 0, fmt.Errorf("approvals: sealer: %w", err)
	}
	if _, err := tx.ExecContext(ctx, insertChainSQL, string(chain)); err != nil {
		return 0, fmt.Errorf("approvals: sealer: %w", err)
	}
	// The database's clock, the one the events' times come from.
	sealedAt := now.UTC().Truncate(time.Microsecond)
	cp, err := audit.Sign(audit.Claims{Position: pos, Head: prev, SealedAt: audit.FormatTime(sealedAt)}, key, kid)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, insertCheckpointSQL, pos, prev[:], horizon, sealedAt, z.name, kid, cp.JWS); err != nil {
		return 0, fmt.Errorf("approvals: sealer: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("approvals: sealer: commit: %w", err)
	}
	if len(late) > 0 {
		z.metrics.lateEvents(len(late))
		z.logger.WarnContext(ctx, "audit sealer: events dated before the previous checkpoint were sealed now: written late, or backdated by someone writing to the database directly",
			"count", len(late), "ids", late[:min(len(late), 20)], "previous_checkpoint", t.SealedAt)
	}
	z.metrics.sealed(len(events), sealedAt.Sub(oldest), sealedAt)
	return len(events), nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// xidLess compares two xid8 values in their decimal text form.
func xidLess(a, b string) bool {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	return errA == nil && errB == nil && x < y
}

// sealRow is an unsealed event as the sealer reads it.
type sealRow struct {
	rec audit.Record
	at  *time.Time // nil for ±infinity
	xid string
}

// scanUnsealed reads the batch with plain Scan: the sealer reads every
// event once, and reflection was most of its reading.
func scanUnsealed(ctx context.Context, tx *sqlx.Tx, from, xmax string, limit int) ([]sealRow, error) {
	rows, err := tx.QueryContext(ctx, unsealedSQL, from, xmax, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sealRow
	for rows.Next() {
		var e sealRow
		var body []byte
		r := &e.rec
		if err := rows.Scan(&r.ID, &r.At, &e.at, &r.Kind, &r.Actor, &r.RequestID, &r.AgentID, &r.UserID, &r.Subject, &body, &e.xid); err != nil {
			return nil, err
		}
		r.Body = body
		out = append(out, e)
	}
	return out, rows.Err()
}

type sealerMetrics struct {
	events      prometheus.Counter
	checkpoints prometheus.Counter
	failures    prometheus.Counter
	late        prometheus.Counter
	leader      prometheus.Gauge
	lag         prometheus.Gauge
	last        prometheus.Gauge
}

func newSealerMetrics(reg prometheus.Registerer) *sealerMetrics {
	if reg == nil {
		return nil
	}
	m := &sealerMetrics{
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_audit_sealed_events_total", Help: "Audit events sealed into the hash chain by this process.",
		}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_audit_checkpoints_total", Help: "Signed audit checkpoints written by this process.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_audit_seal_failures_total", Help: "Sealing batches that failed (the events stay unsealed; see the error log).",
		}),
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_audit_late_events_total", Help: "Events sealed although dated over a minute before the previous checkpoint (late or backdated writes).",
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "countersign_audit_last_checkpoint_timestamp_seconds", Help: "When this process last signed a checkpoint (Unix time): alert when the leader's stops moving.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "countersign_audit_sealer_leader", Help: "1 while this process is the audit sealer (one at a time across replicas).",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "countersign_audit_seal_lag_seconds", Help: "How long the oldest event of the last sealed batch waited unsealed.",
		}),
	}
	reg.MustRegister(m.events, m.checkpoints, m.failures, m.late, m.leader, m.lag, m.last)
	return m
}

func (m *sealerMetrics) setLeader(on bool) {
	if m == nil {
		return
	}
	if on {
		m.leader.Set(1)
	} else {
		m.leader.Set(0)
	}
}

func (m *sealerMetrics) sealed(n int, lag time.Duration, at time.Time) {
	if m == nil {
		return
	}
	m.events.Add(float64(n))
	m.checkpoints.Inc()
	m.lag.Set(lag.Seconds())
	m.last.Set(float64(at.UnixNano()) / 1e9)
}

func (m *sealerMetrics) failed() {
	if m != nil {
		m.failures.Inc()
	}
}

func (m *sealerMetrics) lateEvents(n int) {
	if m != nil {
		m.late.Add(float64(n))
	}
}

package approvals

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
	now     func() time.Time
	metrics *sealerMetrics
}

// NewSealer returns the sealer of s's database; name says which process
// seals (host/pid) in the checkpoints it writes. reg, when not nil, gets
// its metrics.
func (s *Service) NewSealer(name string, reg prometheus.Registerer) *Sealer {
	return &Sealer{db: s.store.db, keys: s.keys, logger: s.logger, name: name, batch: SealBatch, now: time.Now,
		metrics: newSealerMetrics(reg)}
}

// Run seals every interval until ctx ends.
func (z *Sealer) Run(ctx context.Context, interval time.Duration) {
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
						z.logger.WarnContext(ctx, "audit sealer: batch failed; giving up the lead", "err", err)
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
	if err := conn.QueryRowContext(ctx, sealerLockSQL).Scan(&got); err != nil || !got {
		z.discard(conn)
		return nil
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
const lastCheckpointSQL = `SELECT position, head, horizon::text AS horizon FROM audit_checkpoints ORDER BY position DESC LIMIT 1`

// unsealedSQL selects the committed events not yet in the chain. Events
// whose transaction is older than the last checkpoint's horizon are all
// sealed, so only the newer ones are looked at.
const unsealedSQL = `
SELECT e.id, e.at, e.kind, e.actor, e.request_id, e.agent_id, e.user_id, e.subject, e.body
FROM audit_events e
WHERE e.xid >= $1::xid8 AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id)
ORDER BY e.id
LIMIT $2`

const insertChainSQL = `
INSERT INTO audit_chain (position, event_id, hash)
SELECT (r->>0)::bigint, (r->>1)::bigint, decode(r->>2, 'hex')
FROM jsonb_array_elements($1::jsonb) AS r`

const insertCheckpointSQL = `
INSERT INTO audit_checkpoints (position, head, horizon, sealed_at, sealer, kid, jws)
VALUES ($1, $2, $3::xid8, $4, $5, $6, $7)`

type tail struct {
	Position int64  `db:"position"`
	Head     []byte `db:"head"`
	Horizon  string `db:"horizon"`
}

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
	var horizon string
	if err := tx.QueryRowContext(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`).Scan(&horizon); err != nil {
		return 0, fmt.Errorf("approvals: sealer: %w", err)
	}
	events, err := scanUnsealed(ctx, tx, t.Horizon, z.batch)
	if err != nil {
		return 0, fmt.Errorf("approvals: sealer: %w", err)
	}
	if len(events) == 0 {
		return 0, nil
	}
	if len(events) == z.batch {
		// More are waiting: the horizon vouches only when none are.
		horizon = t.Horizon
	}
	rows := make([][3]any, len(events))
	pos := t.Position
	for i := range events {
		pos++
		if prev, err = audit.Next(prev, events[i].Record()); err != nil {
			return 0, err
		}
		rows[i] = [3]any{pos, events[i].ID, prev.String()}
	}
	chain, err := json.Marshal(rows)
	if err != nil {
		return 0, fmt.Errorf("approvals: sealer: %w", err)
	}
	if _, err := tx.ExecContext(ctx, insertChainSQL, string(chain)); err != nil {
		return 0, fmt.Errorf("approvals: sealer: %w", err)
	}
	sealedAt := z.now().UTC().Truncate(time.Microsecond)
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
	z.metrics.sealed(len(events), sealedAt.Sub(events[0].At))
	return len(events), nil
}

// scanUnsealed reads the batch with plain Scan: the sealer reads every
// event once, and reflection was most of its reading.
func scanUnsealed(ctx context.Context, tx *sqlx.Tx, horizon string, limit int) ([]Event, error) {
	rows, err := tx.QueryContext(ctx, unsealedSQL, horizon, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var events []Event
	for rows.Next() {
		var e Event
		var body []byte
		if err := rows.Scan(&e.ID, &e.At, &e.Kind, &e.Actor, &e.RequestID, &e.AgentID, &e.UserID, &e.Subject, &body); err != nil {
			return nil, err
		}
		e.Body = body
		events = append(events, e)
	}
	return events, rows.Err()
}

// Record is the event as the audit chain seals it.
func (e *Event) Record() *audit.Record {
	return &audit.Record{ID: e.ID, At: audit.FormatTime(e.At), Kind: e.Kind, Actor: e.Actor,
		RequestID: e.RequestID, AgentID: e.AgentID, UserID: e.UserID, Subject: e.Subject, Body: e.Body}
}

type sealerMetrics struct {
	events      prometheus.Counter
	checkpoints prometheus.Counter
	leader      prometheus.Gauge
	lag         prometheus.Gauge
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
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "countersign_audit_sealer_leader", Help: "1 while this process is the audit sealer (one at a time across replicas).",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "countersign_audit_seal_lag_seconds", Help: "How long the oldest event of the last sealed batch waited unsealed.",
		}),
	}
	reg.MustRegister(m.events, m.checkpoints, m.leader, m.lag)
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

func (m *sealerMetrics) sealed(n int, lag time.Duration) {
	if m == nil {
		return
	}
	m.events.Add(float64(n))
	m.checkpoints.Inc()
	m.lag.Set(lag.Seconds())
}

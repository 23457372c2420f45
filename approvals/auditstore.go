package approvals

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/countersign/countersign/approvals/audit"
)

// chainRow is one position of the chain with the event sealed there, if it
// is still there.
type chainRow struct {
	Position  int64          `db:"position"`
	EventID   int64          `db:"event_id"`
	Hash      []byte         `db:"hash"`
	ID        sql.NullInt64  `db:"id"`
	At        sql.NullString `db:"at_text"`
	Kind      sql.NullString `db:"kind"`
	Actor     sql.NullString `db:"actor"`
	RequestID *string        `db:"request_id"`
	AgentID   *string        `db:"agent_id"`
	UserID    *string        `db:"user_id"`
	Subject   *string        `db:"subject"`
	Body      []byte         `db:"body"`
}

func (r *chainRow) record() *audit.Record {
	if !r.ID.Valid {
		return nil
	}
	rec := &audit.Record{ID: r.ID.Int64, At: r.At.String, Kind: r.Kind.String, Actor: r.Actor.String,
		RequestID: r.RequestID, AgentID: r.AgentID, UserID: r.UserID, Subject: r.Subject, Body: json.RawMessage(r.Body)}
	rec.SealForm()
	return rec
}

const chainRangeSQL = `
SELECT c.position, c.event_id, c.hash, e.id, ` + atTextSQL + ` AS at_text, e.kind, e.actor, e.request_id, e.agent_id, e.user_id, e.subject, e.body
FROM audit_chain c LEFT JOIN audit_events e ON e.id = c.event_id
WHERE c.position BETWEEN $1 AND $2
ORDER BY c.position`

const checkpointRangeSQL = `
SELECT position, head, sealed_at, kid, jws FROM audit_checkpoints
WHERE position BETWEEN $1 AND $2
ORDER BY position`

type checkpointRow struct {
	Position int64     `db:"position"`
	Head     []byte    `db:"head"`
	SealedAt time.Time `db:"sealed_at"`
	KID      string    `db:"kid"`
	JWS      string    `db:"jws"`
}

func (r *checkpointRow) checkpoint() (audit.Checkpoint, error) {
	head, err := audit.HashFrom(r.Head)
	if err != nil {
		return audit.Checkpoint{}, err
	}
	return audit.Checkpoint{Claims: audit.Claims{Position: r.Position, Head: head, SealedAt: audit.FormatTime(r.SealedAt)},
		KID: r.KID, JWS: r.JWS}, nil
}

// walkChain reads positions from..to in order, calling event for each and
// checkpoint after the event at the checkpoint's position; checkpoints
// past the last position read come at the end.
func (s *Store) walkChain(ctx context.Context, from, to int64,
	event func(position, eventID int64, hash audit.Hash, rec *audit.Record) error,
	checkpoint func(audit.Checkpoint) error) error {
	events, err := s.db.QueryxContext(ctx, chainRangeSQL, from, to)
	if err != nil {
		return fmt.Errorf("approvals: audit chain: %w", err)
	}
	defer events.Close()
	cps, err := s.db.QueryxContext(ctx, checkpointRangeSQL, from, to)
	if err != nil {
		return fmt.Errorf("approvals: audit checkpoints: %w", err)
	}
	defer cps.Close()
	var next *audit.Checkpoint
	advance := func() error {
		next = nil
		if !cps.Next() {
			return cps.Err()
		}
		var r checkpointRow
		if err := cps.StructScan(&r); err != nil {
			return err
		}
		c, err := r.checkpoint()
		if err != nil {
			return err
		}
		next = &c
		return nil
	}
	if err := advance(); err != nil {
		return fmt.Errorf("approvals: audit checkpoints: %w", err)
	}
	for events.Next() {
		var r chainRow
		if err := events.StructScan(&r); err != nil {
			return fmt.Errorf("approvals: audit chain: %w", err)
		}
		h, err := audit.HashFrom(r.Hash)
		if err != nil {
			return err
		}
		if err := event(r.Position, r.EventID, h, r.record()); err != nil {
			return err
		}
		for next != nil && next.Position <= r.Position {
			if err := checkpoint(*next); err != nil {
				return err
			}
			if err := advance(); err != nil {
				return fmt.Errorf("approvals: audit checkpoints: %w", err)
			}
		}
	}
	if err := events.Err(); err != nil {
		return fmt.Errorf("approvals: audit chain: %w", err)
	}
	for next != nil {
		if err := checkpoint(*next); err != nil {
			return err
		}
		if err := advance(); err != nil {
			return fmt.Errorf("approvals: audit checkpoints: %w", err)
		}
	}
	return nil
}

// lastCheckpoint is the position and horizon of the newest checkpoint (0
// and "0" before the first).
func (s *Store) lastCheckpoint(ctx context.Context) (int64, string, error) {
	t := tail{Horizon: "0"}
	if err := s.db.GetContext(ctx, &t, lastCheckpointSQL); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, "", fmt.Errorf("approvals: audit checkpoints: %w", err)
	}
	return t.Position, t.Horizon, nil
}

// Progress is told how far a long audit walk has come: done of total
// positions.
type Progress func(done, total int64)

// strayEventSQL finds an event older than the last checkpoint's horizon
// that is not in the chain: every such event was sealed, so this one was
// written afterwards.
const strayEventSQL = `
SELECT e.id FROM audit_events e
WHERE e.xid < $1::xid8 AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id)
ORDER BY e.id LIMIT 1`

const unsealedCountSQL = `
SELECT count(*), coalesce(to_char(min(e.at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), '')
FROM audit_events e
WHERE e.xid >= $1::xid8 AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id)`

// VerifyAudit walks the whole chain up to its last checkpoint and the
// checkpoints against keys, and returns the first *audit.Break it finds, if
// any. It also reports, as a Break, an event that is older than the
// sealed part but not in it, and counts the events not yet sealed.
func (s *Store) VerifyAudit(ctx context.Context, keys *jose.JSONWebKeySet, progress Progress) (audit.Report, error) {
	last, horizon, err := s.lastCheckpoint(ctx)
	if err != nil {
		return audit.Report{}, err
	}
	v := audit.NewVerifier(keys)
	var done int64
	err = s.walkChain(ctx, 1, last, func(position, eventID int64, hash audit.Hash, rec *audit.Record) error {
		if done++; progress != nil && done%4096 == 0 {
			progress(done, last)
		}
		return v.Event(position, eventID, hash, rec)
	}, v.Checkpoint)
	if err == nil {
		err = v.Finish()
	}
	if err != nil {
		return v.Report(), err
	}
	if progress != nil {
		progress(last, last)
	}
	rep := v.Report()
	var stray int64
	switch err := s.db.GetContext(ctx, &stray, strayEventSQL, horizon); {
	case err == nil:
		return rep, &audit.Break{Kind: audit.BreakInserted, EventID: stray,
			Detail: "the event is older than the sealed part of the chain but not in it: it was written after its time was sealed"}
	case !errors.Is(err, sql.ErrNoRows):
		return rep, fmt.Errorf("approvals: audit events: %w", err)
	}
	if err := s.db.QueryRowContext(ctx, unsealedCountSQL, horizon).Scan(&rep.Unsealed, &rep.OldestUnsealedAt); err != nil {
		return rep, fmt.Errorf("approvals: audit events: %w", err)
	}
	return rep, nil
}

// ExportAudit writes the part of the chain that holds the events from since
// (inclusive) to until (exclusive; zero: up to the last checkpoint) to w as
// JSON Lines (audit.Writer): the contiguous positions from the first such
// event through the checkpoint that covers the last one, so the file
// verifies offline. It returns how many events it wrote.
func (s *Store) ExportAudit(ctx context.Context, w io.Writer, since, until time.Time, progress Progress) (int64, error) {
	last, _, err := s.lastCheckpoint(ctx)
	if err != nil {
		return 0, err
	}
	var first sql.NullInt64
	if err := s.db.GetContext(ctx, &first, `SELECT min(c.position) FROM audit_chain c JOIN audit_events e ON e.id = c.event_id
		WHERE e.at >= $1 AND c.position <= $2`, since, last); err != nil {
		return 0, fmt.Errorf("approvals: audit export: %w", err)
	}
	to := last
	if !until.IsZero() && first.Valid {
		var end sql.NullInt64
		if err := s.db.GetContext(ctx, &end, `SELECT max(c.position) FROM audit_chain c JOIN audit_events e ON e.id = c.event_id
			WHERE e.at >= $1 AND e.at < $2 AND c.position <= $3`, since, until, last); err != nil {
			return 0, fmt.Errorf("approvals: audit export: %w", err)
		}
		if !end.Valid {
			first.Valid = false
		} else if err := s.db.GetContext(ctx, &to, `SELECT min(position) FROM audit_checkpoints WHERE position >= $1`, end.Int64); err != nil {
			return 0, fmt.Errorf("approvals: audit export: %w", err)
		}
	}
	out := audit.NewWriter(w)
	from := last + 1 // nothing to export: the chain's head, no events
	if first.Valid {
		from = first.Int64
	}
	head := audit.Hash{}
	if from > 1 {
		var b []byte
		if err := s.db.GetContext(ctx, &b, `SELECT hash FROM audit_chain WHERE position = $1`, from-1); err != nil {
			return 0, fmt.Errorf("approvals: audit export: the hash before position %d: %w", from, err)
		}
		if head, err = audit.HashFrom(b); err != nil {
			return 0, err
		}
	}
	if err := out.Start(from-1, head); err != nil {
		return 0, err
	}
	var n int64
	if first.Valid {
		total := to - from + 1
		err = s.walkChain(ctx, from, to, func(position, _ int64, hash audit.Hash, rec *audit.Record) error {
			if n++; progress != nil && n%4096 == 0 {
				progress(n, total)
			}
			return out.Event(position, hash, rec)
		}, out.Checkpoint)
		if err != nil {
			return n, err
		}
		if progress != nil {
			progress(total, total)
		}
	}
	return n, out.Close()
}

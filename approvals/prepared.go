package approvals

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/jmoiron/sqlx"
)

// prepared is a statement of a hot path, prepared once per pool connection:
// database/sql prepares it on each connection it first runs on and keeps it
// there, so PostgreSQL parses, analyses and plans it once per connection
// (its plan cache then keeps a plan) instead of on every call. Parsing and
// planning the admission's insert was a quarter of PostgreSQL's CPU per
// flow. A failed preparation is tried again on the next call.
type prepared struct {
	query string
	stmt  atomic.Pointer[sqlx.Stmt]
	mu    sync.Mutex // serialises the first preparation
}

// row runs the statement with args on q: the pool db, where it is prepared
// on first use, or a change's transaction, where it runs prepared once the
// pool has the statement (see warm; database/sql then prepares it on the
// transaction's connection, if not yet there, and keeps it).
func (p *prepared) row(ctx context.Context, db *sqlx.DB, q sqlx.QueryerContext, args ...any) *sqlx.Row {
	if t, ok := q.(*Tx); ok {
		if st := p.in(ctx, t); st != nil {
			return st.QueryRowxContext(ctx, args...)
		}
		return t.QueryRowxContext(ctx, p.query, args...)
	}
	st, err := p.prepare(ctx, db)
	if err != nil {
		// The statement itself then says what is wrong.
		return q.QueryRowxContext(ctx, p.query, args...)
	}
	return st.QueryRowxContext(ctx, args...)
}

// prepare returns the statement, preparing it on the pool the first time.
func (p *prepared) prepare(ctx context.Context, db *sqlx.DB) (*sqlx.Stmt, error) {
	if st := p.stmt.Load(); st != nil {
		return st, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.stmt.Load(); st != nil {
		return st, nil
	}
	st, err := db.PreparexContext(ctx, p.query)
	if err != nil {
		return nil, fmt.Errorf("approvals: prepare: %w", err)
	}
	p.stmt.Store(st)
	return st, nil
}

// in returns the statement for t: prepared where the pool has prepared it
// (see warm), else nil, and then the caller's q runs the query text.
func (p *prepared) in(ctx context.Context, t *Tx) *sqlx.Stmt {
	if st := p.stmt.Load(); st != nil {
		return t.StmtxContext(ctx, st)
	}
	return nil
}

// get runs the statement on q (the pool db or a change's transaction, as
// row) and scans its one row into dest (sqlx).
func (p *prepared) get(ctx context.Context, db *sqlx.DB, q sqlx.QueryerContext, dest any, args ...any) error {
	if t, ok := q.(*Tx); ok {
		return p.getTx(ctx, t, dest, args...)
	}
	st, err := p.prepare(ctx, db)
	if err != nil {
		return sqlx.GetContext(ctx, q, dest, p.query, args...)
	}
	return st.GetContext(ctx, dest, args...)
}

// getTx runs the statement in t and scans its one row into dest (sqlx).
func (p *prepared) getTx(ctx context.Context, t *Tx, dest any, args ...any) error {
	if st := p.in(ctx, t); st != nil {
		return st.GetContext(ctx, dest, args...)
	}
	return t.GetContext(ctx, dest, p.query, args...)
}

// selectTx runs the statement in t and scans its rows into dest (sqlx).
func (p *prepared) selectTx(ctx context.Context, t *Tx, dest any, args ...any) error {
	if st := p.in(ctx, t); st != nil {
		return st.SelectContext(ctx, dest, args...)
	}
	return t.SelectContext(ctx, dest, p.query, args...)
}

// execTx runs the statement in t.
func (p *prepared) execTx(ctx context.Context, t *Tx, args ...any) (sql.Result, error) {
	if st := p.in(ctx, t); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.ExecContext(ctx, p.query, args...)
}

// warm makes the pool's statements ps, before a change takes its
// connection (making one prepares it on a connection of the pool, so inside
// the change it would wait for a second connection): in a change they then
// run prepared. A failure leaves them to run unprepared, and the next call
// tries again.
func (s *Store) warm(ctx context.Context, ps ...*prepared) {
	for _, p := range ps {
		_, _ = p.prepare(ctx, s.db)
	}
}

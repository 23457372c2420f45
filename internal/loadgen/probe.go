package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// DBSample is PostgreSQL's work so far: cumulative counters, subtracted
// from each other around the measured flows.
type DBSample struct {
	// Commits and RowsWritten are pg_stat_database's xact_commit +
	// xact_rollback and tup_inserted + tup_updated + tup_deleted of this
	// database: every session's, the server's background work included.
	Commits     int64 `db:"commits"`
	RowsWritten int64 `db:"rows_written"`
	// WALBytes is the WAL insert position (pg_current_wal_insert_lsn),
	// which moves at once, unlike pg_stat_wal whose counters backends
	// flush like the others. WAL is the whole cluster's: other databases'
	// writes count too, and OtherRowsWritten says how much there was.
	WALBytes         int64 `db:"wal_bytes"`
	OtherRowsWritten int64 `db:"other_rows_written"`
	// Statements is pg_stat_statements' calls in this database; nil when
	// that extension is not loaded.
	Statements *int64 `db:"-"`
}

// DBProbe samples a database's counters.
type DBProbe struct {
	db *sqlx.DB
	// whyNoStatements says why statements are not counted ("" when they
	// are).
	whyNoStatements string
}

const dbSampleSQL = `
SELECT coalesce(sum(xact_commit + xact_rollback) FILTER (WHERE datname = current_database()), 0)::bigint AS commits,
	coalesce(sum(tup_inserted + tup_updated + tup_deleted) FILTER (WHERE datname = current_database()), 0)::bigint AS rows_written,
	coalesce(sum(tup_inserted + tup_updated + tup_deleted) FILTER (WHERE datname IS DISTINCT FROM current_database()), 0)::bigint AS other_rows_written,
	pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint AS wal_bytes
FROM pg_stat_database`

const statementsSQL = `
SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`

// NewDBProbe checks that db's counters can be read, and whether statements
// can be counted: pg_stat_statements must be loaded (shared_preload_libraries)
// and created in the database. When it is loaded but not created, it is
// created, if this role may; the creation is rolled back when the view
// cannot be read, so a failed attempt leaves nothing behind.
func NewDBProbe(ctx context.Context, db *sqlx.DB) (*DBProbe, error) {
	p := &DBProbe{db: db, whyNoStatements: statementsUsable(ctx, db)}
	if _, err := p.Sample(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// statementsUsable says why pg_stat_statements cannot be read, "" when it
// can.
func statementsUsable(ctx context.Context, db *sqlx.DB) string {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return err.Error()
	}
	defer tx.Rollback()
	var created bool
	if err := tx.GetContext(ctx, &created, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')`); err != nil {
		return err.Error()
	}
	if !created {
		if _, err := tx.ExecContext(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
			return "pg_stat_statements is not created in this database and cannot be: " + pqMessage(err)
		}
	}
	var n int64
	if err := tx.GetContext(ctx, &n, statementsSQL); err != nil {
		// Typically: it must be loaded via shared_preload_libraries.
		return pqMessage(err)
	}
	if err := tx.Commit(); err != nil {
		return err.Error()
	}
	return ""
}

// pqMessage is a PostgreSQL error's message, without the driver's
// decoration.
func pqMessage(err error) string {
	var pe *pq.Error
	if errors.As(err, &pe) {
		return pe.Message
	}
	return err.Error()
}

// StatementsUnavailable says why statements are not counted, "" when they
// are.
func (p *DBProbe) StatementsUnavailable() string { return p.whyNoStatements }

// Sample reads the counters now.
func (p *DBProbe) Sample(ctx context.Context) (DBSample, error) {
	var s DBSample
	if err := p.db.GetContext(ctx, &s, dbSampleSQL); err != nil {
		return DBSample{}, fmt.Errorf("loadgen: database statistics: %w", err)
	}
	if p.whyNoStatements == "" {
		var n int64
		if err := p.db.GetContext(ctx, &n, statementsSQL); err != nil {
			p.whyNoStatements = "pg_stat_statements cannot be read: " + err.Error()
		} else {
			s.Statements = &n
		}
	}
	return s, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture (sysconf(_SC_CLK_TCK)).
const clockTicks = 100

// ProcessCPU returns the CPU time (user + system, all threads) that process
// pid has used so far, from /proc/PID/stat.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("loadgen: CPU time of process %d: %w", pid, err)
	}
	ticks, err := parseStatCPU(b)
	if err != nil {
		return 0, fmt.Errorf("loadgen: CPU time of process %d: %w", pid, err)
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// parseStatCPU returns utime + stime (fields 14 and 15, proc(5)) of a
// /proc/PID/stat line. The command name (field 2) is in parentheses and may
// hold spaces and parentheses itself, so fields are counted from the last
// ')'.
func parseStatCPU(b []byte) (int64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat line")
	}
	// After the name: state (field 3) … utime (14), stime (15).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc stat line")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc stat line")
	}
	return utime + stime, nil
}

package approvals

import (
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Store keeps the domain in PostgreSQL. Every method takes ctx first.
type Store struct {
	db         *sqlx.DB
	locks      keyedLocks  // admissions in this process, by lock key (see admit)
	admissions admitQueues // admissions waiting to be admitted together

	// The hot path's statements, prepared on each connection.
	insertRequestStmt, insertDecidedStmt, pollStmt, redeemStmt prepared
	// An admission under its locks.
	admitLockStmt, pendingIdenticalStmt, pendingCountsStmt, recentCountsStmt, recentSumsStmt prepared
	// A person's review, and the events and outbox rows of a change.
	reviewStateStmt, reviewsStmt, insertReviewStmt, resolveStmt, flushStmt prepared
}

// NewStore returns a Store on db. Guards use the database's clock, so
// replicas agree on time.
func NewStore(db *sqlx.DB) *Store {
	return &Store{
		db:                   db,
		insertRequestStmt:    prepared{query: insertRequestSQL},
		insertDecidedStmt:    prepared{query: insertDecidedSQL},
		pollStmt:             prepared{query: pollSQL},
		redeemStmt:           prepared{query: redeemSQL},
		admitLockStmt:        prepared{query: admitLocksSQL},
		pendingIdenticalStmt: prepared{query: pendingIdenticalSQL},
		pendingCountsStmt:    prepared{query: pendingCountsSQL},
		recentCountsStmt:     prepared{query: recentCountsSQL},
		recentSumsStmt:       prepared{query: recentSumsSQL},
		reviewStateStmt:      prepared{query: reviewStateSQL},
		reviewsStmt:          prepared{query: reviewsSQL},
		insertReviewStmt:     prepared{query: insertReviewSQL},
		resolveStmt:          prepared{query: resolveSQL},
		flushStmt:            prepared{query: flushSQL},
	}
}

// Pool sizes of a production server. A change holds one connection for its
// whole transaction and never a second, so a full pool only queues work.
// Idle connections are kept up to the pool's size: a burst above a smaller
// idle limit closed connections as it ebbed and opened new ones with the
// next (a backend start and the hot statements prepared again each time;
// 147 in 30 s of the 1,000-agent ping load), and they close after five idle
// minutes anyway.
const (
	PoolMaxOpen = 32
	PoolMaxIdle = 32
)

// ConfigurePool sets db's pool as a production server runs it.
func ConfigurePool(db *sqlx.DB) {
	db.SetMaxOpenConns(PoolMaxOpen)
	db.SetMaxIdleConns(PoolMaxIdle)
	db.SetConnMaxIdleTime(5 * time.Minute)
}

// translate maps driver errors to domain errors.
func translate(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch pqErr.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%w (%s)", ErrConflict, pqErr.Constraint)
		case "22P02", "23514": // invalid_text_representation, check_violation
			return fmt.Errorf("%w: %s", ErrInvalidInput, pqErr.Message)
		}
	}
	return err
}

// Labels are free-form key/value pairs on an agent, stored as jsonb.
type Labels map[string]string

// Value implements driver.Valuer.
func (l Labels) Value() (driver.Value, error) { return jsonbValue(l, l == nil, "{}") }

// Scan implements sql.Scanner.
func (l *Labels) Scan(src any) error { return jsonbScan(src, l) }

// jsonbValue encodes v for a jsonb column; a nil v is stored as empty.
func jsonbValue(v any, isNil bool, empty string) (driver.Value, error) {
	if isNil {
		return empty, nil
	}
	// Text, not []byte: with binary_parameters a []byte is sent as bytea.
	b, err := json.Marshal(v)
	return string(b), err
}

// jsonbScan decodes a jsonb column into dst.
func jsonbScan(src any, dst any) error {
	b, ok := src.([]byte)
	if !ok {
		return fmt.Errorf("approvals: jsonb column: unexpected %T", src)
	}
	return json.Unmarshal(b, dst)
}

// NullJSON is a nullable jsonb value.
type NullJSON json.RawMessage

// Value implements driver.Valuer.
func (j NullJSON) Value() (driver.Value, error) {
	if len(j) == 0 {
		return nil, nil
	}
	return string(j), nil
}

// Scan implements sql.Scanner.
func (j *NullJSON) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*j = nil
	case []byte:
		*j = append((*j)[:0], v...)
	default:
		return fmt.Errorf("approvals: json: unexpected %T", src)
	}
	return nil
}

// MarshalJSON implements json.Marshaler.
func (j NullJSON) MarshalJSON() ([]byte, error) {
	if len(j) == 0 {
		return []byte("null"), nil
	}
	return j, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

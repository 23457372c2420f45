// Package approvals is Countersign's domain: registered agents, users and
// resource servers; approval requests and their state machine; the
// single-transaction tokens that approved requests become; and the store that
// keeps all of it in PostgreSQL.
//
// Every state change is one guarded SQL statement, so concurrent approve,
// deny, expire, cancel, poll and redeem calls resolve in the database to
// exactly one outcome, and no state lives in the process.
package approvals

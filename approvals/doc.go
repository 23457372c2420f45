// Package approvals is Countersign's domain: registered agents, users and
// resource servers; approval requests and their state machine; the reviews
// that decide them; the single-transaction tokens that approved requests
// become; the event spine; and the store that keeps all of it in
// PostgreSQL.
//
// Every change of state is one transaction on one connection (tx.go): a
// guarded SQL statement, so concurrent approve, deny, expire, cancel, poll
// and redeem calls resolve in the database to exactly one outcome, with its
// audit_events row and outbox rows. No state needed for correctness lives
// in the process.
//
// Where things are, one noun a file:
//
//	admission.go   a request on its way in: parse, the rules' input, evaluate, store (live and dry-run)
//	admit.go       serialising admissions that read velocity
//	requests.go    the request row and its guarded transitions
//	state.go       the state machine as a pure function
//	reviews.go     ApplyReview: what reviews add up to (pure)
//	decide.go      Service.Review: persisting a review with compare-and-swap
//	evidence.go    step-up evidence: its challenge, offline re-verification (pure), its amr
//	storedevidence.go   re-verifying the evidence stored for a request
//	events.go      the event spine's rows and kinds; listener.go its LISTEN side
//	record.go      the kinds that complete the record, the events of outbox rows; timeline.go reading the trail
//	tx.go          one change = one transaction; its events and outbox rows
//	tokens.go      issuing, redeeming, introspecting and revoking tokens
//	keys.go        signing keys and their rotation; jwt.go the JWTs; keywrap.go key encryption
//	clientauth.go  client authentication: secrets and private_key_jwt
//	hints.go       who a request is for: login_hint, id_token_hint, login_hint_token
//	agents.go, users.go, resources.go, types.go, policy.go   registrations and published versions
//	authreqid.go   the auth_req_id codec; secrets.go hashing of secrets and user codes
package approvals

package approvals

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/countersign/countersign/approvals/policy"
	"github.com/jmoiron/sqlx"
	"log/slog"
	"time"

	"github.com/lib/pq"
)

// Request is one approval request (a CIBA backchannel authentication request
// for one transaction) and, once approved, its single-transaction token.
type Request struct {
	ID                      string          `db:"id"`
	AgentID                 string          `db:"agent_id"`
	UserID                  string          `db:"user_id"`
	State                   State           `db:"state"`
	Scope                   string          `db:"scope"`
	AuthorizationDetails    json.RawMessage `db:"authorization_details"`
	DetailsCanonical        string          `db:"details_canonical"`
	DetailsHash             string          `db:"details_hash"`
	Types                   pq.StringArray  `db:"types"`
	TypeVersions            TypeVersions    `db:"type_versions"`
	BindingMessage          string          `db:"binding_message"`
	ACRValues               pq.StringArray  `db:"acr_values"`
	Resources               pq.StringArray  `db:"resources"`
	Audience                pq.StringArray  `db:"audience"`
	ClientNotificationToken *string         `db:"client_notification_token"`
	CreatedAt               time.Time       `db:"created_at"`
	ExpiresAt               time.Time       `db:"expires_at"`
	PollInterval            int             `db:"poll_interval"`
	LastPolledAt            *time.Time      `db:"last_polled_at"`
	DecidedAt               *time.Time      `db:"decided_at"`
	DecidedBy               *string         `db:"decided_by"`
	DecisionReason          string          `db:"decision_reason"`
	ACR                     string          `db:"acr"`
	AMR                     pq.StringArray  `db:"amr"`
	TokenJTI                *string         `db:"token_jti"`
	TokenIssuedAt           *time.Time      `db:"token_issued_at"`
	TokenExpiresAt          *time.Time      `db:"token_expires_at"`
	RedeemedAt              *time.Time      `db:"redeemed_at"`
	RedeemedBy              *string         `db:"redeemed_by"`
	RevokedAt               *time.Time      `db:"revoked_at"`
	// What the risk policy decided at request time.
	Outcome       string     `db:"outcome"` // allow, approve, step_up, quorum or deny
	PolicyVersion *int       `db:"policy_version"`
	PolicyRule    string     `db:"policy_rule"`
	PolicyReason  string     `db:"policy_reason"`
	Quorum        QuorumJSON `db:"quorum"`
	StepUp        bool       `db:"step_up"`       // every human approval must be a step-up
	UserRequired  bool       `db:"user_required"` // the requesting user must approve
	Amounts       Amounts    `db:"amounts"`
}

// QuorumJSON is the quorum requirements of a request, stored as jsonb.
type QuorumJSON []policy.QuorumRequirement

// Value implements driver.Valuer.
func (q QuorumJSON) Value() (driver.Value, error) { return jsonbValue(q, q == nil, "[]") }

// Scan implements sql.Scanner.
func (q *QuorumJSON) Scan(src any) error { return jsonbScan(src, q) }

// LogValue keeps the details and the notification token out of logs.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", r.ID), slog.String("agent", r.AgentID),
		slog.String("user", r.UserID), slog.String("state", string(r.State)), slog.String("details_hash", r.DetailsHash))
}

// Amounts is what a request moves: for each currency, the exact sum of its
// elements' amounts in that currency in major units, written as rar writes
// amounts ("500.00"). Stored as jsonb numbers, {"EUR": 500.00}, which the
// velocity counters add up in numeric.
type Amounts map[string]json.Number

// Value implements driver.Valuer.
func (a Amounts) Value() (driver.Value, error) { return jsonbValue(a, a == nil, "{}") }

// Scan implements sql.Scanner.
func (a *Amounts) Scan(src any) error { return jsonbScan(src, a) }

// TypeVersions maps each request type in a request to the version of its
// definition the request was validated against.
type TypeVersions map[string]int

// Value implements driver.Valuer.
func (t TypeVersions) Value() (driver.Value, error) { return jsonbValue(t, t == nil, "{}") }

// Scan implements sql.Scanner.
func (t *TypeVersions) Scan(src any) error { return jsonbScan(src, t) }

const requestColumns = `id, agent_id, user_id, state, scope, authorization_details, details_canonical, details_hash,
	types, type_versions, binding_message, acr_values, resources, audience, client_notification_token,
	created_at, expires_at, poll_interval, last_polled_at, decided_at, decided_by, decision_reason, acr, amr,
	token_jti, token_issued_at, token_expires_at, redeemed_at, redeemed_by, revoked_at,
	outcome, policy_version, policy_rule, policy_reason, quorum, step_up, user_required, amounts`

// insertRequestSQL stores a new request in the state the policy gave it:
// pending, approved at once by a rule (then, for a ping agent, the ping is
// enqueued in the same statement), or denied at once (kept for velocity
// counts and the audit trail). The client_notification_token, which has to
// be sent back in clear, is kept only while needed: on a pending request,
// and in the outbox row until the ping is delivered or dropped.
const insertRequestSQL = `
WITH r AS (
	INSERT INTO requests (id, agent_id, user_id, state, scope, authorization_details, details_canonical, details_hash,
		types, type_versions, binding_message, acr_values, resources, audience, client_notification_token,
		created_at, expires_at, poll_interval,
		decided_at, decision_reason, acr, amr, outcome, policy_version, policy_rule, policy_reason, quorum, amounts,
		step_up, user_required)
	-- The notification token is kept only while the request is pending; for
	-- one decided at once it goes straight into the outbox.
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
		CASE WHEN $4 = 'pending' THEN $15::text END, now(), now() + make_interval(secs => $16), $17,
		CASE WHEN $4 = 'pending' THEN NULL ELSE now() END, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)
	RETURNING ` + requestColumns + `
), ping AS (
	INSERT INTO outbox (kind, request_id, target, bearer, expires_at)
	SELECT 'ping', r.id, a.notify_url, $15::text, r.expires_at
	FROM r JOIN agents a ON a.id = r.agent_id
	WHERE r.state = 'approved' AND a.delivery_mode = 'ping' AND a.notify_url IS NOT NULL AND $15::text IS NOT NULL
)
SELECT ` + requestColumns + ` FROM r`

// InsertRequest stores a new request (state pending, approved or denied, as
// r.State says; pending when empty) that expires lifetime from now (the
// database's clock).
func (s *Store) InsertRequest(ctx context.Context, r Request, lifetime time.Duration) (Request, error) {
	return s.insertRequest(ctx, s.db, r, lifetime)
}

func (s *Store) insertRequest(ctx context.Context, q sqlx.QueryerContext, r Request, lifetime time.Duration) (Request, error) {
	if r.State == "" {
		r.State = StatePending
	}
	if r.Outcome == "" {
		r.Outcome = "approve"
	}
	var out Request
	err := q.QueryRowxContext(ctx, insertRequestSQL, r.ID, r.AgentID, r.UserID, r.State, r.Scope, []byte(r.DetailsCanonical),
		r.DetailsCanonical, r.DetailsHash, r.Types, r.TypeVersions, r.BindingMessage, r.ACRValues, r.Resources,
		r.Audience, r.ClientNotificationToken, lifetime.Seconds(), r.PollInterval,
		r.DecisionReason, r.ACR, pq.StringArray(nonNil(r.AMR)), r.Outcome, r.PolicyVersion, r.PolicyRule, r.PolicyReason,
		r.Quorum, r.Amounts, r.StepUp, r.UserRequired).StructScan(&out)
	if err != nil {
		return Request{}, fmt.Errorf("approvals: insert request: %w", translate(err))
	}
	return out, nil
}

const requestSQL = `SELECT ` + requestColumns + ` FROM requests WHERE id = $1`

// Request returns the request with id.
func (s *Store) Request(ctx context.Context, id string) (Request, error) {
	var r Request
	if err := s.db.GetContext(ctx, &r, requestSQL, id); err != nil {
		return Request{}, fmt.Errorf("approvals: request %s: %w", id, translate(err))
	}
	return r, nil
}

const admitLocksSQL = `SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), pg_advisory_xact_lock(hashtextextended($2, 0))`

// admit runs fn in a transaction that holds advisory locks on the agent and
// the user (always in that order, so two admissions cannot deadlock):
// requests of the same agent or user are admitted one at a time.
func (s *Store) admit(ctx context.Context, agentID, userID string, fn func(tx *sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("approvals: admit: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, admitLocksSQL, "velocity agent:"+agentID, "velocity user:"+userID); err != nil {
		return fmt.Errorf("approvals: admit: %w", err)
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("approvals: admit: %w", translate(err))
	}
	return nil
}

// Decision is a human's (or, later, a rule's) verdict on a pending request.
type Decision struct {
	Approve bool
	By      string   // the user who decided
	Reason  string   // optional, from the approver
	ACR     string   // urn:countersign:acr:…
	AMR     []string // how the approver authenticated (RFC 8176)
}

// decideSQL records the decision and, for an agent that uses ping delivery,
// enqueues the ping callback in the same statement, so that no crash can
// separate the two. CIBA §10.2: the OP pings the client "after a successful or
// failed end-user authentication", so both approval and denial enqueue. The
// row expires with the request; the worker builds the body ({"auth_req_id"})
// when it sends, since the auth_req_id is a MAC that is never stored.
const decideSQL = `
WITH before AS (
	-- The statement's snapshot: the notification token before it is cleared.
	SELECT id AS before_id, client_notification_token AS before_token FROM requests WHERE id = $1
), d AS (
	UPDATE requests
	SET state = $2, decided_at = now(), decided_by = $3, decision_reason = $4, acr = $5, amr = $6,
		client_notification_token = NULL
	WHERE id = $1 AND state = ANY($7) AND expires_at > now()
	RETURNING ` + requestColumns + `
), ping AS (
	INSERT INTO outbox (kind, request_id, target, bearer, expires_at)
	SELECT 'ping', d.id, a.notify_url, before_token, d.expires_at
	FROM d JOIN before ON before_id = d.id JOIN agents a ON a.id = d.agent_id
	WHERE a.delivery_mode = 'ping' AND a.notify_url IS NOT NULL AND before_token IS NOT NULL
)
SELECT ` + requestColumns + ` FROM d`

// Decide approves or denies a pending request in one guarded statement: a
// request that was already decided, cancelled or has expired is not changed,
// and the error says why. The same statement enqueues the agent's ping
// callback (CIBA ping mode) in the outbox.
func (s *Store) Decide(ctx context.Context, id string, d Decision) (Request, error) {
	ev, to := EventDeny, StateDenied
	if d.Approve {
		ev, to = EventApprove, StateApproved
	}
	var r Request
	err := s.db.QueryRowxContext(ctx, decideSQL, id, to, d.By, d.Reason, d.ACR, pq.StringArray(d.AMR),
		pq.StringArray(statesSQL(From(ev)))).StructScan(&r)
	if err == nil {
		return r, nil
	}
	return Request{}, s.whyNot(ctx, id, ev, err)
}

// AuthReqID returns the auth_req_id of request requestID: what the ping
// callback carries (CIBA §10.2). The outbox keeps only the request id, so a
// copy of the database cannot be turned into auth_req_id values.
func (s *Service) AuthReqID(requestID string) (string, error) {
	id, ok := parseUUID(requestID)
	if !ok {
		return "", fmt.Errorf("approvals: auth_req_id of %q: %w", requestID, ErrInvalidInput)
	}
	return s.handles.issue(id), nil
}

// whyNot explains why a guarded update of request id for event ev changed no
// row, by reading the request and asking the state machine.
func (s *Store) whyNot(ctx context.Context, id string, ev Event, updateErr error) error {
	if err := translate(updateErr); !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("approvals: %s %s: %w", ev, id, err)
	}
	var cur struct {
		State     State     `db:"state"`
		ExpiresAt time.Time `db:"expires_at"`
		Now       time.Time `db:"now"`
	}
	if err := s.db.GetContext(ctx, &cur, `SELECT state, expires_at, now() AS now FROM requests WHERE id = $1`, id); err != nil {
		return fmt.Errorf("approvals: %s %s: %w", ev, id, translate(err))
	}
	if _, err := Next(cur.State, ev, cur.ExpiresAt, cur.Now); err != nil {
		return fmt.Errorf("approvals: %s %s: %w", ev, id, err)
	}
	// The row changed between the update and the read: another caller won.
	return fmt.Errorf("approvals: %s %s: %w", ev, id, ErrAlreadyDecided)
}

// Poll is what one token-endpoint poll found.
type Poll struct {
	Request Request
	// TooSoon is set when the client polled again sooner than the interval
	// after its previous poll (CIBA §7.3 / RFC 8628 §3.5: slow_down); the
	// interval has then grown by 5 seconds for this and all later polls.
	TooSoon bool
	Now     time.Time
}

const pollSQL = `
WITH prev AS (
	SELECT id AS prev_id,
		(last_polled_at IS NOT NULL AND now() < last_polled_at + make_interval(secs => poll_interval)) AS prev_too_soon
	FROM requests WHERE id = $1 AND agent_id = $2
	FOR UPDATE
)
UPDATE requests
SET last_polled_at = now(),
	poll_interval = CASE WHEN prev_too_soon AND state = 'pending' THEN poll_interval + 5 ELSE poll_interval END
FROM prev
WHERE id = prev_id
RETURNING prev_too_soon AND state = 'pending' AS too_soon, now() AS now, ` + requestColumns

// Poll records a token-endpoint poll of request id by agent agentID and
// returns the request as it stands. The poll timing is read and updated under
// the row lock, so concurrent polls see each other.
func (s *Store) Poll(ctx context.Context, id, agentID string) (Poll, error) {
	var row struct {
		TooSoon bool      `db:"too_soon"`
		Now     time.Time `db:"now"`
		Request
	}
	if err := s.db.QueryRowxContext(ctx, pollSQL, id, agentID).StructScan(&row); err != nil {
		return Poll{}, fmt.Errorf("approvals: poll %s: %w", id, translate(err))
	}
	return Poll{Request: row.Request, TooSoon: row.TooSoon, Now: row.Now}, nil
}

const issueTokenSQL = `
UPDATE requests r
SET state = 'token_issued', token_jti = $2, token_issued_at = $3, token_expires_at = $4
WHERE r.id = $1 AND r.state = ANY($5) AND r.expires_at > now()
	AND EXISTS (SELECT 1 FROM agents a WHERE a.id = r.agent_id AND a.status = 'active')
	AND EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id AND u.status = 'active')
RETURNING ` + requestColumns

// IssueToken moves an approved request to token_issued, recording the token's
// jti and lifetime. Exactly one caller wins; the others get ErrAlreadyDecided.
// A suspended agent or user gets no token (ErrSuspended).
func (s *Store) IssueToken(ctx context.Context, id, jti string, issuedAt, expiresAt time.Time) (Request, error) {
	var r Request
	err := s.db.QueryRowxContext(ctx, issueTokenSQL, id, jti, issuedAt, expiresAt, pq.StringArray(statesSQL(From(EventIssue)))).StructScan(&r)
	if err == nil {
		return r, nil
	}
	// No row changed. The state machine explains expiry and wrong states;
	// when it finds nothing wrong with the request (whyNot then says another
	// caller won) yet the request is still approved, the agent or user guard
	// stopped it: one of them is suspended.
	why := s.whyNot(ctx, id, EventIssue, err)
	if errors.Is(why, ErrAlreadyDecided) && !errors.Is(why, ErrWrongState) {
		cur, rerr := s.Request(ctx, id)
		if rerr == nil && cur.State == StateApproved {
			return Request{}, fmt.Errorf("approvals: issue %s: %w", id, ErrSuspended)
		}
	}
	return Request{}, why
}

const cancelSQL = `
UPDATE requests SET state = 'cancelled', client_notification_token = NULL
WHERE id = $1 AND agent_id = $2 AND state = ANY($3) AND expires_at > now()
RETURNING id`

// Cancel withdraws a live pending request on behalf of the agent that made
// it. A request of another agent is ErrNotFound, as if it did not exist
// (CIBA §11: nothing is said of another client's request).
func (s *Store) Cancel(ctx context.Context, id, agentID string) error {
	var got string
	err := s.db.GetContext(ctx, &got, cancelSQL, id, agentID, pq.StringArray(statesSQL(From(EventCancel))))
	if err == nil {
		return nil
	}
	var owner string
	if oerr := s.db.GetContext(ctx, &owner, `SELECT agent_id FROM requests WHERE id = $1`, id); oerr != nil || owner != agentID {
		return fmt.Errorf("approvals: cancel %s: %w", id, ErrNotFound)
	}
	return s.whyNot(ctx, id, EventCancel, err)
}

// expireOneSQL expires one due request. One row per statement: the velocity
// trigger locks counter rows per request in an order that is consistent for
// single-row statements, and a many-row statement could interleave two
// requests' orders and deadlock with a decision.
const expireOneSQL = `
UPDATE requests SET state = 'expired', client_notification_token = NULL
WHERE id = (
	SELECT id FROM requests
	WHERE state = ANY($1) AND expires_at <= now()
	ORDER BY expires_at
	LIMIT 1
	FOR UPDATE SKIP LOCKED
)
RETURNING id`

// ExpireDue marks up to limit pending or approved-but-uncollected requests
// whose time is up as expired and returns their ids. Several replicas may run
// it at once: SKIP LOCKED keeps them off each other's rows.
func (s *Store) ExpireDue(ctx context.Context, limit int) ([]string, error) {
	var ids []string
	from := pq.StringArray(statesSQL(From(EventExpire)))
	for len(ids) < limit {
		var id string
		err := s.db.GetContext(ctx, &id, expireOneSQL, from)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return ids, fmt.Errorf("approvals: expire: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

const requestByJTISQL = `SELECT now() AS now, ` + requestColumns + ` FROM requests WHERE token_jti = $1`

// RequestByJTI returns the request whose token has jti, and the database's now.
func (s *Store) RequestByJTI(ctx context.Context, jti string) (Request, time.Time, error) {
	var row struct {
		Now time.Time `db:"now"`
		Request
	}
	if err := s.db.GetContext(ctx, &row, requestByJTISQL, jti); err != nil {
		return Request{}, time.Time{}, fmt.Errorf("approvals: token: %w", translate(err))
	}
	return row.Request, row.Now, nil
}

const redeemSQL = `
UPDATE requests
SET state = 'redeemed', redeemed_at = now(), redeemed_by = $2
WHERE token_jti = $1 AND state = ANY($4) AND token_expires_at > now() AND details_hash = $3
RETURNING ` + requestColumns

// Redeem spends the token with jti for resource server rsID, in one statement
// that also checks it is unspent, unexpired and bound to detailsHash. It
// returns ErrNotFound when nothing was spent; the caller reads the request to
// say why.
func (s *Store) Redeem(ctx context.Context, jti, rsID, detailsHash string) (Request, error) {
	var r Request
	err := s.db.QueryRowxContext(ctx, redeemSQL, jti, rsID, detailsHash, pq.StringArray(statesSQL(From(EventRedeem)))).StructScan(&r)
	if err != nil {
		return Request{}, fmt.Errorf("approvals: redeem: %w", translate(err))
	}
	return r, nil
}

const revokeSQL = `
UPDATE requests SET state = 'revoked', revoked_at = now()
WHERE token_jti = $1 AND state = ANY($2)
RETURNING id`

// Revoke revokes the unspent token with jti and reports whether it did.
// Revoking an unknown or already spent token is not an error (RFC 7009 §2.2).
func (s *Store) Revoke(ctx context.Context, jti string) (bool, error) {
	var got string
	err := s.db.GetContext(ctx, &got, revokeSQL, jti, pq.StringArray(statesSQL(From(EventRevoke))))
	if err != nil {
		if errors.Is(translate(err), ErrNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("approvals: revoke: %w", err)
	}
	return true, nil
}

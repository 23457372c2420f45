package approvals

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/countersign/countersign/approvals/policy"
	"github.com/jmoiron/sqlx"

	"github.com/lib/pq"
)

// Request is one approval request (a CIBA backchannel authentication request
// for one transaction) and, once approved, its single-transaction token.
type Request struct {
	ID                      string         `db:"id"`
	AgentID                 string         `db:"agent_id"`
	UserID                  string         `db:"user_id"`
	State                   State          `db:"state"`
	Scope                   string         `db:"scope"`
	DetailsCanonical        string         `db:"details_canonical"`
	DetailsHash             string         `db:"details_hash"`
	Types                   pq.StringArray `db:"types"`
	TypeVersions            TypeVersions   `db:"type_versions"`
	BindingMessage          string         `db:"binding_message"`
	ACRValues               pq.StringArray `db:"acr_values"`
	Resources               pq.StringArray `db:"resources"`
	Audience                pq.StringArray `db:"audience"`
	ClientNotificationToken *string        `db:"client_notification_token"`
	CreatedAt               time.Time      `db:"created_at"`
	ExpiresAt               time.Time      `db:"expires_at"`
	PollInterval            int            `db:"poll_interval"`
	LastPolledAt            *time.Time     `db:"last_polled_at"`
	DecidedAt               *time.Time     `db:"decided_at"`
	DecidedBy               *string        `db:"decided_by"`
	DecisionReason          string         `db:"decision_reason"`
	ACR                     string         `db:"acr"`
	AMR                     pq.StringArray `db:"amr"`
	TokenJTI                *string        `db:"token_jti"`
	TokenIssuedAt           *time.Time     `db:"token_issued_at"`
	TokenExpiresAt          *time.Time     `db:"token_expires_at"`
	RedeemedAt              *time.Time     `db:"redeemed_at"`
	RedeemedBy              *string        `db:"redeemed_by"`
	RevokedAt               *time.Time     `db:"revoked_at"`
	// What the risk policy decided at request time.
	Outcome       string     `db:"outcome"` // allow, approve, step_up, quorum or deny
	PolicyVersion *int       `db:"policy_version"`
	PolicyRule    string     `db:"policy_rule"`
	PolicyReason  string     `db:"policy_reason"`
	Quorum        QuorumJSON `db:"quorum"`
	StepUp        bool       `db:"step_up"`       // every human approval must be a step-up
	UserRequired  bool       `db:"user_required"` // the requesting user must approve
	Amounts       Amounts    `db:"amounts"`
	// Version counts the changes of the decision; reviews are persisted
	// with compare-and-swap on it.
	Version int `db:"version"`
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

// fingerprint names the versions in one string, the same for equal maps.
func (t TypeVersions) fingerprint() string {
	names := slices.Sorted(maps.Keys(t))
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%d", n, t[n])
	}
	return b.String()
}

// covers says whether t holds every type of u at u's version.
func (t TypeVersions) covers(u TypeVersions) bool {
	for n, v := range u {
		if t[n] != v {
			return false
		}
	}
	return true
}

// Value implements driver.Valuer.
func (t TypeVersions) Value() (driver.Value, error) { return jsonbValue(t, t == nil, "{}") }

// Scan implements sql.Scanner.
func (t *TypeVersions) Scan(src any) error { return jsonbScan(src, t) }

const requestColumns = `id, agent_id, user_id, state, scope, details_canonical, details_hash,
	types, type_versions, binding_message, acr_values, resources, audience, client_notification_token,
	created_at, expires_at, poll_interval, last_polled_at, decided_at, decided_by, decision_reason, acr, amr,
	token_jti, token_issued_at, token_expires_at, redeemed_at, redeemed_by, revoked_at,
	outcome, policy_version, policy_rule, policy_reason, quorum, step_up, user_required, amounts, version`

// scanTargets are pointers to r's fields in requestColumns order: the hot
// path scans into them rather than through sqlx's reflection, which was a
// third of its scanning (TestRequestScanTargets checks the order).
func (r *Request) scanTargets(extra ...any) []any {
	return append(extra, &r.ID, &r.AgentID, &r.UserID, &r.State, &r.Scope, &r.DetailsCanonical, &r.DetailsHash,
		&r.Types, &r.TypeVersions, &r.BindingMessage, &r.ACRValues, &r.Resources, &r.Audience, &r.ClientNotificationToken,
		&r.CreatedAt, &r.ExpiresAt, &r.PollInterval, &r.LastPolledAt, &r.DecidedAt, &r.DecidedBy, &r.DecisionReason, &r.ACR, &r.AMR,
		&r.TokenJTI, &r.TokenIssuedAt, &r.TokenExpiresAt, &r.RedeemedAt, &r.RedeemedBy, &r.RevokedAt,
		&r.Outcome, &r.PolicyVersion, &r.PolicyRule, &r.PolicyReason, &r.Quorum, &r.StepUp, &r.UserRequired, &r.Amounts, &r.Version)
}

// insertRequestSQL stores a new request in the state the policy gave it:
// pending, approved at once by a rule, or denied at once (kept for velocity
// counts and the audit trail). It is the hot path of every admission, so
// the change's events and, for a ping agent's request approved at once, its
// ping are written by the same statement (one round trip, one commit). The
// client_notification_token, which has to be sent back in clear, is kept
// only while the request is pending; for one approved at once it goes
// straight into the outbox.
const insertRequestSQL = insertRequestHead + insertRequestOutbox + `
SELECT ` + requestColumns + ` FROM r`

// insertDecidedSQL is insertRequestSQL for a request that sends nothing:
// no ping token and no push (every auto-allowed request of a poll agent).
// Without the outbox parts PostgreSQL plans a third of the statement.
const insertDecidedSQL = insertRequestHead + `
SELECT ` + requestColumns + ` FROM r`

const insertRequestHead = `
WITH r AS (
	INSERT INTO requests (id, agent_id, user_id, state, scope, details_canonical, details_hash,
		types, type_versions, binding_message, acr_values, resources, audience, client_notification_token,
		created_at, expires_at, poll_interval,
		decided_at, decision_reason, acr, amr, outcome, policy_version, policy_rule, policy_reason, quorum, amounts,
		step_up, user_required)
	SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
		CASE WHEN $4 = 'pending' THEN $14::text END, now(), now() + make_interval(secs => $15), $16,
		CASE WHEN $4 = 'pending' THEN NULL ELSE now() END, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27
	-- The registrations may come from a cache: a suspended agent or user is
	-- refused here, by the database.
	WHERE EXISTS (SELECT 1 FROM agents WHERE id = $2 AND status = 'active')
		AND EXISTS (SELECT 1 FROM users WHERE id = $3 AND status = 'active')
	RETURNING ` + requestColumns + `
), ev AS (
	-- request.created, and request.approved or request.denied when a rule
	-- decided at once ($28 names it).
	INSERT INTO audit_events (kind, actor, request_id, agent_id, user_id, body)
	SELECT e.kind, e.actor, r.id, r.agent_id, r.user_id, e.body
	FROM r CROSS JOIN LATERAL (VALUES
		('` + KindRequestCreated + `', 'agent:' || r.agent_id, jsonb_build_object(
			'outcome', r.outcome, 'policy_version', coalesce(r.policy_version, 0), 'rule', r.policy_rule,
			'reason', r.policy_reason, 'details_hash', r.details_hash, 'types', r.types, 'type_versions', r.type_versions,
			'step_up', r.step_up, 'user_required', r.user_required, 'quorum', r.quorum, 'audience', r.audience,
			'expires_at', r.expires_at)),
		(CASE r.state WHEN 'approved' THEN '` + KindRequestApproved + `' WHEN 'denied' THEN '` + KindRequestDenied + `' END,
			$28::text,
			CASE r.state WHEN 'approved' THEN jsonb_build_object('acr', r.acr, 'amr', r.amr)
				ELSE jsonb_build_object('reason', r.decision_reason) END)
	) AS e(kind, actor, body)
	WHERE e.kind IS NOT NULL
	RETURNING id
)`

const insertRequestOutbox = `, ping AS (
	INSERT INTO outbox (kind, request_id, target, bearer, expires_at)
	SELECT 'ping', r.id, a.notify_url, $14::text, r.expires_at
	FROM r JOIN agents a ON a.id = r.agent_id
	WHERE r.state = 'approved' AND a.delivery_mode = 'ping' AND a.notify_url IS NOT NULL AND $14::text IS NOT NULL
	RETURNING id, kind, request_id, subscription_id, payload
), push AS (
	-- A pending request's Web Push ($29, the message) to every device of
	-- its user and of the members of its quorum groups, unless the person
	-- was told of $30 requests in the last minute already (0: no limit).
	INSERT INTO outbox (kind, request_id, target, payload, expires_at, subscription_id)
	SELECT 'push', r.id, s.endpoint, $29::jsonb, r.expires_at, s.id
	FROM r JOIN push_subscriptions s ON s.user_id = r.user_id OR s.user_id IN (
		SELECT u.id FROM users u
		WHERE u.status = 'active' AND u.groups && ARRAY(SELECT q->>'Group' FROM jsonb_array_elements(r.quorum) q))
	WHERE r.state = 'pending' AND $29::jsonb IS NOT NULL
		AND ($30::int = 0 OR (SELECT count(DISTINCT o.request_id) FROM outbox o JOIN push_subscriptions ps ON ps.id = o.subscription_id
			WHERE ps.user_id = s.user_id AND o.kind = 'push' AND o.payload->>'type' = 'new'
				AND o.created_at > now() - interval '1 minute') < $30::int)
	ON CONFLICT DO NOTHING
	RETURNING id, kind, request_id, subscription_id, payload
), queued AS (` + queuedEventsSQL + `
	FROM (SELECT * FROM ping UNION ALL SELECT * FROM push) q JOIN r ON r.id = q.request_id
	WHERE (SELECT count(*) FROM ev) >= 0 -- after the request's own events
)`

// insertRequest stores new request r (state pending, approved or denied, as
// r.State says) that expires lifetime from now (the database's clock), with
// its events and, pending, its pushes (push: the message, nil for none; at most pushRate a
// minute to one person, 0 for no limit),
// through q: the pool (then it is a change of its own) or an
// admission's transaction.
func (s *Store) insertRequest(ctx context.Context, q sqlx.QueryerContext, r Request, lifetime time.Duration, push []byte, pushRate int) (Request, error) {
	rule := ActorServer
	if r.PolicyVersion != nil {
		rule = ActorRule(*r.PolicyVersion, r.PolicyRule)
	}
	var out Request
	args := []any{r.ID, r.AgentID, r.UserID, r.State, r.Scope,
		r.DetailsCanonical, r.DetailsHash, r.Types, r.TypeVersions, r.BindingMessage, r.ACRValues, r.Resources,
		r.Audience, r.ClientNotificationToken, lifetime.Seconds(), r.PollInterval,
		r.DecisionReason, r.ACR, pq.StringArray(nonNil(r.AMR)), r.Outcome, r.PolicyVersion, r.PolicyRule, r.PolicyReason,
		r.Quorum, r.Amounts, r.StepUp, r.UserRequired, rule}
	stmt := &s.insertDecidedStmt
	if push != nil || r.ClientNotificationToken != nil {
		stmt = &s.insertRequestStmt
		args = append(args, jsonText(push), pushRate)
	}
	err := stmt.row(ctx, s.db, q, args...).Scan(out.scanTargets()...)
	if errors.Is(err, sql.ErrNoRows) {
		return Request{}, fmt.Errorf("approvals: insert request: %w", ErrSuspended)
	}
	if err != nil {
		return Request{}, fmt.Errorf("approvals: insert request: %w", translate(err))
	}
	if t, ok := q.(*Tx); ok {
		t.counted(out)
	}
	return out, nil
}

const requestSQL = `SELECT ` + requestColumns + ` FROM requests WHERE id = $1`

// Request returns the request with id.
func (s *Store) Request(ctx context.Context, id string) (Request, error) {
	return request(ctx, s.db, id)
}

func request(ctx context.Context, q sqlx.QueryerContext, id string) (Request, error) {
	var r Request
	if err := sqlx.GetContext(ctx, q, &r, requestSQL, id); err != nil {
		return Request{}, fmt.Errorf("approvals: request %s: %w", id, translate(err))
	}
	return r, nil
}

// AuthReqID returns the auth_req_id of request requestID: what the ping
// callback carries (CIBA §10.2). The outbox keeps only the request id, so a
// copy of the database cannot be turned into auth_req_id values.
func (s *Service) AuthReqID(requestID string) (string, error) {
	id, ok := parseUUID(requestID)
	if !ok {
		return "", fmt.Errorf("approvals: auth_req_id of %q: %w", requestID, ErrInvalidInput)
	}
	return s.authReqIDs.issue(id), nil
}

// whyNot explains why a guarded update of request id for act changed no
// row, by reading the request (on the same transaction) and asking the
// state machine.
func whyNot(ctx context.Context, q sqlx.QueryerContext, id string, act Action, updateErr error) error {
	if err := translate(updateErr); !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("approvals: %s %s: %w", act, id, err)
	}
	var cur struct {
		State     State     `db:"state"`
		ExpiresAt time.Time `db:"expires_at"`
		Now       time.Time `db:"now"`
	}
	if err := sqlx.GetContext(ctx, q, &cur, `SELECT state, expires_at, now() AS now FROM requests WHERE id = $1`, id); err != nil {
		return fmt.Errorf("approvals: %s %s: %w", act, id, translate(err))
	}
	if _, err := Next(cur.State, act, cur.ExpiresAt, cur.Now); err != nil {
		return fmt.Errorf("approvals: %s %s: %w", act, id, err)
	}
	// The row changed between the update and the read: another caller won.
	return fmt.Errorf("approvals: %s %s: %w", act, id, ErrAlreadyDecided)
}

// Poll is what one token-endpoint poll found.
type Poll struct {
	Request Request
	// Issued is set when the poll collected the token: the request was
	// approved and is now token_issued, with the jti, issue and expiry
	// times of the token to hand out.
	Issued bool
	// TooSoon is set when the client polled again sooner than the interval
	// after its previous poll (CIBA §7.3 / RFC 8628 §3.5: slow_down); the
	// interval has then grown by 5 seconds for this and all later polls.
	TooSoon bool
	Now     time.Time
	// UserEmail is the user's email when the token was collected (for the
	// ID token's email claim).
	UserEmail string
}

// pollSQL records a poll and, when the request is approved, collects its
// token in the same guarded statement: one round trip and one commit for the
// token endpoint's hot path. Poll timing is read and updated under the row
// lock, so concurrent polls see each other and only one collects. A token is
// collected only while the request lives for another second (a token must
// not be born expired) and its agent and user are active: the database
// refuses what a cached registration would allow. Times are the database's,
// whole seconds, as in the token.
const pollSQL = `
WITH prev AS (
	SELECT r.id AS prev_id,
		(r.last_polled_at IS NOT NULL AND now() < r.last_polled_at + make_interval(secs => r.poll_interval)) AS prev_too_soon,
		(r.state = 'approved' AND date_trunc('second', r.expires_at) > date_trunc('second', now())
			AND EXISTS (SELECT 1 FROM agents a WHERE a.id = r.agent_id AND a.status = 'active')
			AND EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id AND u.status = 'active')) AS collect
	FROM requests r WHERE r.id = $1 AND r.agent_id = $2
	FOR UPDATE OF r
), polled AS (
	UPDATE requests
	SET last_polled_at = now(),
		poll_interval = CASE WHEN prev_too_soon AND state = 'pending' THEN poll_interval + 5 ELSE poll_interval END,
		state = CASE WHEN collect THEN 'token_issued' ELSE state END,
		token_jti = CASE WHEN collect THEN $3 ELSE token_jti END,
		token_issued_at = CASE WHEN collect THEN date_trunc('second', now()) ELSE token_issued_at END,
		token_expires_at = CASE WHEN collect
			THEN least(date_trunc('second', now()) + make_interval(secs => $4), date_trunc('second', expires_at))
			ELSE token_expires_at END
	FROM prev
	WHERE id = prev_id
	RETURNING collect AS issued, prev_too_soon AND state = 'pending' AS too_soon, now() AS now,
		CASE WHEN collect THEN (SELECT email FROM users u WHERE u.id = user_id) ELSE '' END AS user_email, ` + requestColumns + `
), ev AS (
	INSERT INTO audit_events (kind, actor, request_id, agent_id, user_id, body)
	SELECT '` + KindTokenIssued + `', 'agent:' || agent_id, id, agent_id, user_id, jsonb_build_object(
		'jti', token_jti, 'issued_at', token_issued_at, 'expires_at', token_expires_at,
		'acr', acr, 'amr', amr, 'audience', audience)
	FROM polled WHERE issued
)
SELECT * FROM polled`

// Poll records a token-endpoint poll of request id by agent agentID and, if
// the request is approved, collects its token: jti, living ttl (never past
// the request's expiry). It returns the request as it then stands.
func (s *Store) Poll(ctx context.Context, id, agentID, jti string, ttl time.Duration) (Poll, error) {
	var p Poll
	if err := s.pollStmt.row(ctx, s.db, s.db, id, agentID, jti, ttl.Seconds()).
		Scan(p.Request.scanTargets(&p.Issued, &p.TooSoon, &p.Now, &p.UserEmail)...); err != nil {
		return Poll{}, fmt.Errorf("approvals: poll %s: %w", id, translate(err))
	}
	return p, nil
}

const cancelSQL = `
UPDATE requests SET state = 'cancelled', client_notification_token = NULL
WHERE id = $1 AND agent_id = $2 AND state = ANY($3) AND expires_at > now()
	AND velocity_lock_shared(agent_id, user_id, types) -- migration 00021
RETURNING ` + requestColumns

// Cancel withdraws a live pending request on behalf of the agent that made
// it. A request of another agent is ErrNotFound, as if it did not exist
// (CIBA §11: nothing is said of another client's request).
func (s *Store) Cancel(ctx context.Context, id, agentID string) error {
	return s.change(ctx, func(t *Tx) error {
		var r Request
		err := t.QueryRowxContext(ctx, cancelSQL, id, agentID, pq.StringArray(statesSQL(From(ActionCancel)))).StructScan(&r)
		if err != nil {
			var owner string
			if oerr := t.GetContext(ctx, &owner, `SELECT agent_id FROM requests WHERE id = $1`, id); oerr != nil || owner != agentID {
				return fmt.Errorf("approvals: cancel %s: %w", id, ErrNotFound)
			}
			return whyNot(ctx, t, id, ActionCancel, err)
		}
		t.record(newEvent(KindRequestCancelled, ActorAgent(agentID), r, nil))
		return nil
	})
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
) AND velocity_lock_shared(agent_id, user_id, types) -- migration 00021
RETURNING ` + requestColumns

// ExpireDue marks up to limit pending or approved-but-uncollected requests
// whose time is up as expired and returns their ids. Several replicas may run
// it at once: SKIP LOCKED keeps them off each other's rows.
func (s *Store) ExpireDue(ctx context.Context, limit int) ([]string, error) {
	var ids []string
	from := pq.StringArray(statesSQL(From(ActionExpire)))
	for len(ids) < limit {
		var r Request
		err := s.change(ctx, func(t *Tx) error {
			if err := t.QueryRowxContext(ctx, expireOneSQL, from).StructScan(&r); err != nil {
				return err
			}
			t.record(newEvent(KindRequestExpired, ActorSweeper, r, nil))
			return nil
		})
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return ids, fmt.Errorf("approvals: expire: %w", err)
		}
		ids = append(ids, r.ID)
	}
	return ids, nil
}

const requestByJTISQL = `
SELECT now() AS now,
	EXISTS (SELECT 1 FROM agents a WHERE a.id = agent_id AND a.status = 'active')
		AND EXISTS (SELECT 1 FROM users u WHERE u.id = user_id AND u.status = 'active') AS parties_active,
	` + requestColumns + ` FROM requests WHERE token_jti = $1`

// RequestByJTI returns the request whose token has jti, and the database's now.
func (s *Store) RequestByJTI(ctx context.Context, jti string) (Request, time.Time, error) {
	var row struct {
		Now           time.Time `db:"now"`
		PartiesActive bool      `db:"parties_active"`
		Request
	}
	if err := s.db.GetContext(ctx, &row, requestByJTISQL, jti); err != nil {
		return Request{}, time.Time{}, fmt.Errorf("approvals: token: %w", translate(err))
	}
	if !row.PartiesActive && row.State == StateTokenIssued {
		// Its agent or user is suspended: the token is as good as revoked.
		row.State = StateRevoked
	}
	return row.Request, row.Now, nil
}

// redeemSQL spends a token in one statement that checks everything a
// redemption needs — unspent, unexpired, meant for the resource server
// ($5 in aud), bound to the details hash — and writes its event: the
// resource server's hot path is one round trip and one commit.
const redeemSQL = `
WITH r AS (
	UPDATE requests
	SET state = 'redeemed', redeemed_at = now(), redeemed_by = $2
	WHERE token_jti = $1 AND state = ANY($4) AND token_expires_at > now() AND details_hash = $3 AND $5 = ANY(audience)
		-- A token collected while its agent or user was being suspended
		-- escaped the suspension's revocation: it is refused here.
		AND EXISTS (SELECT 1 FROM agents a WHERE a.id = agent_id AND a.status = 'active')
		AND EXISTS (SELECT 1 FROM users u WHERE u.id = user_id AND u.status = 'active')
	RETURNING ` + requestColumns + `
), ev AS (
	INSERT INTO audit_events (kind, actor, request_id, agent_id, user_id, body)
	SELECT '` + KindTokenRedeemed + `', 'resource_server:' || $2, id, agent_id, user_id, jsonb_build_object('jti', token_jti)
	FROM r
)
SELECT ` + requestColumns + ` FROM r`

// Redeem spends the token with jti for resource server rs if it is unspent,
// unexpired, meant for rs and bound to detailsHash. It returns ErrNotFound
// when nothing was spent; the caller reads the request to say why.
func (s *Store) Redeem(ctx context.Context, jti string, rs ResourceServer, detailsHash string) (Request, error) {
	var r Request
	err := s.redeemStmt.row(ctx, s.db, s.db, jti, rs.ID, detailsHash, pq.StringArray(statesSQL(From(ActionRedeem))), rs.Audience).
		Scan(r.scanTargets()...)
	if err != nil {
		return Request{}, fmt.Errorf("approvals: redeem: %w", translate(err))
	}
	return r, nil
}

const revokeSQL = `
UPDATE requests SET state = 'revoked', revoked_at = now()
WHERE token_jti = $1 AND state = ANY($2)
RETURNING ` + requestColumns

// Revoke revokes the unspent token with jti on behalf of actor and reports
// whether it did. Revoking an unknown or already spent token is not an error
// (RFC 7009 §2.2).
func (s *Store) Revoke(ctx context.Context, jti, actor string) (bool, error) {
	revoked := false
	err := s.change(ctx, func(t *Tx) error {
		var r Request
		err := t.QueryRowxContext(ctx, revokeSQL, jti, pq.StringArray(statesSQL(From(ActionRevoke)))).StructScan(&r)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("approvals: revoke: %w", err)
		}
		revoked = true
		t.record(newEvent(KindTokenRevoked, actor, r, map[string]any{"jti": jti}))
		return nil
	})
	return revoked, err
}

// revokeTokensOfSQL revokes every unspent token of an agent ($1 'agent') or a
// user ($1 'user') with id $2: what suspending them does.
const revokeTokensOfSQL = `
UPDATE requests SET state = 'revoked', revoked_at = now()
WHERE state = 'token_issued' AND CASE WHEN $1 = 'agent' THEN agent_id = $2 ELSE user_id = $2 END
RETURNING ` + requestColumns

// revokeTokensOf revokes the unspent tokens of an agent or a user in t, with
// an event for each.
func revokeTokensOf(ctx context.Context, t *Tx, who, id, actor, reason string) error {
	var rs []Request
	if err := sqlx.SelectContext(ctx, t, &rs, revokeTokensOfSQL, who, id); err != nil {
		return fmt.Errorf("approvals: revoke tokens of %s %s: %w", who, id, err)
	}
	for _, r := range rs {
		t.record(newEvent(KindTokenRevoked, actor, r, map[string]any{"jti": r.TokenJTI, "reason": reason}))
	}
	return nil
}

// Cancel withdraws a pending request of agent's.
func (s *Service) Cancel(ctx context.Context, agent Agent, authReqID string) error {
	id, err := s.requestIDOf(authReqID)
	if err != nil {
		return err
	}
	err = s.store.Cancel(ctx, id, agent.ID)
	switch {
	case err == nil:
		s.logger.InfoContext(ctx, "request cancelled", "id", id, "agent", agent.ID)
		return nil
	case errors.Is(err, ErrNotFound):
		return refuse(CodeInvalidGrant, "auth_req_id is not valid")
	case errors.Is(err, ErrExpired):
		return refuse(CodeExpiredToken, "the request has expired")
	case errors.Is(err, ErrAlreadyDecided), errors.Is(err, ErrWrongState):
		return refuse(CodeInvalidGrant, "the request is no longer pending")
	}
	return err
}

// jsonText passes JSON b as text (binary parameters would be taken for
// jsonb's binary format), nil as NULL.
func jsonText(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

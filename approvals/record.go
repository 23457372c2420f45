package approvals

// Kinds and actors of the events that complete the record (SPEC §8), beside
// those in events.go.
const (
	// A consent page shown to a person (once per session and request).
	KindRequestViewed = "request.viewed"
	// Step-up evidence (a WebAuthn assertion for one request) stored.
	KindEvidenceRecorded = "evidence.recorded"
	// A key no longer current: it still verifies, it signs no more.
	KindKeyDemoted = "key.demoted"
	// Wrong user codes locked a user's code for a while.
	KindUserCodeLocked = "user.user_code_locked"
	// Outbound notifications (pings and pushes, through the outbox): a row
	// queued, an attempt delivered or failed, a row dropped unsent
	// (superseded or expired) without an attempt.
	KindNotificationQueued  = "notification.queued"
	KindNotificationSent    = "notification.sent"
	KindNotificationFailed  = "notification.failed"
	KindNotificationDropped = "notification.dropped"

	// ActorNotify is the outbox and its workers.
	ActorNotify = "system:notify"
)

// The events of outbound notifications are written by the statements that
// write or change their outbox rows: queued by the change that enqueues
// them, sent and failed by the worker that records an attempt (package
// notify), dropped by whatever drops a row unsent. Their bodies say which
// channel (ping or push), which outbox row and device, which attempt and
// how it ended (HTTP status, a class of error) — never the target URL (a
// push endpoint is a capability), the bearer, the keys or the payload.

// queuedEventsSQL records notification.queued for the outbox rows q (id,
// kind, request_id, subscription_id, payload) of requests r; the caller
// adds the FROM.
const queuedEventsSQL = `
	INSERT INTO audit_events (kind, actor, request_id, agent_id, user_id, body)
	SELECT '` + KindNotificationQueued + `', '` + ActorNotify + `', q.request_id, r.agent_id, r.user_id,
		jsonb_strip_nulls(jsonb_build_object('channel', q.kind, 'outbox_id', q.id, 'device', q.subscription_id,
			'message', q.payload->>'type'))`

// RequestOfSQL is the FROM item that joins rows alias (with a request_id)
// to their request's agent and user as r: one lookup by key per row. A
// plain join lets the planner, which guesses that the rows of a CTE or a
// jsonb_to_recordset are many, hash the whole requests table for them: a
// sequential scan of every request per decision.
func RequestOfSQL(alias string) string {
	return `CROSS JOIN LATERAL (SELECT agent_id, user_id FROM requests WHERE id = ` + alias + `.request_id OFFSET 0) r`
}

// DroppedEventsSQL records notification.dropped for the outbox rows d (id,
// kind, request_id, subscription_id, attempts, drop_reason) dropped without
// an attempt, of requests r; the caller adds the FROM. Package notify uses
// it for the rows it drops when their request expires.
const DroppedEventsSQL = `
	INSERT INTO audit_events (kind, actor, request_id, agent_id, user_id, body)
	SELECT '` + KindNotificationDropped + `', '` + ActorNotify + `', d.request_id, r.agent_id, r.user_id,
		jsonb_strip_nulls(jsonb_build_object('channel', d.kind, 'outbox_id', d.id, 'device', d.subscription_id,
			'attempts', d.attempts, 'reason', d.drop_reason))`

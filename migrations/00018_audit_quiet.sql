-- +goose Up
-- Events no subscriber acts on are not announced either: notification
-- queued, sent, failed and dropped (the outbox's own record; no page or
-- cache follows them), and request.viewed (a consent page shown: announcing
-- it would tell the page that showed it that its request changed, and a
-- live page would reload). Every NOTIFY takes one cluster-wide lock through
-- its commit; a ping agent's auto-allowed request, whose ping is queued in
-- its admission, must not take it for its notification.queued row.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION audit_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind IN ('token.issued', 'token.redeemed', 'request.viewed')
        OR NEW.kind LIKE 'notification.%'
        OR (NEW.kind = 'request.created' AND NEW.body ->> 'outcome' IN ('allow', 'deny'))
        OR (NEW.kind IN ('request.approved', 'request.denied') AND NEW.actor LIKE 'rule:%')
        OR (NEW.kind = 'request.denied' AND NEW.actor = 'system:server') THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('countersign_events', json_build_object(
        'id', NEW.id, 'kind', NEW.kind, 'request_id', NEW.request_id,
        'agent_id', NEW.agent_id, 'user_id', NEW.user_id, 'subject', NEW.subject)::text);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION audit_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind IN ('token.issued', 'token.redeemed')
        OR (NEW.kind = 'request.created' AND NEW.body ->> 'outcome' IN ('allow', 'deny'))
        OR (NEW.kind IN ('request.approved', 'request.denied') AND NEW.actor LIKE 'rule:%')
        OR (NEW.kind = 'request.denied' AND NEW.actor = 'system:server') THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('countersign_events', json_build_object(
        'id', NEW.id, 'kind', NEW.kind, 'request_id', NEW.request_id,
        'agent_id', NEW.agent_id, 'user_id', NEW.user_id, 'subject', NEW.subject)::text);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

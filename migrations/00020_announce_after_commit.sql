-- +goose Up
-- A server announces the request and review events of its busiest changes
-- itself, right after they commit (a pending admission, a person's review),
-- from a statement of its own that does not wait for the WAL flush. Such a
-- change sets countersign.announce = 'after' for its transaction, and its
-- request.* and review.* events are not announced by this trigger. Every
-- NOTIFY takes one cluster-wide lock from before its commit until the commit
-- is flushed, so all announcing changes of all servers queued on it, one
-- flush at a time. Every other change, and any change made without the
-- setting, is announced here as before.
-- The trigger's condition also skips the events migration 18 made quiet,
-- so that PL/pgSQL is not called for them at all.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION audit_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind IN ('token.issued', 'token.redeemed', 'request.viewed')
        OR NEW.kind LIKE 'notification.%'
        OR (NEW.kind = 'request.created' AND NEW.body ->> 'outcome' IN ('allow', 'deny'))
        OR (NEW.kind IN ('request.approved', 'request.denied') AND NEW.actor LIKE 'rule:%')
        OR (NEW.kind = 'request.denied' AND NEW.actor = 'system:server')
        OR ((NEW.kind LIKE 'request.%' OR NEW.kind LIKE 'review.%')
            AND current_setting('countersign.announce', true) = 'after') THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('countersign_events', json_build_object(
        'id', NEW.id, 'kind', NEW.kind, 'request_id', NEW.request_id,
        'agent_id', NEW.agent_id, 'user_id', NEW.user_id, 'subject', NEW.subject)::text);
    RETURN NULL;
END
$$;
-- +goose StatementEnd
DROP TRIGGER audit_events_announce ON audit_events;
CREATE TRIGGER audit_events_announce AFTER INSERT ON audit_events
FOR EACH ROW WHEN (NOT coalesce(
    NEW.kind IN ('token.issued', 'token.redeemed', 'request.viewed')
    OR NEW.kind LIKE 'notification.%'
    OR (NEW.kind = 'request.created' AND NEW.body ->> 'outcome' IN ('allow', 'deny'))
    OR (NEW.kind IN ('request.approved', 'request.denied') AND NEW.actor LIKE 'rule:%')
    OR (NEW.kind = 'request.denied' AND NEW.actor = 'system:server')
    OR ((NEW.kind LIKE 'request.%' OR NEW.kind LIKE 'review.%')
        AND current_setting('countersign.announce', true) = 'after'), false))
EXECUTE FUNCTION audit_events_notify();

-- +goose Down
DROP TRIGGER audit_events_announce ON audit_events;
CREATE TRIGGER audit_events_announce AFTER INSERT ON audit_events
FOR EACH ROW WHEN (NOT coalesce(
    NEW.kind IN ('token.issued', 'token.redeemed')
    OR (NEW.kind = 'request.created' AND NEW.body ->> 'outcome' IN ('allow', 'deny'))
    OR (NEW.kind IN ('request.approved', 'request.denied') AND NEW.actor LIKE 'rule:%')
    OR (NEW.kind = 'request.denied' AND NEW.actor = 'system:server'), false))
EXECUTE FUNCTION audit_events_notify();
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

-- +goose Up
-- The event spine: one append-only row per thing that happened, written in
-- the same transaction as the change it records (a failed change writes
-- none). Rows are never changed or removed; the audit sealer (a later
-- migration) chains them by hash over their RFC 8785 canonical JSON, so every
-- column has a plain JSON form: integers, text, and a timestamp rendered by
-- the sealer in one fixed format.
CREATE TABLE audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The database's time of the transaction that made the change.
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL CHECK (kind ~ '^[a-z_]+\.[a-z_]+$'),
    -- Who made it happen: agent:<id>, user:<id>, rule:<policy version>/<rule>,
    -- resource_server:<id>, admin:cli, system:sweeper.
    actor       text NOT NULL CHECK (actor ~ '^[a-z_]+:.+$'),
    -- The ids it concerns (any may be null).
    request_id  uuid,
    agent_id    text,
    user_id     text,
    -- Another object it concerns: a resource server, a type, a policy version
    -- or a signing key, as kind:id.
    subject     text,
    -- What happened, with before/after for admin changes; never a secret,
    -- never the authorization_details themselves (their hash is enough).
    body        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(body) = 'object')
);
CREATE INDEX audit_events_request ON audit_events (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX audit_events_at ON audit_events (at);

-- Append-only: UPDATE, DELETE and TRUNCATE are refused for every role, the
-- table owner's included.
-- +goose StatementBegin
CREATE FUNCTION audit_events_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_immutable();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
FOR EACH STATEMENT EXECUTE FUNCTION audit_events_immutable();

-- Events are announced on channel countersign_events when their transaction
-- commits (NOTIFY is transactional): ids and kind only, never details or
-- secrets. Every replica's listener hands them to its subscribers (caches,
-- live pages). Announced are the events a subscriber acts on: every change
-- of a registration, type, policy or key, and every event of a request a
-- person may see. Not announced are the auto-allowed admission and token
-- collection and redemption, which no page shows and no cache keeps: every
-- NOTIFY takes one cluster-wide lock through its commit, and the hot path
-- would wait on it.
-- +goose StatementBegin
CREATE FUNCTION audit_events_notify() RETURNS trigger
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
CREATE TRIGGER audit_events_announce AFTER INSERT ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_notify();

-- +goose Down
DROP TABLE audit_events;
DROP FUNCTION audit_events_notify();
DROP FUNCTION audit_events_immutable();

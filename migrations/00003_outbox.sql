-- +goose Up
-- The delivery outbox: outbound work (CIBA ping callbacks now, Web Push
-- later) written in the same transaction as the event that causes it, and
-- delivered at least once by the workers of every replica (package notify).
CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('ping', 'push')),
    request_id      uuid NOT NULL REFERENCES requests (id),
    target          text NOT NULL,
    -- The body for kinds whose body is fixed when the row is written. A ping's
    -- body, {"auth_req_id": …}, is built when it is sent: the auth_req_id is a
    -- MAC under a server key and is never stored.
    payload         jsonb NOT NULL DEFAULT '{}',
    -- The bearer credential the target expects (CIBA §10.2: the
    -- client_notification_token). It must be sent in clear, so it is kept only
    -- until the row is delivered or dropped.
    bearer          text,
    attempts        integer NOT NULL DEFAULT 0,
    -- Claims of a row whose previous claim ran out without a result: that
    -- attempt may have been delivered, so this one may be a duplicate.
    duplicates      integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A worker that claims a row holds it until lease_until; if it dies, the
    -- row becomes claimable again when the lease runs out.
    lease_until     timestamptz,
    last_error      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- The request's expiry: a row not delivered by then is dropped.
    expires_at      timestamptz NOT NULL,
    delivered_at    timestamptz,
    dropped_at      timestamptz,
    drop_reason     text NOT NULL DEFAULT '',
    CHECK (delivered_at IS NULL OR dropped_at IS NULL),
    CHECK ((delivered_at IS NULL AND dropped_at IS NULL) OR (bearer IS NULL AND lease_until IS NULL)),
    CHECK ((dropped_at IS NULL) = (drop_reason = ''))
);
-- The claim query: open rows in the order they fall due.
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND dropped_at IS NULL;
CREATE INDEX outbox_request ON outbox (request_id);

-- +goose Down
DROP TABLE outbox;

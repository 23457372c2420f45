-- +goose Up
-- Web Push (RFC 8030, 8291, 8292): the server's VAPID key pair, sealed
-- with the key-encryption key like the signing keys (one row, made once),
-- and the push subscriptions of people's devices.
CREATE TABLE vapid_keys (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- The application server key as browsers take it: the uncompressed
    -- P-256 point, base64url without padding.
    public_key      text NOT NULL,
    private_sealed  bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE push_subscriptions (
    id              text PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Chosen by the browser's push service: sent to only under the same
    -- outbound rules as ping callbacks.
    endpoint        text NOT NULL UNIQUE,
    -- The subscription's keys (RFC 8291 §3): the user agent's P-256 public
    -- key and the authentication secret, base64url.
    p256dh          text NOT NULL,
    auth            text NOT NULL,
    name            text NOT NULL,
    user_agent      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_pushed_at  timestamptz
);
CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id);

-- A push row names its subscription; a removed subscription leaves its rows
-- (history) without it, and any not yet sent are dropped. At most one message of each type ("new", "decided") per request and
-- device.
ALTER TABLE outbox ADD COLUMN subscription_id text REFERENCES push_subscriptions (id) ON DELETE SET NULL;
CREATE UNIQUE INDEX outbox_push_once ON outbox (request_id, subscription_id, (payload->>'type')) WHERE kind = 'push';
-- The per-user push rate: recent push rows by subscription.
CREATE INDEX outbox_push_recent ON outbox (subscription_id, created_at) WHERE kind = 'push';

-- +goose Down
DROP INDEX outbox_push_recent;
DROP INDEX outbox_push_once;
ALTER TABLE outbox DROP COLUMN subscription_id;
DROP TABLE push_subscriptions;
DROP TABLE vapid_keys;

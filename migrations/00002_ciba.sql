-- +goose Up
-- Agents are OAuth clients (client_id = id). Secrets are 256-bit random values,
-- stored only as SHA-256.
CREATE TABLE agents (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    domain          text NOT NULL,
    types           text[] NOT NULL,
    labels          jsonb NOT NULL DEFAULT '{}',
    delivery_mode   text NOT NULL CHECK (delivery_mode IN ('poll', 'ping')),
    notify_url      text,
    auth_method     text NOT NULL CHECK (auth_method IN ('client_secret_basic', 'client_secret_post', 'private_key_jwt')),
    secret_hash     bytea,
    jwks            jsonb,
    jwks_url        text,
    id_token_alg    text NOT NULL DEFAULT 'ES256' CHECK (id_token_alg IN ('ES256', 'RS256')),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (delivery_mode = 'poll' OR notify_url IS NOT NULL),
    CHECK (auth_method = 'private_key_jwt' OR secret_hash IS NOT NULL)
);

-- Users approve requests. user_code is low-entropy, so it is kept as argon2id.
CREATE TABLE users (
    id              text PRIMARY KEY,
    email           text NOT NULL UNIQUE,
    name            text NOT NULL DEFAULT '',
    roles           text[] NOT NULL DEFAULT '{}',
    groups          text[] NOT NULL DEFAULT '{}',
    user_code_hash  text,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Resource servers call /introspect and /redeem with their own credentials.
CREATE TABLE resource_servers (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    audience        text NOT NULL UNIQUE,
    types           text[] NOT NULL DEFAULT '{}',
    secret_hash     bytea NOT NULL,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Token signing keys, the private half sealed with AES-GCM under the
-- key-encryption key from configuration. One current key per algorithm; the
-- previous ones stay in the JWKS until tokens signed with them have expired.
CREATE TABLE signing_keys (
    kid             text PRIMARY KEY,
    alg             text NOT NULL CHECK (alg IN ('ES256', 'RS256')),
    public_jwk      jsonb NOT NULL,
    private_sealed  bytea NOT NULL,
    status          text NOT NULL CHECK (status IN ('current', 'previous', 'retired')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    rotated_at      timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (alg) WHERE status = 'current';

-- A request is one CIBA backchannel authentication request for one
-- transaction, and later its single-transaction token.
CREATE TABLE requests (
    id                      uuid PRIMARY KEY,
    agent_id                text NOT NULL REFERENCES agents (id),
    user_id                 text NOT NULL REFERENCES users (id),
    state                   text NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'cancelled', 'token_issued', 'redeemed', 'revoked')),
    scope                   text NOT NULL,
    authorization_details   jsonb NOT NULL,
    details_canonical       text NOT NULL,
    details_hash            text NOT NULL,
    types                   text[] NOT NULL,
    type_versions           jsonb NOT NULL,
    binding_message         text NOT NULL DEFAULT '',
    acr_values              text[] NOT NULL DEFAULT '{}',
    resources               text[] NOT NULL DEFAULT '{}',
    audience                text[] NOT NULL,
    client_notification_token text,
    created_at              timestamptz NOT NULL,
    expires_at              timestamptz NOT NULL,
    -- Poll timing lives here, not in a process: CIBA §7.3 interval and the
    -- slow_down increase (which holds for all later polls).
    poll_interval           integer NOT NULL,
    last_polled_at          timestamptz,
    decided_at              timestamptz,
    decided_by              text REFERENCES users (id),
    decision_reason         text NOT NULL DEFAULT '',
    acr                     text NOT NULL DEFAULT '',
    amr                     text[] NOT NULL DEFAULT '{}',
    token_jti               text UNIQUE,
    token_issued_at         timestamptz,
    token_expires_at        timestamptz,
    redeemed_at             timestamptz,
    redeemed_by             text REFERENCES resource_servers (id),
    revoked_at              timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX requests_user_pending ON requests (user_id, created_at DESC) WHERE state = 'pending';
CREATE INDEX requests_expiring ON requests (expires_at) WHERE state IN ('pending', 'approved');
CREATE INDEX requests_agent_created ON requests (agent_id, created_at DESC);

-- +goose Down
DROP TABLE requests;
DROP TABLE signing_keys;
DROP TABLE resource_servers;
DROP TABLE users;
DROP TABLE agents;

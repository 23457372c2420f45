-- +goose Up
-- The people's side: passkeys, one-time links (enrollment; dev sign-in),
-- server-side sessions and WebAuthn ceremonies in progress. Secrets are
-- kept only as SHA-256 hashes: a copy of the database signs nobody in.

CREATE TABLE passkeys (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          text NOT NULL REFERENCES users (id),
    credential_id    bytea NOT NULL UNIQUE,
    public_key       bytea NOT NULL,           -- COSE key
    sign_count       bigint NOT NULL DEFAULT 0 CHECK (sign_count BETWEEN 0 AND 4294967295),
    aaguid           bytea,
    transports       text[] NOT NULL DEFAULT '{}',
    backup_eligible  boolean NOT NULL DEFAULT false,
    backup_state     boolean NOT NULL DEFAULT false,
    user_verified    boolean NOT NULL DEFAULT false,
    attestation_type text NOT NULL DEFAULT '',
    name             text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    -- Set when an assertion's signature counter did not grow (WebAuthn L3
    -- §7.2 step 21): the passkey is refused from then on.
    clone_warning    boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_used_at     timestamptz
);
CREATE INDEX passkeys_user ON passkeys (user_id);

CREATE TABLE user_links (
    token_hash  bytea PRIMARY KEY,
    purpose     text NOT NULL CHECK (purpose IN ('enroll', 'signin')),
    user_id     text NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

CREATE TABLE web_sessions (
    id_hash       bytea PRIMARY KEY,
    public_id     text NOT NULL UNIQUE,       -- to list and end one; never the secret
    user_id       text NOT NULL REFERENCES users (id),
    amr           text[] NOT NULL DEFAULT '{}',
    user_agent    text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL         -- the absolute limit
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

CREATE TABLE webauthn_challenges (
    id          text PRIMARY KEY,
    purpose     text NOT NULL CHECK (purpose IN ('enroll', 'signin', 'add_passkey', 'step_up')),
    user_id     text REFERENCES users (id),
    request_id  uuid REFERENCES requests (id),
    data        jsonb NOT NULL,
    nonce       bytea,
    expires_at  timestamptz NOT NULL
);

-- +goose Down
DROP TABLE webauthn_challenges;
DROP TABLE web_sessions;
DROP TABLE user_links;
DROP TABLE passkeys;

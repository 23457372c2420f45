-- +goose Up
-- Decisions as data: one row per reviewer per request. What the reviews add
-- up to is one pure function (approvals.ApplyReview); the request row keeps
-- its result, written with compare-and-swap on version.
ALTER TABLE requests ADD COLUMN version integer NOT NULL DEFAULT 0;

-- The details were kept twice; the canonical text is the one read.
ALTER TABLE requests DROP COLUMN authorization_details;

-- Step-up evidence: a WebAuthn assertion (user verification required) whose
-- challenge was derived from the request id, its authorization_details_hash
-- and a server nonce. Anyone with the credential's public key can verify
-- later that the authenticator signed that exact request.
CREATE TABLE step_up_evidence (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id          uuid NOT NULL REFERENCES requests (id),
    user_id             text NOT NULL REFERENCES users (id),
    details_hash        text NOT NULL,
    credential_id       bytea NOT NULL,
    authenticator_data  bytea NOT NULL,
    client_data_json    bytea NOT NULL,
    signature           bytea NOT NULL,
    nonce               bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX step_up_evidence_request ON step_up_evidence (request_id);

CREATE TABLE reviews (
    request_id  uuid NOT NULL REFERENCES requests (id),
    reviewer    text NOT NULL REFERENCES users (id),
    verdict     text NOT NULL CHECK (verdict IN ('approve', 'deny')),
    reason      text NOT NULL DEFAULT '' CHECK (char_length(reason) <= 500),
    -- How the reviewer authenticated (RFC 8176 values) and, for a step-up,
    -- the evidence.
    amr         text[] NOT NULL DEFAULT '{}',
    evidence_id bigint REFERENCES step_up_evidence (id),
    -- The reviewer's groups when they reviewed: what made them eligible.
    groups      text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, reviewer)
);

-- +goose Down
DROP TABLE reviews;
DROP TABLE step_up_evidence;
ALTER TABLE requests ADD COLUMN authorization_details jsonb NOT NULL DEFAULT '[]';
ALTER TABLE requests DROP COLUMN version;

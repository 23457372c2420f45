-- +goose Up
-- Request types (RFC 9396 authorization_details types) that admins register.
-- Every change creates a new immutable version; requests keep the version they
-- were validated against, so a consent page always shows what was approved.
CREATE TABLE request_types (
    name        text PRIMARY KEY,
    version     integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE request_type_versions (
    name        text NOT NULL REFERENCES request_types (name),
    version     integer NOT NULL CHECK (version > 0),
    -- The type as applied (schema, summary, fields, lifetime), and the SHA-256
    -- of its canonical JSON, which makes `types apply` idempotent.
    definition  jsonb NOT NULL,
    digest      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- +goose Down
DROP TABLE request_type_versions;
DROP TABLE request_types;

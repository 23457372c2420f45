-- +goose Up
-- A rotated-in signing key is published (status next) before it signs, so
-- that resource servers which cached the JWKS know it by the time tokens
-- name it. activates_at is when a next key becomes current; for every other
-- key, when it became (or would have become) current.
ALTER TABLE signing_keys
    DROP CONSTRAINT signing_keys_status_check,
    ADD CONSTRAINT signing_keys_status_check CHECK (status IN ('next', 'current', 'previous', 'retired')),
    ADD COLUMN activates_at timestamptz;
UPDATE signing_keys SET activates_at = created_at;
ALTER TABLE signing_keys ALTER COLUMN activates_at SET NOT NULL, ALTER COLUMN activates_at SET DEFAULT now();
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (alg) WHERE status = 'next';

-- +goose Down
DROP INDEX signing_keys_one_next;
UPDATE signing_keys SET status = 'retired', private_sealed = ''::bytea WHERE status = 'next';
ALTER TABLE signing_keys
    DROP COLUMN activates_at,
    DROP CONSTRAINT signing_keys_status_check,
    ADD CONSTRAINT signing_keys_status_check CHECK (status IN ('current', 'previous', 'retired'));

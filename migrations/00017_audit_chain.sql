-- +goose Up
-- The sealed audit trail (SPEC §8). Writers keep appending audit_events rows
-- in their own transactions; one sealer at a time (serve, by advisory lock)
-- takes the committed rows not yet sealed, gives each its position in one
-- chain and its hash, SHA-256(previous hash || RFC 8785 canonical JSON of the
-- row), and ends every batch with a checkpoint signed by a key of its own.
--
-- xid is the transaction that wrote the row. It tells the sealer which rows
-- can no longer appear: a row whose transaction id is older than the oldest
-- transaction still running (pg_snapshot_xmin) is either committed, and so
-- visible, or never will be. Each checkpoint records that horizon; the next
-- batch looks only at rows at or above it. xid is not part of the sealed
-- content.
-- (pg_current_xact_id is STABLE: the column is added without rewriting the
-- table, and existing rows read this migration's transaction id. Its index
-- is built by migration 19 without blocking writes.)
ALTER TABLE audit_events ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();

-- One row per sealed event: its place in the chain and the chain's hash
-- after it. position counts from 1 without gaps.
CREATE TABLE audit_chain (
    position    bigint PRIMARY KEY CHECK (position > 0),
    event_id    bigint NOT NULL UNIQUE,
    hash        bytea NOT NULL CHECK (length(hash) = 32)
);

-- One row per sealed batch: the chain's head after its last row, signed.
-- jws is a compact JWS (ES256) over the canonical JSON of {position, head,
-- sealed_at}; kid names its audit key.
CREATE TABLE audit_checkpoints (
    position    bigint PRIMARY KEY CHECK (position > 0),
    head        bytea NOT NULL CHECK (length(head) = 32),
    -- Every audit_events row with xid below this was sealed by this batch
    -- or an earlier one.
    horizon     xid8 NOT NULL,
    sealed_at   timestamptz NOT NULL,
    -- Which process sealed the batch (host/pid), for operators.
    sealer      text NOT NULL,
    kid         text NOT NULL,
    jws         text NOT NULL
);

-- The checkpoint signing keys, sealed under the KEK like the token signing
-- keys. Every key ever used stays, so a checkpoint signed before a rotation
-- still verifies; a retired key no longer signs. Its private half stays
-- sealed: opening it is how a verifier that holds the KEK knows the public
-- key was made by the KEK's holder and not written by someone with only
-- database access.
CREATE TABLE audit_keys (
    kid             text PRIMARY KEY,
    public_jwk      jsonb NOT NULL,
    private_sealed  bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz
);
-- At most one key signs.
CREATE UNIQUE INDEX audit_keys_current ON audit_keys ((true)) WHERE retired_at IS NULL;

-- The chain and its checkpoints are append-only like the events.
CREATE TRIGGER audit_chain_no_update BEFORE UPDATE OR DELETE ON audit_chain
FOR EACH ROW EXECUTE FUNCTION audit_events_immutable();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
FOR EACH STATEMENT EXECUTE FUNCTION audit_events_immutable();
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
FOR EACH ROW EXECUTE FUNCTION audit_events_immutable();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
FOR EACH STATEMENT EXECUTE FUNCTION audit_events_immutable();

-- +goose Down
DROP TABLE audit_keys;
DROP TABLE audit_checkpoints;
DROP TABLE audit_chain;
ALTER TABLE audit_events DROP COLUMN xid;

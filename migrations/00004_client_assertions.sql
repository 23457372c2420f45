-- +goose Up
-- private_key_jwt client assertions are single use (RFC 7523 §3, item 7):
-- every accepted jti is kept until its assertion expires.
CREATE TABLE client_assertion_jtis (
    client_id   text NOT NULL,
    jti         text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_assertion_jtis_expiry ON client_assertion_jtis (expires_at);

-- +goose Down
DROP TABLE client_assertion_jtis;

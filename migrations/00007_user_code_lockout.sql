-- +goose Up
-- A user code is low-entropy: wrong guesses are counted, and after five the
-- user's code is locked for a while, so an agent cannot guess it.
ALTER TABLE users
    ADD COLUMN user_code_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN user_code_locked_until timestamptz;

-- +goose Down
ALTER TABLE users DROP COLUMN user_code_locked_until, DROP COLUMN user_code_failures;

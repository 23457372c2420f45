-- +goose Up
-- Risk thresholds: every publication of a rule set is a new immutable
-- version; requests record the version, rule and reason that decided them.
CREATE TABLE policy_versions (
    version     integer PRIMARY KEY CHECK (version > 0),
    source      text NOT NULL,          -- the YAML as applied
    file_name   text NOT NULL DEFAULT '',
    digest      text NOT NULL,          -- SHA-256 of source: apply is idempotent
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE requests
    ADD COLUMN outcome text NOT NULL DEFAULT 'approve'
        CHECK (outcome IN ('allow', 'approve', 'step_up', 'quorum', 'deny')),
    ADD COLUMN policy_version integer REFERENCES policy_versions (version),
    ADD COLUMN policy_rule text NOT NULL DEFAULT '',
    ADD COLUMN policy_reason text NOT NULL DEFAULT '',
    -- Quorum requirements: [{"group": "maintainers", "n": 2, "requester_counts": false}].
    ADD COLUMN quorum jsonb NOT NULL DEFAULT '[]',
    -- Every human approval must be a step-up (also with a quorum outcome).
    ADD COLUMN step_up boolean NOT NULL DEFAULT false,
    -- The requesting user must approve (besides any quorum).
    ADD COLUMN user_required boolean NOT NULL DEFAULT true,
    -- Sum of the elements' instructedAmount in major units (velocity sums).
    ADD COLUMN amount double precision NOT NULL DEFAULT 0;

-- The velocity query reads one agent's (or user's) last day of requests:
-- these indexes answer it from the index alone, however long the history.
CREATE INDEX requests_agent_recent ON requests (agent_id, created_at) INCLUDE (types, state, outcome, amount);
CREATE INDEX requests_user_recent ON requests (user_id, created_at) INCLUDE (types, state, outcome, amount);
DROP INDEX requests_agent_created;

-- +goose Down
CREATE INDEX requests_agent_created ON requests (agent_id, created_at DESC);
DROP INDEX requests_user_recent;
DROP INDEX requests_agent_recent;
ALTER TABLE requests DROP COLUMN amount, DROP COLUMN user_required, DROP COLUMN step_up, DROP COLUMN quorum, DROP COLUMN policy_reason,
    DROP COLUMN policy_rule, DROP COLUMN policy_version, DROP COLUMN outcome;
DROP TABLE policy_versions;

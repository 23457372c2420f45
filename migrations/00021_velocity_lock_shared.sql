-- +goose Up
-- A change of a request's state that moves it to another velocity class
-- (a person's decision, a report, a cancel, an expiry) updates two counter
-- rows of its hour. The admissions of one agent are admitted in batches
-- (approvals.Store.admit), one transaction holding the counter rows of
-- several requests, of several classes, under the agent's and users'
-- admission locks: such a change, taking its two rows in the other order,
-- could deadlock with a batch. It now first takes those admission locks,
-- shared (changes of state do not wait for each other), whenever one of the
-- request's types is counted, so it waits for the batch instead.
-- The keys are approvals.admissionKeys'.
-- +goose StatementBegin
CREATE FUNCTION velocity_lock_shared(agent_id text, user_id text, types text[]) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT count(*) >= 0 FROM (
        SELECT pg_advisory_xact_lock_shared(hashtextextended('velocity agent:' || agent_id, 0)),
            pg_advisory_xact_lock_shared(hashtextextended('velocity user:' || user_id, 0))
        WHERE EXISTS (SELECT 1 FROM velocity_tracked WHERE type = ANY(types))
    ) l
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION velocity_lock_shared(text, text, text[]);

-- +goose Up
-- Approval-fatigue guards: pending requests of one agent are counted, and
-- identical ones found, through this index (pending rows only, so the
-- auto-approved hot path writes nothing to it); denials by a person are
-- counted per agent through the second.
CREATE INDEX requests_agent_pending ON requests (agent_id, user_id, details_hash) WHERE state = 'pending';
CREATE INDEX requests_agent_denied ON requests (agent_id, decided_at) WHERE state = 'denied' AND decided_by IS NOT NULL;

-- +goose Down
DROP INDEX requests_agent_denied;
DROP INDEX requests_agent_pending;

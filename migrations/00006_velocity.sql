-- +goose Up
-- Velocity counts for risk rules (recent.*), kept per agent and per user,
-- request type, hour and class, so that a rule's look at the last day reads
-- about two dozen rows however many requests there were. A trigger keeps
-- them in step with every insert and state change of requests, in the same
-- transaction.

-- The class of a request for velocity: 1 pending, 2 denied, 3 allowed by a
-- rule, 4 approved by humans, 0 anything else (expired, cancelled).
-- +goose StatementBegin
CREATE FUNCTION velocity_class(state text, outcome text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state = 'pending' THEN 1
        WHEN state = 'denied' THEN 2
        WHEN outcome = 'allow' THEN 3
        WHEN state IN ('approved', 'token_issued', 'redeemed', 'revoked') THEN 4
        ELSE 0 END::smallint
$$;
-- +goose StatementEnd

-- The hour a timestamp falls in, the same in every session time zone.
-- +goose StatementBegin
CREATE FUNCTION velocity_bucket(ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_timestamp(floor(extract(epoch FROM ts) / 3600) * 3600)
$$;
-- +goose StatementEnd

CREATE TABLE request_velocity (
    subject  text NOT NULL,        -- 'agent:' || agent_id or 'user:' || user_id
    type     text NOT NULL,
    bucket   timestamptz NOT NULL, -- velocity_bucket(created_at)
    class    smallint NOT NULL,
    n        integer NOT NULL,
    amount   double precision NOT NULL,
    PRIMARY KEY (subject, type, bucket, class)
);
-- Buckets older than a day are never read; the sweeper deletes them by this.
CREATE INDEX request_velocity_bucket ON request_velocity (bucket);

-- +goose StatementBegin
CREATE FUNCTION request_velocity_track() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    new_class smallint := velocity_class(NEW.state, NEW.outcome);
    old_class smallint;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        old_class := velocity_class(OLD.state, OLD.outcome);
        IF old_class = new_class THEN
            RETURN NULL;
        END IF;
    END IF;
    -- Types in a fixed order, agent before user: concurrent transactions
    -- lock counter rows in the same order.
    FOR t IN SELECT DISTINCT x FROM unnest(NEW.types) x ORDER BY x LOOP
        INSERT INTO request_velocity (subject, type, bucket, class, n, amount)
        VALUES ('agent:' || NEW.agent_id, t, velocity_bucket(NEW.created_at), new_class, 1, NEW.amount),
               ('user:' || NEW.user_id, t, velocity_bucket(NEW.created_at), new_class, 1, NEW.amount)
        ON CONFLICT (subject, type, bucket, class)
        DO UPDATE SET n = request_velocity.n + 1, amount = request_velocity.amount + EXCLUDED.amount;
        IF TG_OP = 'UPDATE' THEN
            UPDATE request_velocity SET n = n - 1, amount = amount - OLD.amount
            WHERE subject IN ('agent:' || OLD.agent_id, 'user:' || OLD.user_id)
              AND type = t AND bucket = velocity_bucket(OLD.created_at) AND class = old_class;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER requests_velocity AFTER INSERT OR UPDATE OF state, outcome ON requests
FOR EACH ROW EXECUTE FUNCTION request_velocity_track();

-- Requests made before this migration.
INSERT INTO request_velocity (subject, type, bucket, class, n, amount)
SELECT s.subject, t, velocity_bucket(r.created_at), velocity_class(r.state, r.outcome), count(*), sum(r.amount)
FROM requests r
CROSS JOIN LATERAL (SELECT DISTINCT x FROM unnest(r.types) x) u(t)
CROSS JOIN LATERAL (VALUES ('agent:' || r.agent_id), ('user:' || r.user_id)) s(subject)
GROUP BY 1, 2, 3, 4;

-- +goose Down
DROP TRIGGER requests_velocity ON requests;
DROP FUNCTION request_velocity_track();
DROP TABLE request_velocity;
DROP FUNCTION velocity_bucket(timestamptz);
DROP FUNCTION velocity_class(text, text);

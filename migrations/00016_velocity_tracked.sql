-- +goose Up
-- Velocity counters are kept only for the request types whose rules read
-- `recent`: for every other type the trigger has nothing to do, and the
-- auto-allowed flow no longer pays four counter upserts per request.
-- Publishing a policy that starts reading `recent` for a type backfills
-- its counters from the requests of the last day (what any window reads)
-- before the type is tracked, under a lock that keeps request writes out;
-- one that stops leaves them to age out (approvals.PolicyStore.Apply).
CREATE TABLE velocity_tracked (
    type text PRIMARY KEY
);
-- Until the next publish, every type stays counted, as before.
INSERT INTO velocity_tracked SELECT name FROM request_types;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION request_velocity_track() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    subj text;
    cur text;
    new_class smallint := velocity_class(NEW.state, NEW.outcome);
    old_class smallint;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        old_class := velocity_class(OLD.state, OLD.outcome);
        IF old_class = new_class THEN
            RETURN NULL;
        END IF;
    END IF;
    -- Types, subjects (agent before user) and currencies in a fixed order:
    -- concurrent transactions lock counter rows in the same order.
    FOR t IN SELECT DISTINCT x FROM unnest(NEW.types) x
        WHERE EXISTS (SELECT 1 FROM velocity_tracked v WHERE v.type = x) ORDER BY x LOOP
        INSERT INTO request_velocity AS v (subject, type, bucket, class, currency, shard, n, amount)
        SELECT s.subject, t, velocity_bucket(NEW.created_at), new_class, c.currency, velocity_shard(NEW.id), 1, c.amount
        FROM (VALUES ('agent:' || NEW.agent_id), ('user:' || NEW.user_id)) s(subject)
        CROSS JOIN (SELECT '', 0::numeric UNION ALL SELECT key, value::numeric FROM jsonb_each_text(NEW.amounts)) c(currency, amount)
        ORDER BY s.subject, c.currency
        ON CONFLICT (subject, type, bucket, class, currency, shard)
        DO UPDATE SET n = v.n + 1, amount = v.amount + EXCLUDED.amount;
        IF TG_OP = 'UPDATE' THEN
            -- One row at a time, in the insert's order: a many-row UPDATE
            -- would lock in table order and could deadlock with it.
            FOR subj, cur IN
                SELECT s.subject, c.currency
                FROM (VALUES ('agent:' || OLD.agent_id), ('user:' || OLD.user_id)) s(subject)
                CROSS JOIN (SELECT '' UNION ALL SELECT key FROM jsonb_each_text(OLD.amounts)) c(currency)
                ORDER BY 1, 2
            LOOP
                UPDATE request_velocity
                SET n = n - 1, amount = amount - coalesce((OLD.amounts ->> cur)::numeric, 0)
                WHERE subject = subj AND type = t AND bucket = velocity_bucket(OLD.created_at)
                  AND class = old_class AND currency = cur AND shard = velocity_shard(OLD.id);
            END LOOP;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION request_velocity_track() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    subj text;
    cur text;
    new_class smallint := velocity_class(NEW.state, NEW.outcome);
    old_class smallint;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        old_class := velocity_class(OLD.state, OLD.outcome);
        IF old_class = new_class THEN
            RETURN NULL;
        END IF;
    END IF;
    FOR t IN SELECT DISTINCT x FROM unnest(NEW.types) x ORDER BY x LOOP
        INSERT INTO request_velocity AS v (subject, type, bucket, class, currency, shard, n, amount)
        SELECT s.subject, t, velocity_bucket(NEW.created_at), new_class, c.currency, velocity_shard(NEW.id), 1, c.amount
        FROM (VALUES ('agent:' || NEW.agent_id), ('user:' || NEW.user_id)) s(subject)
        CROSS JOIN (SELECT '', 0::numeric UNION ALL SELECT key, value::numeric FROM jsonb_each_text(NEW.amounts)) c(currency, amount)
        ORDER BY s.subject, c.currency
        ON CONFLICT (subject, type, bucket, class, currency, shard)
        DO UPDATE SET n = v.n + 1, amount = v.amount + EXCLUDED.amount;
        IF TG_OP = 'UPDATE' THEN
            FOR subj, cur IN
                SELECT s.subject, c.currency
                FROM (VALUES ('agent:' || OLD.agent_id), ('user:' || OLD.user_id)) s(subject)
                CROSS JOIN (SELECT '' UNION ALL SELECT key FROM jsonb_each_text(OLD.amounts)) c(currency)
                ORDER BY 1, 2
            LOOP
                UPDATE request_velocity
                SET n = n - 1, amount = amount - coalesce((OLD.amounts ->> cur)::numeric, 0)
                WHERE subject = subj AND type = t AND bucket = velocity_bucket(OLD.created_at)
                  AND class = old_class AND currency = cur AND shard = velocity_shard(OLD.id);
            END LOOP;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
-- The old function counts every type: the counters of those not tracked
-- are rebuilt from the last day's requests, with request writes kept out.
LOCK TABLE requests IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM request_velocity WHERE type NOT IN (SELECT type FROM velocity_tracked);
INSERT INTO request_velocity (subject, type, bucket, class, currency, shard, n, amount)
SELECT s.subject, t.type, velocity_bucket(r.created_at), velocity_class(r.state, r.outcome), c.currency,
    velocity_shard(r.id), count(*), sum(c.amount)
FROM requests r
CROSS JOIN LATERAL (SELECT DISTINCT x FROM unnest(r.types) x
    WHERE NOT EXISTS (SELECT 1 FROM velocity_tracked v WHERE v.type = x)) t(type)
CROSS JOIN LATERAL (VALUES ('agent:' || r.agent_id), ('user:' || r.user_id)) s(subject)
CROSS JOIN LATERAL (SELECT '', 0::numeric UNION ALL SELECT key, value::numeric FROM jsonb_each_text(r.amounts)) c(currency, amount)
WHERE r.created_at >= velocity_bucket(now() - interval '1 day')
GROUP BY 1, 2, 3, 4, 5, 6;
DROP TABLE velocity_tracked;

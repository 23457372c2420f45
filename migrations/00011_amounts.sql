-- +goose Up
-- Amounts per currency (SPEC §4: amounts are decimals read by one parser,
-- and amounts of different currencies are never added). requests.amount,
-- a double adding every element's instructedAmount whatever its currency,
-- becomes requests.amounts: for each currency, the exact sum of the amounts
-- of the request's elements in it (each request type declares which member
-- is its amount), as jsonb numbers, {"EUR": 500.00}. The velocity counters
-- keep their sums per currency, exactly, in numeric.

ALTER TABLE requests ADD COLUMN amounts jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(amounts) = 'object'
        AND NOT jsonb_path_exists(amounts, '$.* ? (@.type() != "number" || @ < 0)'));

-- Requests a velocity window still reads (the last day, from the start of
-- its first hour): their amounts as the dropped column read them, from each
-- element's instructedAmount, now per currency and only where that is a
-- currency code and a decimal string.
UPDATE requests r SET amounts = a.amounts
FROM (
    SELECT id, jsonb_object_agg(currency, total) AS amounts
    FROM (
        SELECT r.id, e -> 'instructedAmount' ->> 'currency' AS currency,
            sum((e -> 'instructedAmount' ->> 'amount')::numeric) AS total
        FROM requests r, jsonb_array_elements(r.details_canonical::jsonb) e
        WHERE r.created_at >= velocity_bucket(now() - interval '1 day')
          AND jsonb_typeof(e -> 'instructedAmount' -> 'amount') = 'string'
          AND e -> 'instructedAmount' ->> 'amount' ~ '^(0|[1-9][0-9]{0,16})(\.[0-9]{1,4})?$'
          AND e -> 'instructedAmount' ->> 'currency' ~ '^[A-Z]{3}$'
        GROUP BY 1, 2
    ) per_currency
    GROUP BY id
) a
WHERE r.id = a.id;

-- The velocity query reads the window's edges from these indexes alone.
DROP INDEX requests_agent_recent;
DROP INDEX requests_user_recent;
ALTER TABLE requests DROP COLUMN amount;
CREATE INDEX requests_agent_recent ON requests (agent_id, created_at) INCLUDE (types, state, outcome, amounts);
CREATE INDEX requests_user_recent ON requests (user_id, created_at) INCLUDE (types, state, outcome, amounts);

-- A counter of currency '' counts requests (n; its amount stays 0); a
-- counter of a currency counts the requests with an amount in it and sums
-- those amounts.
--
-- Each counter is split into eight shards, chosen by the request id: every
-- request of one agent (or for one user) in one hour would otherwise update
-- one row, and concurrent admissions would wait for each other's commit on
-- it. Readers add the shards up.
TRUNCATE request_velocity;
ALTER TABLE request_velocity
    ADD COLUMN currency text NOT NULL DEFAULT '',
    ADD COLUMN shard smallint NOT NULL DEFAULT 0,
    ALTER COLUMN amount TYPE numeric,
    DROP CONSTRAINT request_velocity_pkey,
    ADD PRIMARY KEY (subject, type, bucket, class, currency, shard);
ALTER TABLE request_velocity ALTER COLUMN currency DROP DEFAULT, ALTER COLUMN shard DROP DEFAULT;

-- The shard of request id.
-- +goose StatementBegin
CREATE FUNCTION velocity_shard(id uuid) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (get_byte(uuid_send(id), 15) & 7)::smallint
$$;
-- +goose StatementEnd

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
    FOR t IN SELECT DISTINCT x FROM unnest(NEW.types) x ORDER BY x LOOP
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

-- request_velocity_rebuild builds the counters a window can read from the
-- requests themselves, for requests made while the trigger did not run.
-- +goose StatementBegin
CREATE FUNCTION request_velocity_rebuild() RETURNS void
LANGUAGE sql AS $$
    DELETE FROM request_velocity;
    INSERT INTO request_velocity (subject, type, bucket, class, currency, shard, n, amount)
    SELECT s.subject, t, velocity_bucket(r.created_at), velocity_class(r.state, r.outcome), c.currency, velocity_shard(r.id),
        count(*), sum(c.amount)
    FROM requests r
    CROSS JOIN LATERAL (SELECT DISTINCT x FROM unnest(r.types) x) u(t)
    CROSS JOIN LATERAL (VALUES ('agent:' || r.agent_id), ('user:' || r.user_id)) s(subject)
    CROSS JOIN LATERAL (SELECT '', 0::numeric UNION ALL SELECT key, value::numeric FROM jsonb_each_text(r.amounts)) c(currency, amount)
    WHERE r.created_at >= velocity_bucket(now() - interval '1 day')
    GROUP BY 1, 2, 3, 4, 5, 6;
$$;
-- +goose StatementEnd

SELECT request_velocity_rebuild();

-- +goose Down
DROP FUNCTION request_velocity_rebuild();
TRUNCATE request_velocity;
ALTER TABLE request_velocity
    DROP CONSTRAINT request_velocity_pkey,
    DROP COLUMN shard,
    DROP COLUMN currency,
    ALTER COLUMN amount TYPE double precision,
    ADD PRIMARY KEY (subject, type, bucket, class);

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION request_velocity_track() RETURNS trigger
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

DROP INDEX requests_agent_recent;
DROP INDEX requests_user_recent;
-- The old column added the currencies together; so does its restoration.
ALTER TABLE requests ADD COLUMN amount double precision NOT NULL DEFAULT 0;
UPDATE requests SET amount = (SELECT coalesce(sum(value::numeric), 0) FROM jsonb_each_text(amounts))
WHERE amounts <> '{}';
ALTER TABLE requests DROP COLUMN amounts;
CREATE INDEX requests_agent_recent ON requests (agent_id, created_at) INCLUDE (types, state, outcome, amount);
CREATE INDEX requests_user_recent ON requests (user_id, created_at) INCLUDE (types, state, outcome, amount);

INSERT INTO request_velocity (subject, type, bucket, class, n, amount)
SELECT s.subject, t, velocity_bucket(r.created_at), velocity_class(r.state, r.outcome), count(*), sum(r.amount)
FROM requests r
CROSS JOIN LATERAL (SELECT DISTINCT x FROM unnest(r.types) x) u(t)
CROSS JOIN LATERAL (VALUES ('agent:' || r.agent_id), ('user:' || r.user_id)) s(subject)
GROUP BY 1, 2, 3, 4;
DROP FUNCTION velocity_shard(uuid);

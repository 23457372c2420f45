-- +goose NO TRANSACTION
-- +goose Up
-- The sealer's index (migration 17), built without taking the lock that
-- would hold every audit_events insert — every change of state — for the
-- length of the build on a large trail. An earlier attempt that failed
-- leaves an invalid index behind: it is dropped first.
DROP INDEX CONCURRENTLY IF EXISTS audit_events_xid;
CREATE INDEX CONCURRENTLY audit_events_xid ON audit_events (xid);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS audit_events_xid;

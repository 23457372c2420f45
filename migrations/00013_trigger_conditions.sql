-- +goose Up
-- The hot path's triggers say in their WHEN condition when they have
-- nothing to do, so PostgreSQL does not call PL/pgSQL for the events nobody
-- is told of (the auto-allowed admission, token collection and redemption)
-- or for a state change that leaves the velocity class alone (approved →
-- token_issued → redeemed). The functions keep their own checks; the
-- conditions only skip calls that would return at once. coalesce keeps the
-- functions' reading of NULL (an IF on NULL does not skip).
DROP TRIGGER audit_events_announce ON audit_events;
CREATE TRIGGER audit_events_announce AFTER INSERT ON audit_events
FOR EACH ROW WHEN (NOT coalesce(
    NEW.kind IN ('token.issued', 'token.redeemed')
    OR (NEW.kind = 'request.created' AND NEW.body ->> 'outcome' IN ('allow', 'deny'))
    OR (NEW.kind IN ('request.approved', 'request.denied') AND NEW.actor LIKE 'rule:%')
    OR (NEW.kind = 'request.denied' AND NEW.actor = 'system:server'), false))
EXECUTE FUNCTION audit_events_notify();

DROP TRIGGER requests_velocity ON requests;
CREATE TRIGGER requests_velocity AFTER INSERT ON requests
FOR EACH ROW EXECUTE FUNCTION request_velocity_track();
CREATE TRIGGER requests_velocity_change AFTER UPDATE OF state, outcome ON requests
FOR EACH ROW WHEN (velocity_class(OLD.state, OLD.outcome) IS DISTINCT FROM velocity_class(NEW.state, NEW.outcome))
EXECUTE FUNCTION request_velocity_track();

-- +goose Down
DROP TRIGGER requests_velocity_change ON requests;
DROP TRIGGER requests_velocity ON requests;
CREATE TRIGGER requests_velocity AFTER INSERT OR UPDATE OF state, outcome ON requests
FOR EACH ROW EXECUTE FUNCTION request_velocity_track();
DROP TRIGGER audit_events_announce ON audit_events;
CREATE TRIGGER audit_events_announce AFTER INSERT ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_notify();

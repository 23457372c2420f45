package approvals

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"

	"github.com/countersign/countersign/approvals/policy"
	"github.com/countersign/countersign/rar"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// recentCountsSQL computes the velocity counts of one agent and one user for
// the given types over the last hour and day, grouped by type, by whether
// the request is from the last hour, and by class (velocity_class: 1
// pending, 2 denied, 3 allowed by a rule, 4 approved by humans, 0 other).
// Whole hours of the day window come from request_velocity (its rows of
// currency ”), kept by a trigger; the partial hour at its start and the
// last two hours are counted from the requests themselves, by index-only
// scans. So the cost follows about three hours of requests and two dozen
// counter rows, not the history.
const recentCountsSQL = `
SELECT who, type, hour, class, '' AS currency, sum(n)::bigint AS n, '0' AS sum
FROM (
	SELECT 0 AS who, unnest(types) AS type, created_at > now() - interval '1 hour' AS hour,
		velocity_class(state, outcome) AS class, 1 AS n
	FROM requests WHERE agent_id = $1 AND types && $3 AND created_at > now() - interval '1 day'
		AND created_at < velocity_bucket(now() - interval '1 day') + interval '1 hour'
	UNION ALL
	SELECT 0, unnest(types), created_at > now() - interval '1 hour', velocity_class(state, outcome), 1 AS n
	FROM requests WHERE agent_id = $1 AND types && $3 AND created_at >= velocity_bucket(now() - interval '1 hour')
	UNION ALL
	SELECT 1, unnest(types), created_at > now() - interval '1 hour', velocity_class(state, outcome), 1 AS n
	FROM requests WHERE user_id = $2 AND types && $3 AND created_at > now() - interval '1 day'
		AND created_at < velocity_bucket(now() - interval '1 day') + interval '1 hour'
	UNION ALL
	SELECT 1, unnest(types), created_at > now() - interval '1 hour', velocity_class(state, outcome), 1 AS n
	FROM requests WHERE user_id = $2 AND types && $3 AND created_at >= velocity_bucket(now() - interval '1 hour')
	UNION ALL
	SELECT CASE WHEN subject LIKE 'agent:%' THEN 0 ELSE 1 END, type, false, class, n
	FROM request_velocity
	WHERE subject IN ('agent:' || $1, 'user:' || $2) AND type = ANY($3) AND currency = ''
		AND bucket >= velocity_bucket(now() - interval '1 day') + interval '1 hour'
		AND bucket < velocity_bucket(now() - interval '1 hour')
		AND type IN (SELECT type FROM velocity_tracked)
	UNION ALL
	SELECT 0, t, false, velocity_class(state, outcome), 1
	FROM requests, unnest(types) t WHERE agent_id = $1 AND types && $3 AND ` + uncountedMiddle + `
	UNION ALL
	SELECT 1, t, false, velocity_class(state, outcome), 1
	FROM requests, unnest(types) t WHERE user_id = $2 AND types && $3 AND ` + uncountedMiddle + `
) r
WHERE type = ANY($3)
GROUP BY who, type, hour, class`

// uncountedMiddle selects, for the types of $3 that have no counters (no
// rule of the live policy reads their recent: a dry run of one that would,
// or a replica still on the previous policy for a moment), the requests of
// the whole hours the counters would have covered. The first condition
// does not depend on the row: PostgreSQL checks it once and skips the scan
// when every type is counted.
const uncountedMiddle = `EXISTS (SELECT 1 FROM unnest($3::text[]) x WHERE x NOT IN (SELECT type FROM velocity_tracked))
		AND t = ANY($3) AND t NOT IN (SELECT type FROM velocity_tracked)
		AND created_at >= velocity_bucket(now() - interval '1 day') + interval '1 hour'
		AND created_at < velocity_bucket(now() - interval '1 hour')`

// recentSumsSQL is recentCountsSQL for the amounts: per currency, the
// requests with an amount in it and the exact sum of those amounts (numeric,
// read as text). It is a statement of its own, run only when a rule reads
// the sums: it costs more than the counts, and PostgreSQL plans it afresh
// each time (it estimates a hundred currencies per request). The amounts are
// expanded in the select list, as a function in FROM would materialise each
// request's.
const recentSumsSQL = `
SELECT who, type, hour, class, currency, sum(n)::bigint AS n, sum(amount)::text AS sum
FROM (
	SELECT who, type, hour, class, (e).key AS currency, 1 AS n, (e).value::numeric AS amount
	FROM (
		SELECT who, type, hour, class, jsonb_each(amounts) AS e
		FROM (
			SELECT 0 AS who, unnest(types) AS type, created_at > now() - interval '1 hour' AS hour,
				velocity_class(state, outcome) AS class, amounts
			FROM requests WHERE agent_id = $1 AND types && $3 AND created_at > now() - interval '1 day'
				AND created_at < velocity_bucket(now() - interval '1 day') + interval '1 hour' AND amounts <> '{}'
			UNION ALL
			SELECT 0, unnest(types), created_at > now() - interval '1 hour', velocity_class(state, outcome), amounts
			FROM requests WHERE agent_id = $1 AND types && $3 AND created_at >= velocity_bucket(now() - interval '1 hour') AND amounts <> '{}'
			UNION ALL
			SELECT 1, unnest(types), created_at > now() - interval '1 hour', velocity_class(state, outcome), amounts
			FROM requests WHERE user_id = $2 AND types && $3 AND created_at > now() - interval '1 day'
				AND created_at < velocity_bucket(now() - interval '1 day') + interval '1 hour' AND amounts <> '{}'
			UNION ALL
			SELECT 1, unnest(types), created_at > now() - interval '1 hour', velocity_class(state, outcome), amounts
			FROM requests WHERE user_id = $2 AND types && $3 AND created_at >= velocity_bucket(now() - interval '1 hour') AND amounts <> '{}'
			UNION ALL
			SELECT 0, t, false, velocity_class(state, outcome), amounts
			FROM requests, unnest(types) t WHERE agent_id = $1 AND types && $3 AND amounts <> '{}' AND ` + uncountedMiddle + `
			UNION ALL
			SELECT 1, t, false, velocity_class(state, outcome), amounts
			FROM requests, unnest(types) t WHERE user_id = $2 AND types && $3 AND amounts <> '{}' AND ` + uncountedMiddle + `
		) q
	) a
	UNION ALL
	SELECT CASE WHEN subject LIKE 'agent:%' THEN 0 ELSE 1 END, type, false, class, currency, n, amount
	FROM request_velocity
	WHERE subject IN ('agent:' || $1, 'user:' || $2) AND type = ANY($3) AND currency <> ''
		AND bucket >= velocity_bucket(now() - interval '1 day') + interval '1 hour'
		AND bucket < velocity_bucket(now() - interval '1 hour')
		AND type IN (SELECT type FROM velocity_tracked)
) r
WHERE type = ANY($3)
GROUP BY who, type, hour, class, currency`

// The classes of velocity_class (migrations/00006_velocity.sql).
const (
	recentPending  = 1
	recentDenied   = 2
	recentAllowed  = 3
	recentApproved = 4
)

// recentRow is one row of recentCountsSQL or recentSumsSQL.
type recentRow struct {
	Who      int    `db:"who"` // 0 agent, 1 user
	Type     string `db:"type"`
	Hour     bool   `db:"hour"`
	Class    int    `db:"class"`
	Currency string `db:"currency"` // "": the count of requests; else those with an amount in it
	N        int64  `db:"n"`
	Sum      string `db:"sum"` // exact decimal
}

// tallies are the tallies of c that r counts into: the total and its
// class's.
func (r recentRow) tallies(c *policy.Counts) []*policy.Tally {
	switch r.Class {
	case recentAllowed:
		return []*policy.Tally{&c.Total, &c.Allowed}
	case recentApproved:
		return []*policy.Tally{&c.Total, &c.Approved}
	case recentDenied:
		return []*policy.Tally{&c.Total, &c.Denied}
	case recentPending:
		return []*policy.Tally{&c.Total, &c.Pending}
	}
	return []*policy.Tally{&c.Total}
}

// recent returns, per type, the velocity of agentID's and userID's requests
// over the last hour and day (policy.Recent), read through q (an
// admission's transaction): requests that include an element of the type,
// counted once each, with the sums of their amounts per currency only when
// sums is set (policy.Set.ReadsRecentSums).
func (s *Store) recent(ctx context.Context, q sqlx.QueryerContext, agentID, userID string, types []string, sums bool) (map[string]policy.Recent, error) {
	queries := []string{recentCountsSQL}
	if sums {
		queries = append(queries, recentSumsSQL)
	}
	var rows []recentRow
	for _, query := range queries {
		var part []recentRow
		if err := sqlx.SelectContext(ctx, q, &part, query, agentID, userID, pq.StringArray(types)); err != nil {
			return nil, fmt.Errorf("approvals: recent: %w", err)
		}
		rows = append(rows, part...)
	}
	out := make(map[string]*policy.Recent, len(types))
	for _, t := range types {
		out[t] = &policy.Recent{}
	}
	// The day's figures add up the hour's and the rest of the day's, and a
	// total its classes': sums are added as exact rationals, and made doubles
	// once.
	type sumKey struct {
		t        *policy.Tally
		currency string
	}
	type exactSum struct {
		n   int64
		sum big.Rat
	}
	exact := map[sumKey]*exactSum{}
	for _, r := range rows {
		rec := out[r.Type]
		w := &rec.Agent
		if r.Who == 1 {
			w = &rec.User
		}
		windows := []*policy.Counts{&w.Day}
		if r.Hour {
			windows = append(windows, &w.Hour)
		}
		var amount *big.Rat
		if r.Currency != "" {
			var ok bool
			if amount, ok = new(big.Rat).SetString(r.Sum); !ok {
				return nil, fmt.Errorf("approvals: recent: sum %q is not a decimal", r.Sum)
			}
		}
		for _, c := range windows {
			for _, t := range r.tallies(c) {
				if r.Currency == "" {
					t.Count += r.N
					continue
				}
				e := exact[sumKey{t, r.Currency}]
				if e == nil {
					e = &exactSum{}
					exact[sumKey{t, r.Currency}] = e
				}
				e.n += r.N
				e.sum.Add(&e.sum, amount)
			}
		}
	}
	for k, e := range exact {
		if e.n == 0 { // counters whose requests all changed class
			continue
		}
		if k.t.Sums == nil {
			k.t.Sums = map[string]float64{}
		}
		k.t.Sums[k.currency], _ = e.sum.Float64()
	}
	recent := make(map[string]policy.Recent, len(out))
	for t, r := range out {
		recent[t] = *r
	}
	return recent, nil
}

// requestAmounts is what a request moves, per currency (SPEC §4: amounts of
// different currencies are never added), summed exactly from the amounts
// each element's type declares.
func requestAmounts(d *rar.Details) Amounts {
	totals := d.Totals()
	out := make(Amounts, len(totals))
	for _, a := range totals {
		out[a.Currency] = json.Number(a.String())
	}
	return out
}

// policy is a as the rules see it (request.amounts): in major units, as
// doubles.
func (a Amounts) policy() map[string]float64 {
	out := make(map[string]float64, len(a))
	for c, n := range a {
		// n is a decimal written by rar.Amount.String; ParseFloat rounds
		// it once, to the nearest double.
		out[c], _ = strconv.ParseFloat(string(n), 64)
	}
	return out
}

const purgeVelocitySQL = `DELETE FROM request_velocity WHERE bucket < velocity_bucket(now() - interval '1 day')`

// PurgeVelocity deletes velocity counters older than any window reads (a
// day), so the counters stay a few dozen rows per agent and user.
func (s *Store) PurgeVelocity(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, purgeVelocitySQL)
	if err != nil {
		return 0, fmt.Errorf("approvals: purge velocity: %w", err)
	}
	return res.RowsAffected()
}

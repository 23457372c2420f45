package approvals

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/countersign/countersign/approvals/policy"
	"github.com/countersign/countersign/rar"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// recentCountsSQL computes the velocity counts of one agent and one user for
// the given types over the last hour and day, grouped by type, by whether
// the request is from the last hour, and by class (velocity_class: 1
// pending, 2 denied, 3 allowed by a rule, 4 approved by humans, 0 other).
//
// The hours that lie whole in the day window come from request_velocity
// (its rows of currency ”), kept by a trigger for the types of
// velocity_tracked: every hour since the day window's first whole one,
// the current hour included (all of it lies in the hour window). Only the
// window edges are counted from the requests themselves, by index scans:
// the partial hour at the day window's start, and the part of the previous
// hour that lies in the hour window, which is counted in the hour (+1) and
// taken out of that hour's counter (-1), which counts all of it in the day
// only. A type without counters (velocitySubjectsUncounted) is counted from
// its requests. So the cost follows at most two hours' edges of requests and
// two dozen counter rows, not the history nor the current hour.
var recentCountsSQL = `
SELECT who, type, hour, class, '' AS currency, sum(n)::bigint AS n, '0' AS sum
FROM (` + recentEdgesSQL("", "true") + `
	UNION ALL
	SELECT CASE WHEN subject LIKE 'agent:%' THEN 0 ELSE 1 END, type, bucket > now() - interval '1 hour', class, n
	FROM request_velocity
	WHERE subject IN ('agent:' || $1, 'user:' || $2) AND type = ANY($3) AND currency = ''
		AND bucket >= velocity_bucket(now() - interval '1 day') + interval '1 hour'
		AND type IN (SELECT type FROM velocity_tracked)
) r
WHERE type = ANY($3)
GROUP BY who, type, hour, class`

// recentEdgesSQL selects, for recentCountsSQL and recentSumsSQL, the rows
// counted from the requests of agent $1 and user $2 of the types $3 (who,
// type, hour, class, n, and the extra column of the requests extra): the
// window edges, and the requests of the types without counters. where is a
// condition on the requests.
func recentEdgesSQL(extra, where string) string {
	if extra != "" {
		extra = ", " + extra
	}
	var parts []string
	for who, subject := range []string{"agent_id = $1", "user_id = $2"} {
		match := subject + " AND types && $3 AND " + where
		parts = append(parts, fmt.Sprintf(`
	SELECT %[1]d AS who, t AS type, false AS hour, velocity_class(state, outcome) AS class, 1 AS n%[2]s
	FROM requests, unnest(types) t WHERE %[3]s
		AND created_at > now() - interval '1 day'
		AND created_at < velocity_bucket(now() - interval '1 day') + interval '1 hour'
	UNION ALL
	SELECT %[1]d, t, h, velocity_class(state, outcome), CASE WHEN h THEN 1 ELSE -1 END%[2]s
	FROM requests, unnest(types) t, (VALUES (true), (false)) v(h) WHERE %[3]s
		AND created_at > now() - interval '1 hour'
		AND created_at < velocity_bucket(now() - interval '1 hour') + interval '1 hour'
		AND t IN (SELECT type FROM velocity_tracked)
	UNION ALL
	SELECT %[1]d, t, created_at > now() - interval '1 hour', velocity_class(state, outcome), 1%[2]s
	FROM requests, unnest(types) t WHERE %[3]s AND `+uncountedMiddle, who, extra, match))
	}
	return strings.Join(parts, "\n\tUNION ALL")
}

// uncountedMiddle selects, for the types of $3 that have no counters (no
// rule of the live policy reads their recent: a dry run of one that would,
// or a replica still on the previous policy for a moment), the requests of
// the day window after its partial first hour. The first condition does
// not depend on the row: PostgreSQL checks it once and skips the scan when
// every type is counted.
const uncountedMiddle = `EXISTS (SELECT 1 FROM unnest($3::text[]) x WHERE x NOT IN (SELECT type FROM velocity_tracked))
		AND t = ANY($3) AND t NOT IN (SELECT type FROM velocity_tracked)
		AND created_at >= velocity_bucket(now() - interval '1 day') + interval '1 hour'`

// recentSumsSQL is recentCountsSQL for the amounts: per currency, the
// requests with an amount in it and the exact sum of those amounts (numeric,
// read as text). It is a statement of its own, run only when a rule reads
// the sums: it costs more than the counts, and PostgreSQL plans it afresh
// each time (it estimates a hundred currencies per request). The amounts are
// expanded in the select list, as a function in FROM would materialise each
// request's.
var recentSumsSQL = `
SELECT who, type, hour, class, currency, sum(n)::bigint AS n, sum(amount)::text AS sum
FROM (
	SELECT who, type, hour, class, (e).key AS currency, n, n * (e).value::numeric AS amount
	FROM (
		SELECT who, type, hour, class, n, jsonb_each(amounts) AS e
		FROM (` + recentEdgesSQL("amounts", "amounts <> '{}'") + `
		) q
	) a
	UNION ALL
	SELECT CASE WHEN subject LIKE 'agent:%' THEN 0 ELSE 1 END, type, bucket > now() - interval '1 hour', class, currency, n, amount
	FROM request_velocity
	WHERE subject IN ('agent:' || $1, 'user:' || $2) AND type = ANY($3) AND currency <> ''
		AND bucket >= velocity_bucket(now() - interval '1 day') + interval '1 hour'
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
	t, _ := q.(*Tx)
	key := recentKey{agent: agentID, user: userID, types: strings.Join(types, "\x00"), sums: sums}
	if t != nil {
		if r := t.recent[key]; r != nil {
			return recentOf(r.rows, types)
		}
	}
	queries := []*prepared{&s.recentCountsStmt}
	if sums {
		queries = append(queries, &s.recentSumsStmt)
	}
	var rows []recentRow
	for _, query := range queries {
		var part []recentRow
		args := []any{agentID, userID, pq.StringArray(types)}
		var err error
		if t != nil {
			// Prepared in an admission's transaction (see Store.admit):
			// planning the query cost more than running it.
			err = query.selectTx(ctx, t, &part, args...)
		} else {
			err = sqlx.SelectContext(ctx, q, &part, query.query, args...)
		}
		if err != nil {
			return nil, fmt.Errorf("approvals: recent: %w", err)
		}
		rows = append(rows, part...)
	}
	if t != nil {
		if t.recent == nil {
			t.recent = map[recentKey]*recentRead{}
		}
		t.recent[key] = &recentRead{key: key, types: types, rows: rows}
	}
	return recentOf(rows, types)
}

// recentKey names what one call of recent read.
type recentKey struct {
	agent, user, types string
	sums               bool
}

// recentRead is what recent read in an admission's transaction, kept up to
// date by the requests the transaction stores after it (counted): the
// admissions of one batch hold the locks of their agent and users, so no
// other admission stores a request these rows count, and each admission
// after the first reads its velocity from them instead of the database.
type recentRead struct {
	key   recentKey
	types []string
	rows  []recentRow
}

// counted adds r, just stored, to the velocity the transaction has read: as
// recentCountsSQL and recentSumsSQL would count it (this hour, its class,
// once per type read, its amounts per currency).
func (t *Tx) counted(r Request) {
	if len(t.recent) == 0 {
		return
	}
	class := velocityClass(r.State, r.Outcome)
	subjects := [2]string{r.AgentID, r.UserID} // who 0 and 1
	for _, read := range t.recent {
		for who, id := range [2]string{read.key.agent, read.key.user} {
			if id != subjects[who] {
				continue
			}
			for _, typ := range r.Types {
				if !slices.Contains(read.types, typ) {
					continue
				}
				read.rows = append(read.rows, recentRow{Who: who, Type: typ, Hour: true, Class: class, N: 1, Sum: "0"})
				if !read.key.sums {
					continue
				}
				for currency, amount := range r.Amounts {
					read.rows = append(read.rows, recentRow{Who: who, Type: typ, Hour: true, Class: class, Currency: currency, N: 1, Sum: string(amount)})
				}
			}
		}
	}
}

// velocityClass is velocity_class (migrations/00006_velocity.sql).
func velocityClass(state State, outcome string) int {
	switch {
	case state == StatePending:
		return recentPending
	case state == StateDenied:
		return recentDenied
	case outcome == "allow":
		return recentAllowed
	case state == StateApproved || state == StateTokenIssued || state == StateRedeemed || state == StateRevoked:
		return recentApproved
	}
	return 0
}

// recentOf adds up the rows of recentCountsSQL and recentSumsSQL into the
// velocity of each of types.
func recentOf(rows []recentRow, types []string) (map[string]policy.Recent, error) {
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

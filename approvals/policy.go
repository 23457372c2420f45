package approvals

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/countersign/countersign/approvals/policy"
	"github.com/countersign/countersign/rar"
)

// PolicyVersion is one published rule set.
type PolicyVersion struct {
	Version   int       `db:"version" json:"version"`
	FileName  string    `db:"file_name" json:"file_name"`
	Digest    string    `db:"digest" json:"digest"`
	CreatedAt time.Time `db:"created_at" json:"created_at"`
	Source    string    `db:"source" json:"-"`
}

// PolicyStore keeps the published rule sets and hands out the compiled set of
// the current version, compiled once per version.
type PolicyStore struct {
	store *Store

	mu       sync.Mutex
	cached   *policy.Set
	cachedAt int // its version
}

// NewPolicyStore returns a PolicyStore on s.
func NewPolicyStore(s *Store) *PolicyStore { return &PolicyStore{store: s} }

// PolicyChange reports what applying a rule set did.
type PolicyChange struct {
	Version int      `json:"version"`
	Changed bool     `json:"changed"`
	Diff    []string `json:"diff"` // one line per type or rule added, removed or changed
	// Unregistered names the file's types that are not registered (most
	// likely misspelt): their rules apply to no request.
	Unregistered []string `json:"unregistered_types"`
}

const currentPolicySQL = `SELECT version, file_name, digest, created_at, source FROM policy_versions ORDER BY version DESC LIMIT 1`

const insertPolicySQL = `
INSERT INTO policy_versions (version, source, file_name, digest)
SELECT coalesce(max(version), 0) + 1, $1, $2, $3 FROM policy_versions
RETURNING version`

// Apply publishes source (a policy file named name) as a new version unless
// it is the current one already. The file is parsed and every rule compiled
// first: a file with any error publishes nothing and the old version stays
// live.
func (ps *PolicyStore) Apply(ctx context.Context, name string, source []byte) (PolicyChange, error) {
	f, err := policy.ParseFile(name, source)
	if err != nil {
		return PolicyChange{}, err
	}
	if _, err := policy.Compile(f); err != nil {
		return PolicyChange{}, err
	}
	sum := sha256.Sum256(source)
	digest := hex.EncodeToString(sum[:])

	tx, err := ps.store.db.BeginTxx(ctx, nil)
	if err != nil {
		return PolicyChange{}, fmt.Errorf("approvals: apply policy: %w", err)
	}
	defer tx.Rollback()
	// One publisher at a time: versions are numbered without gaps.
	if _, err := tx.ExecContext(ctx, `LOCK TABLE policy_versions IN EXCLUSIVE MODE`); err != nil {
		return PolicyChange{}, fmt.Errorf("approvals: apply policy: %w", err)
	}
	var registered []string
	if err := tx.SelectContext(ctx, &registered, `SELECT name FROM request_types`); err != nil {
		return PolicyChange{}, fmt.Errorf("approvals: apply policy: %w", err)
	}
	unregistered := []string{}
	for _, t := range slices.Sorted(maps.Keys(f.Types)) {
		if !slices.Contains(registered, t) {
			unregistered = append(unregistered, t)
		}
	}
	var cur PolicyVersion
	var old *policy.File
	switch err := tx.GetContext(ctx, &cur, currentPolicySQL); {
	case err == nil:
		if cur.Digest == digest {
			return PolicyChange{Version: cur.Version, Diff: []string{}, Unregistered: unregistered}, nil
		}
		if old, err = policy.ParseFile(cur.FileName, []byte(cur.Source)); err != nil {
			old = nil // an old version that no longer parses: diff against nothing
		}
	case errors.Is(translate(err), ErrNotFound):
	default:
		return PolicyChange{}, fmt.Errorf("approvals: apply policy: %w", err)
	}
	diff := diffPolicies(old, f)
	if old != nil && len(diff) == 0 {
		// Only comments or formatting differ: every decision would be the
		// same, so nothing is published.
		return PolicyChange{Version: cur.Version, Diff: diff, Unregistered: unregistered}, nil
	}
	var version int
	if err := tx.GetContext(ctx, &version, insertPolicySQL, string(source), name, digest); err != nil {
		return PolicyChange{}, fmt.Errorf("approvals: apply policy: %w", translate(err))
	}
	if err := tx.Commit(); err != nil {
		return PolicyChange{}, fmt.Errorf("approvals: apply policy: %w", err)
	}
	return PolicyChange{Version: version, Changed: true, Diff: diff, Unregistered: unregistered}, nil
}

// diffPolicies describes, type by type and rule by rule, how b differs from a.
func diffPolicies(a, b *policy.File) []string {
	if a == nil {
		a = &policy.File{}
	}
	out := []string{}
	types := map[string]bool{}
	for t := range a.Types {
		types[t] = true
	}
	for t := range b.Types {
		types[t] = true
	}
	names := make([]string, 0, len(types))
	for t := range types {
		names = append(names, t)
	}
	slices.Sort(names)
	for _, t := range names {
		ra, rb := a.Types[t], b.Types[t]
		switch {
		case ra == nil:
			out = append(out, fmt.Sprintf("+ %s: %d rules", t, len(rb)))
			continue
		case rb == nil:
			out = append(out, fmt.Sprintf("- %s: all %d rules removed", t, len(ra)))
			continue
		}
		idsA, idsB := ruleIDs(ra), ruleIDs(rb)
		for i, r := range rb {
			j := slices.Index(idsA, r.ID)
			switch {
			case j < 0:
				out = append(out, fmt.Sprintf("+ %s/%s (rule %d): when %s → %s", t, r.ID, i+1, r.When, r.Outcome))
			case ra[j].When != r.When || ra[j].Outcome != r.Outcome || ra[j].Reason != r.Reason:
				var what []string
				if ra[j].When != r.When || ra[j].Outcome != r.Outcome {
					what = append(what, fmt.Sprintf("when %s → %s (was: when %s → %s)", r.When, r.Outcome, ra[j].When, ra[j].Outcome))
				}
				if ra[j].Reason != r.Reason {
					what = append(what, fmt.Sprintf("reason %q (was %q)", r.Reason, ra[j].Reason))
				}
				out = append(out, fmt.Sprintf("~ %s/%s: %s", t, r.ID, strings.Join(what, "; ")))
			case j != i:
				out = append(out, fmt.Sprintf("~ %s/%s: moved from rule %d to %d", t, r.ID, j+1, i+1))
			}
		}
		for _, r := range ra {
			if !slices.Contains(idsB, r.ID) {
				out = append(out, fmt.Sprintf("- %s/%s", t, r.ID))
			}
		}
	}
	return out
}

func ruleIDs(rules []policy.Rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.ID
	}
	return out
}

// Current returns the compiled set of the newest version and its number; with
// nothing published it returns (nil, 0, nil).
func (ps *PolicyStore) Current(ctx context.Context) (*policy.Set, int, error) {
	var v int
	if err := ps.store.db.GetContext(ctx, &v, `SELECT coalesce(max(version), 0) FROM policy_versions`); err != nil {
		return nil, 0, fmt.Errorf("approvals: policy: %w", err)
	}
	if v == 0 {
		return nil, 0, nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.cached != nil && ps.cachedAt == v {
		return ps.cached, v, nil
	}
	pv, err := ps.Version(ctx, v)
	if err != nil {
		return nil, 0, err
	}
	f, err := policy.ParseFile(pv.FileName, []byte(pv.Source))
	if err != nil {
		return nil, 0, fmt.Errorf("approvals: published policy v%d: %w", v, err)
	}
	set, err := policy.Compile(f)
	if err != nil {
		return nil, 0, fmt.Errorf("approvals: published policy v%d: %w", v, err)
	}
	ps.cached, ps.cachedAt = set, v
	return set, v, nil
}

// Version returns one published version.
func (ps *PolicyStore) Version(ctx context.Context, v int) (PolicyVersion, error) {
	var pv PolicyVersion
	err := ps.store.db.GetContext(ctx, &pv, `SELECT version, file_name, digest, created_at, source FROM policy_versions WHERE version = $1`, v)
	if err != nil {
		return PolicyVersion{}, fmt.Errorf("approvals: policy v%d: %w", v, translate(err))
	}
	return pv, nil
}

// History lists every published version, newest first.
func (ps *PolicyStore) History(ctx context.Context) ([]PolicyVersion, error) {
	var out []PolicyVersion
	err := ps.store.db.SelectContext(ctx, &out, `SELECT version, file_name, digest, created_at, '' AS source FROM policy_versions ORDER BY version DESC`)
	if err != nil {
		return nil, fmt.Errorf("approvals: policy history: %w", err)
	}
	return out, nil
}

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
) r
WHERE type = ANY($3)
GROUP BY who, type, hour, class`

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
		) q
	) a
	UNION ALL
	SELECT CASE WHEN subject LIKE 'agent:%' THEN 0 ELSE 1 END, type, false, class, currency, n, amount
	FROM request_velocity
	WHERE subject IN ('agent:' || $1, 'user:' || $2) AND type = ANY($3) AND currency <> ''
		AND bucket >= velocity_bucket(now() - interval '1 day') + interval '1 hour'
		AND bucket < velocity_bucket(now() - interval '1 hour')
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

// Recent returns, per type, the velocity of agentID's and userID's requests
// over the last hour and day (policy.Recent): requests that include an
// element of the type, counted once each, with the sums of their amounts per
// currency.
func (s *Store) Recent(ctx context.Context, agentID, userID string, types []string) (map[string]policy.Recent, error) {
	return s.recent(ctx, nil, agentID, userID, types, true)
}

// recent is Recent, inside tx when it is not nil, with the sums only when
// sums is set (policy.Set.ReadsRecentSums).
func (s *Store) recent(ctx context.Context, tx *sqlx.Tx, agentID, userID string, types []string, sums bool) (map[string]policy.Recent, error) {
	queries := []string{recentCountsSQL}
	if sums {
		queries = append(queries, recentSumsSQL)
	}
	var rows []recentRow
	for _, q := range queries {
		stmt, err := s.prepared(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("approvals: recent: %w", err)
		}
		if tx != nil {
			stmt = tx.StmtxContext(ctx, stmt)
		}
		var part []recentRow
		if err := stmt.SelectContext(ctx, &part, agentID, userID, pq.StringArray(types)); err != nil {
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

// DryRun is what a rule set would decide for a request, without storing
// anything.
type DryRun struct {
	Elements    []policy.Decision
	Requirement policy.Requirement
}

// DryRun evaluates the rule set in source (not published) against details as
// if agentID (optional) asked on behalf of userHint (optional), with their
// real velocity counts when given.
func (s *Service) DryRun(ctx context.Context, name string, source, details []byte, agentID, userHint string, acrValues []string) (DryRun, error) {
	f, err := policy.ParseFile(name, source)
	if err != nil {
		return DryRun{}, err
	}
	set, err := policy.Compile(f)
	if err != nil {
		return DryRun{}, err
	}
	reg, _, err := s.types.Registry(ctx)
	if err != nil {
		return DryRun{}, err
	}
	d, err := reg.Parse(details)
	if err != nil {
		return DryRun{}, err
	}
	var in policy.Input
	var agent Agent
	var user User
	if agentID != "" {
		if agent, err = s.store.Agent(ctx, agentID); err != nil {
			return DryRun{}, err
		}
		in.Agent = policy.Agent{ID: agent.ID, Name: agent.Name, Domain: agent.Domain, Labels: agent.Labels}
	}
	if userHint != "" {
		if user, err = s.store.UserByHint(ctx, userHint); err != nil {
			return DryRun{}, err
		}
		in.User = policy.User{ID: user.ID, Roles: user.Roles, Groups: user.Groups}
	}
	var types []string
	for _, e := range d.Elements {
		if !slices.Contains(types, e.Type) {
			types = append(types, e.Type)
		}
	}
	recent := map[string]policy.Recent{}
	if agentID != "" || userHint != "" {
		if recent, err = s.store.Recent(ctx, agent.ID, user.ID, types); err != nil {
			return DryRun{}, err
		}
	}
	now := s.now().In(s.tz)
	in.Request = policy.Request{ACRValues: acrValues, Hour: int64(now.Hour()), Weekday: int64(now.Weekday()),
		Amounts: requestAmounts(d).policy()}
	out := DryRun{Elements: make([]policy.Decision, len(d.Elements))}
	for i, e := range d.Elements {
		in.Details, in.Recent = e.Value, recent[e.Type]
		out.Elements[i] = set.Evaluate(e.Type, in)
	}
	out.Requirement = policy.Combine(out.Elements, acrValues)
	return out, nil
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

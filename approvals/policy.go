package approvals

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/countersign/countersign/approvals/policy"
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
	set, err := policy.Compile(f)
	if err != nil {
		return PolicyChange{}, err
	}
	// The types whose velocity counters this version needs.
	var counted []string
	for t := range f.Types {
		if set.ReadsRecent(t) {
			counted = append(counted, t)
		}
	}
	slices.Sort(counted)
	// A change of the counted types needs request writes kept out while
	// the counters are rebuilt; that lock is taken before the policy's,
	// which admissions wait on (their requests' policy_version key). A
	// concurrent publisher can change them between the first look and the
	// locks: then the publish starts again, with the lock.
	for try := 0; ; try++ {
		change, retry, err := ps.apply(ctx, name, source, f, counted, try > 0)
		if retry && try == 0 {
			continue
		}
		return change, err
	}
}

// apply is one try of Apply; retry reports that the counted types changed
// under it without the request lock (lockRequests was false).
func (ps *PolicyStore) apply(ctx context.Context, name string, source []byte, f *policy.File, counted []string, lockRequests bool) (_ PolicyChange, retry bool, _ error) {
	sum := sha256.Sum256(source)
	digest := hex.EncodeToString(sum[:])
	fail := func(err error) (PolicyChange, bool, error) {
		return PolicyChange{}, false, fmt.Errorf("approvals: apply policy: %w", translate(err))
	}

	// Read committed whatever the server's default: the rebuild must see
	// every request committed before the lock was granted.
	tx, err := ps.store.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return fail(err)
	}
	defer tx.Rollback()
	tracked := func() ([]string, error) {
		var have []string
		err := tx.SelectContext(ctx, &have, `SELECT type FROM velocity_tracked ORDER BY type COLLATE "C"`) // Go's order
		return have, err
	}
	have, err := tracked()
	if err != nil {
		return fail(err)
	}
	lockRequests = lockRequests || !slices.Equal(have, counted)
	if lockRequests {
		// Request writes queue behind this lock while it waits for those in
		// flight: a publish that cannot have it soon fails instead.
		if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '5s'`); err != nil {
			return fail(err)
		}
		if _, err := tx.ExecContext(ctx, `LOCK TABLE requests IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return fail(err)
		}
	}
	// One publisher at a time: versions are numbered without gaps.
	if _, err := tx.ExecContext(ctx, `LOCK TABLE policy_versions IN EXCLUSIVE MODE`); err != nil {
		return fail(err)
	}
	if have, err = tracked(); err != nil {
		return fail(err)
	}
	if !slices.Equal(have, counted) {
		if !lockRequests {
			return PolicyChange{}, true, nil
		}
		if err := retrack(ctx, tx, have, counted); err != nil {
			return fail(err)
		}
		if err := writeEvents(ctx, tx, []Event{{Kind: KindVelocityCounting, Actor: ActorCLI, Subject: ptr("velocity"),
			Body: mustJSON(map[string]any{"before": nonNilSlice(have), "after": nonNilSlice(counted)})}}); err != nil {
			return PolicyChange{}, false, err
		}
	}
	change, err := ps.publish(ctx, tx, name, source, f, digest)
	if err != nil {
		return PolicyChange{}, false, err
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return change, false, nil
}

// backfillVelocitySQL rebuilds the counters of types $1 from the last
// day's requests (what any window reads), as request_velocity_track would
// have kept them.
const backfillVelocitySQL = `
INSERT INTO request_velocity (subject, type, bucket, class, currency, shard, n, amount)
SELECT s.subject, t.type, velocity_bucket(r.created_at), velocity_class(r.state, r.outcome), c.currency,
	velocity_shard(r.id), count(*), sum(c.amount)
FROM requests r
CROSS JOIN LATERAL (SELECT DISTINCT x FROM unnest(r.types) x WHERE x = ANY($1)) t(type)
CROSS JOIN LATERAL (VALUES ('agent:' || r.agent_id), ('user:' || r.user_id)) s(subject)
CROSS JOIN LATERAL (SELECT '', 0::numeric UNION ALL SELECT key, value::numeric FROM jsonb_each_text(r.amounts)) c(currency, amount)
WHERE r.created_at >= velocity_bucket(now() - interval '1 day') AND r.types && $1
GROUP BY 1, 2, 3, 4, 5, 6`

// retrack makes the counted types want instead of have, under the request
// lock: a newly counted type's counters are rebuilt; a type no longer
// counted keeps its counters until the sweeper ages them out (a replica
// still on the old policy for a moment reads them), and they are rebuilt
// should it be counted again.
func retrack(ctx context.Context, tx *sqlx.Tx, have, want []string) error {
	var add, drop []string
	for _, t := range want {
		if !slices.Contains(have, t) {
			add = append(add, t)
		}
	}
	for _, t := range have {
		if !slices.Contains(want, t) {
			drop = append(drop, t)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM velocity_tracked WHERE type = ANY($1)`, pq.StringArray(drop)); err != nil {
		return err
	}
	if len(add) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM request_velocity WHERE type = ANY($1)`, pq.StringArray(add)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, backfillVelocitySQL, pq.StringArray(add)); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO velocity_tracked (type) SELECT unnest($1::text[])`, pq.StringArray(add))
	return err
}

// publish stores f as the next version unless it is the current one (in
// effect) already, with its event, on tx.
func (ps *PolicyStore) publish(ctx context.Context, tx *sqlx.Tx, name string, source []byte, f *policy.File, digest string) (PolicyChange, error) {
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
	var before any
	if cur.Version > 0 {
		before = map[string]any{"version": cur.Version, "digest": cur.Digest, "file_name": cur.FileName}
	}
	if err := writeEvents(ctx, tx, []Event{{Kind: KindPolicyPublished, Actor: ActorCLI, Subject: ptr(fmt.Sprintf("policy:%d", version)),
		Body: mustJSON(map[string]any{"before": before, "after": map[string]any{"version": version, "digest": digest, "file_name": name},
			"diff": nonNilSlice(diff)})}}); err != nil {
		return PolicyChange{}, err
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

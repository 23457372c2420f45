package approvals

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/countersign/countersign/approvals/policy"
	"github.com/countersign/countersign/internal/pgtest"
)

// TestRecentMatchesHistory: the velocity counts (hourly counters kept by a
// trigger plus exact counts at the window edges) equal a brute-force count
// over the requests themselves, for a random history of 30 hours with random
// state changes, two agents, two users and two types.
func TestRecentMatchesHistory(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	store := NewStore(db)
	const setup = `
INSERT INTO agents (id, name, domain, types, delivery_mode, auth_method, secret_hash)
VALUES ('agt_a', 'a', 'a.example.com', '{t1,t2}', 'poll', 'client_secret_basic', '\x00'),
       ('agt_b', 'b', 'b.example.com', '{t1,t2}', 'poll', 'client_secret_basic', '\x00');
INSERT INTO users (id, email) VALUES ('usr_a', 'a@example.com'), ('usr_b', 'b@example.com');
-- Counted, as for a policy whose rules read recent of both types.
INSERT INTO velocity_tracked (type) VALUES ('t1'), ('t2')`
	if _, err := db.ExecContext(ctx, setup); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	states := []string{"pending", "approved", "denied", "expired", "cancelled", "token_issued", "redeemed", "revoked"}
	outcomes := []string{"allow", "approve", "step_up", "quorum"}
	typeSets := [][]string{{"t1"}, {"t2"}, {"t1", "t2"}}
	// Amounts come from a generator of their own, so the history is the
	// one the windows' checks below were written for.
	arng := rand.New(rand.NewPCG(3, 4))
	amounts := func() string {
		switch arng.IntN(4) {
		case 0:
			return `{}`
		case 1:
			return fmt.Sprintf(`{"EUR": %d.%02d}`, arng.IntN(1000), arng.IntN(100))
		case 2:
			return fmt.Sprintf(`{"JPY": %d}`, arng.IntN(100000))
		}
		return fmt.Sprintf(`{"EUR": %d.%02d, "USD": %d.10}`, arng.IntN(1000), arng.IntN(100), arng.IntN(10))
	}
	var ids []string
	for range 400 {
		var id string
		age := time.Duration(rng.Int64N(int64(30 * time.Hour)))
		err := db.GetContext(ctx, &id, `
INSERT INTO requests (id, agent_id, user_id, state, scope, details_canonical, details_hash,
	types, type_versions, audience, created_at, expires_at, poll_interval, outcome, amounts)
VALUES (gen_random_uuid(), $1, $2, 'pending', 'openid', '[]', 'h', $3, '{}', '{x}',
	now() - make_interval(secs => $4), now() - make_interval(secs => $4) + interval '10 minutes', 5, $5, $6)
RETURNING id`, []string{"agt_a", "agt_b"}[rng.IntN(2)], []string{"usr_a", "usr_b"}[rng.IntN(2)],
			pq.StringArray(typeSets[rng.IntN(3)]), age.Seconds(), outcomes[rng.IntN(4)], amounts())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Random state changes, some of them repeated (no change of class).
	for range 600 {
		if _, err := db.ExecContext(ctx, `UPDATE requests SET state = $2 WHERE id = $1`, ids[rng.IntN(len(ids))], states[rng.IntN(len(states))]); err != nil {
			t.Fatal(err)
		}
	}

	// The sweeper's purge of counters older than a day changes nothing a
	// window reads.
	if n, err := store.PurgeVelocity(ctx); err != nil || n == 0 {
		t.Fatalf("purged %d counters (err %v), want some of the 30-hour history", n, err)
	}

	types := []string{"t1", "t2"}
	compare(t, store, types)
	// t2 no longer counted (a policy stopped reading its recent, its
	// counters left to age out): its figures come from the requests, still
	// exact.
	// State changes after that leave its counters stale.
	if _, err := db.ExecContext(ctx, `DELETE FROM velocity_tracked WHERE type = 't2'`); err != nil {
		t.Fatal(err)
	}
	for range 300 {
		if _, err := db.ExecContext(ctx, `UPDATE requests SET state = $2 WHERE id = $1`, ids[rng.IntN(len(ids))], states[rng.IntN(len(states))]); err != nil {
			t.Fatal(err)
		}
	}
	compare(t, store, types)
}

// compare checks recent against bruteRecent for three agent and user pairs.
func compare(t *testing.T, store *Store, types []string) {
	t.Helper()
	ctx := context.Background()
	for _, who := range [][2]string{{"agt_a", "usr_a"}, {"agt_a", "usr_b"}, {"agt_b", "usr_b"}} {
		got, err := store.recent(ctx, store.db, who[0], who[1], types, true)
		if err != nil {
			t.Fatal(err)
		}
		want := bruteRecent(t, store, who[0], who[1], types)
		for _, ty := range types {
			if !sameRecent(got[ty], want[ty]) {
				t.Errorf("%v %s:\n got  %+v\n want %+v", who, ty, got[ty], want[ty])
			}
		}
		// Without the sums, the same counts.
		counts, err := store.recent(ctx, store.db, who[0], who[1], types, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, ty := range types {
			w := want[ty]
			for _, c := range []*policy.Counts{&w.Agent.Hour, &w.Agent.Day, &w.User.Hour, &w.User.Day} {
				for _, t := range []*policy.Tally{&c.Total, &c.Allowed, &c.Approved, &c.Denied, &c.Pending} {
					t.Sums = nil
				}
			}
			if !sameRecent(counts[ty], w) {
				t.Errorf("%v %s without sums:\n got  %+v\n want %+v", who, ty, counts[ty], w)
			}
		}
		if want["t1"].Agent.Day.Total.Count == 0 || want["t1"].Agent.Hour.Total.Count == 0 {
			t.Fatalf("the random history left %v's windows empty: %+v", who, want["t1"])
		}
	}
}

// bruteRecent counts straight from the requests table.
func bruteRecent(t *testing.T, s *Store, agentID, userID string, types []string) map[string]policy.Recent {
	t.Helper()
	var rows []struct {
		AgentID string         `db:"agent_id"`
		UserID  string         `db:"user_id"`
		Types   pq.StringArray `db:"types"`
		State   string         `db:"state"`
		Outcome string         `db:"outcome"`
		Amounts Amounts        `db:"amounts"`
		Hour    bool           `db:"hour"`
	}
	err := s.db.Select(&rows, `SELECT agent_id, user_id, types, state, outcome, amounts, created_at > now() - interval '1 hour' AS hour
		FROM requests WHERE created_at > now() - interval '1 day'`)
	if err != nil {
		t.Fatal(err)
	}
	count := func(t *policy.Tally, amounts map[string]float64) {
		t.Count++
		for c, a := range amounts {
			if t.Sums == nil {
				t.Sums = map[string]float64{}
			}
			t.Sums[c] += a
		}
	}
	out := map[string]policy.Recent{}
	for _, ty := range types {
		var rec policy.Recent
		for _, r := range rows {
			if !slices.Contains(r.Types, ty) {
				continue
			}
			amounts := r.Amounts.policy()
			for _, w := range []struct {
				match bool
				win   *policy.Windows
			}{{r.AgentID == agentID, &rec.Agent}, {r.UserID == userID, &rec.User}} {
				if !w.match {
					continue
				}
				for _, c := range []*policy.Counts{&w.win.Day, &w.win.Hour} {
					if c == &w.win.Hour && !r.Hour {
						continue
					}
					count(&c.Total, amounts)
					switch {
					case r.State == "pending":
						count(&c.Pending, amounts)
					case r.State == "denied":
						count(&c.Denied, amounts)
					case r.Outcome == "allow":
						count(&c.Allowed, amounts)
					case r.State == "approved" || r.State == "token_issued" || r.State == "redeemed" || r.State == "revoked":
						count(&c.Approved, amounts)
					}
				}
			}
		}
		out[ty] = rec
	}
	return out
}

func sameRecent(a, b policy.Recent) bool {
	near := func(x, y float64) bool { d := x - y; return d < 1e-6 && d > -1e-6 }
	sameSums := func(x, y map[string]float64) bool {
		if len(x) != len(y) {
			return false
		}
		for c, v := range x {
			if w, ok := y[c]; !ok || !near(v, w) {
				return false
			}
		}
		return true
	}
	same := func(x, y policy.Counts) bool {
		for _, p := range [][2]policy.Tally{{x.Total, y.Total}, {x.Allowed, y.Allowed}, {x.Approved, y.Approved}, {x.Denied, y.Denied}, {x.Pending, y.Pending}} {
			if p[0].Count != p[1].Count || !sameSums(p[0].Sums, p[1].Sums) {
				return false
			}
		}
		return true
	}
	return same(a.Agent.Hour, b.Agent.Hour) && same(a.Agent.Day, b.Agent.Day) && same(a.User.Hour, b.User.Hour) && same(a.User.Day, b.User.Day)
}

// TestBatchVelocityMatchesDatabase: the admissions of one batch read their
// velocity from what the first of them read, with the requests stored since
// added (Tx.counted); after each store that equals a fresh read of the
// database in the same transaction, for requests of every class, of the
// agent with another user, of another type and with amounts or none.
func TestBatchVelocityMatchesDatabase(t *testing.T) {
	f := newRaceFixture(t)
	ctx := context.Background()
	if _, err := f.db.ExecContext(ctx, `INSERT INTO users (id, email) VALUES ('usr_other', 'other@example.com')`); err != nil {
		t.Fatal(err)
	}
	types := []string{"payment_initiation"}
	stored := []struct {
		user    string
		state   State
		outcome string
		types   []string
		amounts Amounts
	}{
		{f.user.ID, StateApproved, "allow", types, Amounts{"EUR": "10.00"}},
		{f.user.ID, StatePending, "approve", types, Amounts{"EUR": "500.10", "USD": "3"}},
		{f.user.ID, StateDenied, "deny", types, Amounts{}},
		{"usr_other", StateApproved, "allow", types, Amounts{"EUR": "0.01"}},
		{f.user.ID, StateApproved, "allow", []string{"database_operation"}, Amounts{}},
		{f.user.ID, StatePending, "step_up", []string{"database_operation", "payment_initiation"}, Amounts{"JPY": "1000"}},
	}
	errDone := errors.New("done")
	err := f.store.change(ctx, func(tx *Tx) error {
		read := func(sums bool) map[string]policy.Recent {
			t.Helper()
			got, err := f.store.recent(ctx, tx, f.agent.ID, f.user.ID, types, sums)
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		read(true)
		read(false)
		for i, s := range stored {
			id := newUUID()
			r := Request{ID: uuidString(id[:]), AgentID: f.agent.ID, UserID: s.user, State: s.state, Outcome: s.outcome,
				Scope: "openid", DetailsCanonical: "[]", DetailsHash: fmt.Sprintf("h%d", i), Types: s.types,
				TypeVersions: TypeVersions{}, ACRValues: pq.StringArray{}, Resources: pq.StringArray{},
				Audience: pq.StringArray{"https://rs.example.com"}, PollInterval: 5, Amounts: s.amounts}
			if _, err := f.store.insertRequest(ctx, tx, r, time.Minute, nil, 0); err != nil {
				t.Fatal(err)
			}
			for _, sums := range []bool{true, false} {
				cached := read(sums)
				kept := tx.recent
				tx.recent = nil
				fresh := read(sums)
				tx.recent = kept
				if !sameRecent(cached["payment_initiation"], fresh["payment_initiation"]) {
					t.Fatalf("after request %d (sums %v):\n batch    %+v\n database %+v", i, sums, cached["payment_initiation"], fresh["payment_initiation"])
				}
			}
		}
		if got := read(true)["payment_initiation"].Agent.Hour.Total; got.Count != 5 || got.Sums["EUR"] < 510.1 || got.Sums["EUR"] > 510.12 {
			t.Fatalf("the agent's hour: %+v, want 5 payments, 510.11 EUR", got)
		}
		return errDone
	})
	if !errors.Is(err, errDone) {
		t.Fatal(err)
	}
}

package approvals

import (
	"context"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/pgtest"
)

// BenchmarkRecent measures the velocity query (agent and user) that every
// request pays for, on a history of one million requests, 100,000 of them by
// the measured agent, spread over the last 90 days (about 1,100 of the
// agent's in the last day; one in seven pays in EUR and USD, the rest in
// EUR): hourly counters and index-only scans of the window's edges keep it
// independent of the history. counts is what rules that read only counts
// pay, sums what rules reading recent's sums pay.
func BenchmarkRecent(b *testing.B) {
	ctx := context.Background()
	db := pgtest.New(b)
	store := NewStore(db)
	const seed = `
INSERT INTO agents (id, name, domain, types, delivery_mode, auth_method, secret_hash)
SELECT 'agt_' || i, 'agent ' || i, 'a.example.com', '{payment_initiation}', 'poll', 'client_secret_basic', '\x00'
FROM generate_series(0, 9) i;
INSERT INTO users (id, email) SELECT 'usr_' || i, 'u' || i || '@example.com' FROM generate_series(0, 99) i;
INSERT INTO requests (id, agent_id, user_id, state, scope, details_canonical, details_hash,
	types, type_versions, audience, created_at, expires_at, poll_interval, outcome, amounts)
SELECT gen_random_uuid(), 'agt_' || (i % 10), 'usr_' || (i % 100),
	(ARRAY['approved','denied','pending','expired','redeemed'])[1 + i % 5], 'openid', '[]', 'h',
	'{payment_initiation}', '{}', '{https://api.example.com}',
	now() - (i::double precision / 1000000) * interval '90 days',
	now() - (i::double precision / 1000000) * interval '90 days' + interval '10 minutes', 5,
	(ARRAY['allow','approve','step_up'])[1 + i % 3],
	CASE WHEN i % 7 = 0 THEN jsonb_build_object('EUR', (i % 500) + 0.50, 'USD', 20) ELSE jsonb_build_object('EUR', i % 500) END
FROM generate_series(1, 1000000) i`
	start := time.Now()
	// Seed with the counter trigger off, then build the counters in one pass,
	// as the migration does for requests made before it.
	for _, q := range []string{`ALTER TABLE requests DISABLE TRIGGER requests_velocity`, `ALTER TABLE requests DISABLE TRIGGER requests_velocity_change`, seed, `SELECT request_velocity_rebuild()`,
		`ALTER TABLE requests ENABLE TRIGGER requests_velocity`, `ALTER TABLE requests ENABLE TRIGGER requests_velocity_change`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	// The steady state: the sweeper keeps only the counters a window reads.
	if _, err := store.PurgeVelocity(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE requests, request_velocity`); err != nil { // as autovacuum would: index-only scans need the visibility map
		b.Fatal(err)
	}
	b.Logf("seeded 1,000,000 requests in %s", time.Since(start).Round(time.Millisecond))
	var n int
	if err := db.GetContext(ctx, &n, `SELECT count(*) FROM requests WHERE agent_id = 'agt_3'`); err != nil || n != 100000 {
		b.Fatalf("agent agt_3 has %d requests (err %v), want 100,000", n, err)
	}
	types := []string{"payment_initiation"}
	for _, sums := range []bool{false, true} {
		b.Run(map[bool]string{false: "counts", true: "sums"}[sums], func(b *testing.B) {
			for b.Loop() {
				rec, err := store.recent(ctx, store.db, "agt_3", "usr_3", types, sums)
				if err != nil {
					b.Fatal(err)
				}
				if day := rec["payment_initiation"].Agent.Day.Total; day.Count == 0 || (len(day.Sums) != 2) != !sums {
					b.Fatalf("the agent's last day: %+v", day)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/recent")
		})
	}
}

package notify

import (
	"context"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approvals"
)

// BenchmarkPushDeliveries: outbox deliveries per second to the local push
// service (which verifies VAPID and decrypts every message in this same
// process) by two workers, as two replicas would run them. One op is one
// delivered push.
func BenchmarkPushDeliveries(b *testing.B) {
	f := newPushFixture(b)
	approvals.ConfigurePool(f.db) // as serve runs it
	ctx := context.Background()
	id := f.request(f.agent(""), "")
	d := f.devices["/push/phone"]
	// b.N devices of alice's, all at the push service, with one due push each.
	if _, err := f.db.ExecContext(ctx, `DELETE FROM outbox WHERE kind = 'push'`); err != nil {
		b.Fatal(err)
	}
	if _, err := f.db.ExecContext(ctx, `
		WITH s AS (
			INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, name)
			SELECT 'bench_' || i, $1, $2 || '/push/bench/' || i, $3, $4, 'bench'
			FROM generate_series(1, $5) i
			RETURNING id, endpoint
		)
		INSERT INTO outbox (kind, request_id, target, payload, expires_at, subscription_id)
		SELECT 'push', $6::uuid, s.endpoint, jsonb_build_object('type', 'new', 'request_id', $6::text, 'url', '/approve/' || $6::text),
			now() + interval '1 hour', s.id
		FROM s`, f.user.ID, f.ps.srv.URL, base64.RawURLEncoding.EncodeToString(d.key.PublicKey().Bytes()),
		base64.RawURLEncoding.EncodeToString(d.auth), b.N, id); err != nil {
		b.Fatal(err)
	}
	f.ps.lookup = func(path string) (device, bool) {
		if strings.HasPrefix(path, "/push/bench/") {
			return d, true
		}
		return device{}, false
	}
	b.ResetTimer()
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { f.worker.Run(ctx) })
	}
	for {
		var open int
		if err := f.db.Get(&open, `SELECT count(*) FROM outbox WHERE kind = 'push' AND delivered_at IS NULL AND dropped_at IS NULL`); err != nil {
			b.Fatal(err)
		}
		if open == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	wg.Wait()
	got, bad := f.ps.received()
	if len(bad) != 0 || len(got) < b.N {
		b.Fatalf("%d of %d pushes received, refused: %v", len(got), b.N, bad)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "deliveries/s")
}

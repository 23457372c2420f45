package approvals

import (
	"context"
	"testing"
	"time"
)

// TestSweep runs the sweeper as serve does: it expires a request whose time
// has passed and makes a prepared signing key current once it is due.
func TestSweep(t *testing.T) {
	f := newRaceFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := f.ask(t, f.agent, payment("80.00", "EUR"))
	if err != nil {
		t.Fatal(err)
	}
	prepared, err := f.svc.Keys().Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Both are due now.
	if _, err := f.db.Exec(`UPDATE requests SET created_at = now() - interval '1 minute', expires_at = now() - interval '1 second' WHERE id = $1`, c.Request.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec(`UPDATE signing_keys SET activates_at = now() - interval '1 second' WHERE status = 'next'`); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		f.svc.Sweep(ctx, 20*time.Millisecond)
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var state string
		var current int
		if err := f.db.Get(&state, `SELECT state FROM requests WHERE id = $1`, c.Request.ID); err != nil {
			t.Fatal(err)
		}
		if err := f.db.Get(&current, `SELECT count(*) FROM signing_keys WHERE status = 'current' AND kid IN ($1, $2)`, prepared[0].KID, prepared[1].KID); err != nil {
			t.Fatal(err)
		}
		if state == string(StateExpired) && current == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s of sweeping: request %s, %d of 2 prepared keys current", state, current)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
}

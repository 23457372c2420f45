package approvals

import (
	"context"
	"testing"
	"time"
)

// TestOneConnectionPerChange runs every kind of change on a pool of one
// connection: a change that took a second connection while holding its
// transaction would wait for itself until the deadline.
func TestOneConnectionPerChange(t *testing.T) {
	f := newRaceFixture(t)
	f.applyDemoPolicy(t) // its payment rule reads recent: admission takes the velocity locks
	f.db.SetMaxOpenConns(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c, err := f.svc.Authorize(ctx, f.agent, AuthRequest{Scope: "openid", LoginHint: f.user.Email,
		AuthorizationDetails: []byte(raceDetails), ClientNotificationToken: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.decide(ctx, c.Request.ID, true); err != nil {
		t.Fatal(err)
	}
	tok, err := f.svc.Token(ctx, f.agent, c.AuthReqID)
	if err != nil {
		t.Fatal(err)
	}
	var rs ResourceServer
	if err := f.db.GetContext(ctx, &rs, `SELECT `+resourceColumns+` FROM resource_servers LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	if red, err := f.svc.Redeem(ctx, rs, tok.AccessToken, []byte(raceDetails), ""); err != nil || !red.Active {
		t.Fatalf("redeem: %+v %v", red, err)
	}
	other := f.pending(t)
	if err := f.svc.Cancel(ctx, f.agent, other.AuthReqID); err != nil {
		t.Fatal(err)
	}
	due := f.pending(t)
	if _, err := f.db.ExecContext(ctx, `UPDATE requests SET created_at = now() - interval '1 hour', expires_at = now() WHERE id = $1`, due.Request.ID); err != nil {
		t.Fatal(err)
	}
	if ids, err := f.store.ExpireDue(ctx, 10); err != nil || len(ids) != 1 {
		t.Fatalf("expire: %v %v", ids, err)
	}
	if err := f.store.SetAgentStatus(ctx, f.agent.ID, "suspended"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Policies().Apply(ctx, "other.yaml", []byte("types:\n  payment_initiation: [{id: all, when: \"true\", outcome: deny, reason: No}]\n")); err != nil {
		t.Fatal(err)
	}
}

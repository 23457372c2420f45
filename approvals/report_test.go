package approvals

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	ctx := context.Background()
	f := newEventsFixture(t)
	agent := f.newAgent(t, "Rogue")
	reported := f.pendingFor(t, agent, "alice@example.com")
	other := f.pendingFor(t, agent, "alice@example.com")
	strangers := f.pendingFor(t, agent, "stranger@example.com")
	_, tr := f.token(t, agent, "alice@example.com")
	if claims, err := f.svc.Introspect(ctx, f.rs, tr.AccessToken); err != nil || claims == nil {
		t.Fatalf("the agent's token before the report: %v %v, want active", claims, err)
	}

	// Nobody but the request's user may report it, and learns nothing.
	if err := f.svc.Report(ctx, reported.Request.ID, f.stranger); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a stranger's report: %v, want ErrNotFound", err)
	}
	before := countEvents(t, f.db, "")
	if err := f.svc.Report(ctx, reported.Request.ID, f.user); err != nil {
		t.Fatal(err)
	}
	a, err := f.store.Agent(ctx, agent.ID)
	if err != nil || a.Status != "suspended" {
		t.Fatalf("reported agent: %q %v", a.Status, err)
	}
	for _, c := range []Created{reported, other} {
		r, _ := f.store.Request(ctx, c.Request.ID)
		if r.State != StateDenied || r.DecisionReason != ReportReason {
			t.Errorf("alice's pending request %s: %s %q, want denied", c.Request.ID, r.State, r.DecisionReason)
		}
	}
	if r, _ := f.store.Request(ctx, strangers.Request.ID); r.State != StatePending {
		t.Errorf("another user's request: %s, want still pending (the suspension refuses its token)", r.State)
	}
	if claims, err := f.svc.Introspect(ctx, f.rs, tr.AccessToken); err != nil || claims != nil {
		t.Errorf("the reported agent's token introspects as %+v, %v; want inactive", claims, err)
	}
	got := eventDelta(before, countEvents(t, f.db, ""))
	want := map[string]int{KindAgentReported: 1, KindAgentSuspended: 1, KindRequestDenied: 2, KindTokenRevoked: 1}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("events %v, want %v", got, want)
			break
		}
	}
	// The report and the suspension say who, why and what they did.
	var rep, susp Event
	if err := f.db.Get(&rep, `SELECT kind, actor, request_id, agent_id, user_id, body FROM audit_events WHERE kind = $1 AND agent_id = $2`,
		KindAgentReported, agent.ID); err != nil {
		t.Fatal(err)
	}
	var b struct {
		RequestID string   `json:"request_id"`
		Suspended bool     `json:"suspended"`
		Denied    []string `json:"denied"`
	}
	if err := json.Unmarshal(rep.Body, &b); err != nil || rep.Actor != ActorUser(f.user.ID) || deref(rep.UserID) != f.user.ID ||
		b.RequestID != reported.Request.ID || !b.Suspended || !slices.Contains(b.Denied, reported.Request.ID) ||
		!slices.Contains(b.Denied, other.Request.ID) || len(b.Denied) != 2 {
		t.Errorf("agent.reported by %s: %s (%v)", rep.Actor, rep.Body, err)
	}
	if err := f.db.Get(&susp, `SELECT kind, actor, agent_id, body FROM audit_events WHERE kind = $1 AND agent_id = $2`,
		KindAgentSuspended, agent.ID); err != nil {
		t.Fatal(err)
	}
	if susp.Actor != ActorUser(f.user.ID) || !strings.Contains(string(susp.Body), `"reason": "reported by a user"`) ||
		!strings.Contains(string(susp.Body), `"after": {"status": "suspended"}`) {
		t.Errorf("agent.suspended by %s: %s", susp.Actor, susp.Body)
	}
	// A decided request cannot be reported (again): nothing is written.
	before = countEvents(t, f.db, "")
	if err := f.svc.Report(ctx, reported.Request.ID, f.user); !errors.Is(err, ErrAlreadyDecided) {
		t.Fatalf("reporting a decided request: %v, want ErrAlreadyDecided", err)
	}
	if got := eventDelta(before, countEvents(t, f.db, "")); len(got) != 0 {
		t.Errorf("a refused report wrote %v", got)
	}
}

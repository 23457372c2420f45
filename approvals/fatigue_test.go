package approvals

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// fatigueService is the fixture's domain with the fatigue guards f.
func fatigueService(f raceFixture, g Fatigue) *Service {
	return NewService(f.store, f.svc.Types(), f.svc.Keys(), Config{Issuer: "https://countersign.test", KEK: raceKEK, Fatigue: &g})
}

// ask makes agent's request for hint with a payment of amount EUR.
func askFor(svc *Service, agent Agent, hint, amount string) (Created, error) {
	return svc.Authorize(context.Background(), agent, AuthRequest{Scope: "openid", LoginHint: hint,
		AuthorizationDetails: payment(amount, "EUR")})
}

func TestJoinIdenticalRequests(t *testing.T) {
	ctx := context.Background()
	f := newRaceFixture(t)
	svc := fatigueService(f, DefaultFatigue)

	// Ten identical calls at once: one request, one auth_req_id.
	created := make([]Created, 10)
	errs := together(10, func(i int) error {
		var err error
		created[i], err = askFor(svc, f.agent, "alice@example.com", "500.00")
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if created[i].AuthReqID != created[0].AuthReqID || created[i].Request.ID != created[0].Request.ID {
			t.Fatalf("call %d got request %s (%s), call 0 %s (%s): identical calls must join one request", i,
				created[i].Request.ID, created[i].AuthReqID, created[0].Request.ID, created[0].AuthReqID)
		}
	}
	var n int
	if err := f.db.Get(&n, `SELECT count(*) FROM requests WHERE agent_id = $1`, f.agent.ID); err != nil || n != 1 {
		t.Fatalf("%d requests stored for 10 identical calls (%v), want 1", n, err)
	}
	other, err := askFor(svc, f.agent, "alice@example.com", "501.00")
	if err != nil || other.Request.ID == created[0].Request.ID {
		t.Fatalf("different details joined the pending request: %v", err)
	}

	// One decision answers both callers, and only one token is issued.
	if _, err := f.svc.Review(ctx, created[0].Request.ID, Reviewer{UserID: f.user.ID, AMR: []string{"user"}}, ReviewInput{Verdict: VerdictApprove}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Token(ctx, f.agent, created[3].AuthReqID); err != nil {
		t.Fatalf("the first caller's poll: %v", err)
	}
	if _, err := svc.Token(ctx, f.agent, created[7].AuthReqID); err == nil {
		t.Error("a second token was issued for the joined request")
	}
	if err := f.db.Get(&n, `SELECT count(*) FROM audit_events WHERE kind = $1 AND request_id = $2`, KindTokenIssued, created[0].Request.ID); err != nil || n != 1 {
		t.Errorf("%d tokens issued (%v), want 1", n, err)
	}
	// Once it is decided, the same details make a new request.
	again, err := askFor(svc, f.agent, "alice@example.com", "500.00")
	if err != nil || again.Request.ID == created[0].Request.ID {
		t.Errorf("a decided request was joined: %v", err)
	}
}

func TestPendingLimits(t *testing.T) {
	f := newRaceFixture(t)
	svc := fatigueService(f, Fatigue{MaxPendingPerAgent: 3, MaxPendingPerUser: 2})
	bob, err := f.store.CreateUser(context.Background(), NewUser{Email: "bob@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := askFor(svc, f.agent, "alice@example.com", fmt.Sprintf("%d.00", 500+i)); err != nil {
			t.Fatalf("alice's request %d: %v", i+1, err)
		}
	}
	_, err = askFor(svc, f.agent, "alice@example.com", "600.00")
	var ref *Refusal
	if !errors.As(err, &ref) || ref.Code != CodeAccessDenied || ref.RetryAfter <= 0 || ref.RetryAfter > 3600 {
		t.Fatalf("alice's third pending request: %v (%+v), want access_denied with a Retry-After", err, ref)
	}
	if _, err := askFor(svc, f.agent, bob.Email, "700.00"); err != nil {
		t.Fatalf("bob's first request: %v", err)
	}
	if _, err := askFor(svc, f.agent, bob.Email, "701.00"); !errors.As(err, &ref) || ref.Code != CodeAccessDenied {
		t.Fatalf("the agent's fourth pending request: %v, want access_denied", err)
	}
}

func TestPendingLimitUnderConcurrency(t *testing.T) {
	f := newRaceFixture(t)
	svc := fatigueService(f, Fatigue{MaxPendingPerUser: 4})
	errs := together(12, func(i int) error {
		_, err := askFor(svc, f.agent, "alice@example.com", fmt.Sprintf("%d.00", 100+i))
		return err
	})
	ok, refused := 0, 0
	for _, err := range errs {
		var ref *Refusal
		switch {
		case err == nil:
			ok++
		case errors.As(err, &ref) && ref.Code == CodeAccessDenied:
			refused++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 4 || refused != 8 {
		t.Fatalf("12 concurrent requests under a limit of 4: %d admitted, %d refused", ok, refused)
	}
}

func TestSuspendAfterDenials(t *testing.T) {
	ctx := context.Background()
	f := newRaceFixture(t)
	svc := fatigueService(f, Fatigue{SuspendAfterDenials: 3, SuspendWindow: time.Hour})
	var ids []string
	for i := range 3 {
		c, err := askFor(svc, f.agent, "alice@example.com", fmt.Sprintf("%d.00", 800+i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.Request.ID)
	}
	deny := func(id string) {
		t.Helper()
		if _, err := svc.Review(ctx, id, Reviewer{UserID: f.user.ID, AMR: []string{"user"}}, ReviewInput{Verdict: VerdictDeny}); err != nil {
			t.Fatal(err)
		}
	}
	deny(ids[0])
	deny(ids[1])
	if a, _ := f.store.Agent(ctx, f.agent.ID); a.Status != "active" {
		t.Fatalf("suspended after two denials of three: %s", a.Status)
	}
	deny(ids[2])
	a, err := f.store.Agent(ctx, f.agent.ID)
	if err != nil || a.Status != "suspended" {
		t.Fatalf("after three denials within the window the agent is %q (%v), want suspended", a.Status, err)
	}
	var automatic int
	if err := f.db.Get(&automatic, `SELECT count(*) FROM audit_events WHERE kind = $1 AND agent_id = $2 AND actor = $3
		AND (body->>'automatic')::boolean AND body->>'reason' = '3 requests denied within 1h0m0s'
		AND body->'after'->>'status' = 'suspended'`, KindAgentSuspended, f.agent.ID, ActorServer); err != nil || automatic != 1 {
		t.Errorf("%d automatic suspension events (%v), want 1", automatic, err)
	}
	if _, err := askFor(svc, a, "alice@example.com", "900.00"); err == nil {
		t.Error("the suspended agent could still ask")
	}
}

// holdLock takes advisory lock key in a transaction of its own, as another
// replica's admission would, until release.
func holdLock(t *testing.T, f raceFixture, key string) (release func()) {
	t.Helper()
	tx, err := f.db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, key); err != nil {
		t.Fatal(err)
	}
	return func() { _ = tx.Rollback() }
}

// With joining alone (no pending limit), a pending admission waits only for
// the admissions identical to it: not for the other requests of its agent
// or user, which it need not see.
func TestJoinIdenticalWaitsOnlyForIdentical(t *testing.T) {
	f := newRaceFixture(t)
	svc := fatigueService(f, Fatigue{JoinIdentical: true})

	created := make([]Created, 10)
	errs := together(10, func(i int) error {
		var err error
		created[i], err = askFor(svc, f.agent, "alice@example.com", "500.00")
		return err
	})
	for i, err := range errs {
		if err != nil || created[i].Request.ID != created[0].Request.ID {
			t.Fatalf("call %d: %v, request %s; call 0's %s: identical calls must join one request", i, err,
				created[i].Request.ID, created[0].Request.ID)
		}
	}

	// The agent's and the user's admission locks are held elsewhere: a
	// different request goes through all the same.
	velocity := admissionKeys(true, false, f.agent.ID, f.user.ID, "")
	release := holdLock(t, f, velocity[0])
	releaseUser := holdLock(t, f, velocity[1])
	done := make(chan error, 1)
	go func() { _, err := askFor(svc, f.agent, "alice@example.com", "600.00"); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a pending admission waited for its agent's and user's locks: with joining alone only identical requests wait for each other")
	}
	release()
	releaseUser()

	// An identical call does wait for the identical one in flight, and
	// then joins it.
	waitsThenJoins(t, f, svc, created[0])
}

// An admission whose rules read velocity, which is serial on its agent and
// user, takes the identical lock too: an identical request admitted on the
// other path (under another policy version, or another replica's guards)
// and this one never both miss each other.
func TestSerialAdmissionTakesIdenticalLock(t *testing.T) {
	f := newRaceFixture(t)
	svc := fatigueService(f, Fatigue{JoinIdentical: true})
	applyVelocityPolicy(t, svc)
	first, err := askFor(svc, f.agent, "alice@example.com", "500.00")
	if err != nil || first.Request.State != StatePending {
		t.Fatalf("first: %v %v", first.Request.State, err)
	}
	waitsThenJoins(t, f, svc, first)
}

// waitsThenJoins checks that a call identical to pending request first
// (alice's payment of 500.00 EUR) waits while the identical lock is held
// elsewhere, and then joins first.
func waitsThenJoins(t *testing.T, f raceFixture, svc *Service, first Created) {
	t.Helper()
	release := holdLock(t, f, admissionKeys(false, true, f.agent.ID, f.user.ID, first.Request.DetailsHash)[0])
	joined := make(chan Created, 1)
	go func() {
		c, err := askFor(svc, f.agent, "alice@example.com", "500.00")
		if err != nil {
			t.Error(err)
		}
		joined <- c
	}()
	select {
	case <-joined:
		t.Fatal("an identical call did not wait for the identical admission in flight")
	case <-time.After(300 * time.Millisecond):
	}
	release()
	if c := <-joined; c.Request.ID != first.Request.ID {
		t.Fatalf("the identical call made request %s, want to join %s", c.Request.ID, first.Request.ID)
	}
}

// A decision on a request whose type is counted waits for the admissions
// of its agent in flight (a batch holds their counter rows, of several
// classes: a decision moving two of them the other way would deadlock with
// it), and one on a request whose type is not counted does not.
func TestDecisionWaitsForAdmissionBatch(t *testing.T) {
	ctx := context.Background()
	for _, counted := range []bool{true, false} {
		t.Run(fmt.Sprintf("counted=%v", counted), func(t *testing.T) {
			f := newRaceFixture(t)
			if counted {
				applyVelocityPolicy(t, f.svc)
			}
			c, err := askFor(f.svc, f.agent, "alice@example.com", "500.00")
			if err != nil || c.Request.State != StatePending {
				t.Fatalf("ask: %v %v", c.Request.State, err)
			}
			release := holdLock(t, f, admissionKeys(true, false, f.agent.ID, f.user.ID, "")[0])
			defer release()
			decided := make(chan error, 1)
			go func() {
				_, err := f.svc.Review(ctx, c.Request.ID, Reviewer{UserID: f.user.ID, AMR: []string{"user"}}, ReviewInput{Verdict: VerdictDeny})
				decided <- err
			}()
			select {
			case err := <-decided:
				if counted {
					t.Fatalf("the denial (err %v) did not wait for the agent's admission in flight", err)
				}
				if err != nil {
					t.Fatal(err)
				}
				return
			case <-time.After(300 * time.Millisecond):
				if !counted {
					t.Fatal("a denial of a request whose type is not counted waited for the agent's admissions")
				}
			}
			release()
			if err := <-decided; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// An admission waiting behind a batch of its agent's in flight stops when
// its caller goes, and the batch then admits the rest.
func TestQueuedAdmissionStopsWithItsCaller(t *testing.T) {
	ctx := context.Background()
	f := newRaceFixture(t)
	applyVelocityPolicy(t, f.svc)
	release := holdLock(t, f, admissionKeys(true, false, f.agent.ID, f.user.ID, "")[0])
	defer release()
	first := make(chan error, 1)
	go func() { _, err := askFor(f.svc, f.agent, "alice@example.com", "500.00"); first <- err }()
	time.Sleep(100 * time.Millisecond) // the first is in its batch, waiting for the lock
	gone, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	second := make(chan error, 1)
	go func() {
		_, err := f.svc.Authorize(gone, f.agent, AuthRequest{Scope: "openid", LoginHint: "alice@example.com", AuthorizationDetails: payment("501.00", "EUR")})
		second <- err
	}()
	select {
	case err := <-second:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a queued admission whose caller went: %v, want its deadline", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a queued admission whose caller went still waits for the batch in flight")
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if c, err := askFor(f.svc, f.agent, "alice@example.com", "502.00"); err != nil || c.Request.State != StatePending {
		t.Fatalf("an admission after: %v %v", c.Request.State, err)
	}
}

// applyVelocityPolicy publishes a policy whose payment rule reads recent
// (and still asks the user): its admissions are serial per agent and user.
func applyVelocityPolicy(t *testing.T, svc *Service) {
	t.Helper()
	if _, err := svc.Policies().Apply(context.Background(), "velocity.yaml", []byte("types:\n  payment_initiation: [{id: v, when: 'recent.agent.hour.total.count < 1000', outcome: approve, reason: ask}]\n")); err != nil {
		t.Fatal(err)
	}
}

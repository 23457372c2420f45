package approvals

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/internal/pgtest"
)

// raceDetails is a demo payment every race trial asks approval for.
const raceDetails = `[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"500.00"},"creditorName":"Alice Smith","creditorAccount":{"iban":"DE89370400440532013000"}}]`

// raceKEK is the key-encryption key of race fixtures.
var raceKEK = []byte("0123456789abcdef0123456789abcdef")

// raceFixture is a store and service on a fresh database with the demo types,
// one user, one agent and one resource server.
type raceFixture struct {
	db    *sqlx.DB
	store *Store
	svc   *Service
	user  User
	agent Agent
}

func newRaceFixture(t *testing.T) raceFixture {
	t.Helper()
	ctx := context.Background()
	db := pgtest.New(t)
	store := NewStore(db)
	keys, err := NewKeyStore(db, raceKEK, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	types := NewTypeStore(store)
	defs, err := demo.TypeDefinitions()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := types.Apply(ctx, defs); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPolicyStore(store).Apply(ctx, "approve.yaml",
		[]byte("types:\n  payment_initiation: [{id: all, when: \"true\", outcome: approve, reason: Approval needed}]\n")); err != nil {
		t.Fatal(err)
	}
	f := raceFixture{db: db, store: store, svc: NewService(store, types, keys, Config{Issuer: "https://countersign.test", KEK: raceKEK,
		Fatigue: &Fatigue{}})}
	if f.user, err = store.CreateUser(ctx, NewUser{Email: "alice@example.com", Name: "Alice"}); err != nil {
		t.Fatal(err)
	}
	if f.agent, _, err = store.CreateAgent(ctx, NewAgent{Name: "Race agent", Domain: "agent.example.com", Types: []string{"payment_initiation"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.CreateResourceServer(ctx, NewResourceServer{Name: "API", Audience: "https://api.example.com", Types: []string{"code_merge", "database_operation", "payment_initiation"}}); err != nil {
		t.Fatal(err)
	}
	return f
}

// pending makes a new pending request.
func (f raceFixture) pending(t *testing.T) Created {
	t.Helper()
	c, err := f.svc.Authorize(context.Background(), f.agent, AuthRequest{Scope: "openid", LoginHint: "alice@example.com",
		AuthorizationDetails: []byte(raceDetails)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// decide records the fixture user's verdict on request id.
func (f raceFixture) decide(ctx context.Context, id string, approve bool) (Request, error) {
	v := VerdictDeny
	if approve {
		v = VerdictApprove
	}
	return f.svc.Review(ctx, id, Reviewer{UserID: f.user.ID, AMR: []string{"hwk", "user"}}, ReviewInput{Verdict: v})
}

// contender is one of the callers racing to end a pending request.
type contender struct {
	name string
	to   State // the state the request is in when this contender wins
	// run attempts the transition; won is false when it changed nothing.
	run func(ctx context.Context) (won bool, err error)
	// lost reports whether err is an acceptable answer for a loser.
	lost func(err error) bool
}

// raceOutcome is what one contender got.
type raceOutcome struct {
	won bool
	err error
}

// contenders are approve, deny, expire and cancel of request c.
func (f raceFixture) contenders(c Created) []contender {
	id := c.Request.ID
	decideLost := func(err error) bool {
		return errors.Is(err, ErrAlreadyDecided) || errors.Is(err, ErrWrongState) || errors.Is(err, ErrExpired) ||
			// The same reviewer's other verdict won.
			errors.Is(err, ErrAlreadyReviewed)
	}
	decide := func(approve bool) func(context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			r, err := f.decide(ctx, id, approve)
			if err != nil {
				return false, err
			}
			if want := map[bool]State{true: StateApproved, false: StateDenied}[approve]; r.State != want {
				return true, fmt.Errorf("decide returned a request in state %s, want %s", r.State, want)
			}
			return true, nil
		}
	}
	return []contender{
		{"approve", StateApproved, decide(true), decideLost},
		{"deny", StateDenied, decide(false), decideLost},
		{"expire", StateExpired, func(ctx context.Context) (bool, error) {
			ids, err := f.store.ExpireDue(ctx, 100)
			return slices.Contains(ids, id), err
		}, func(err error) bool { return err == nil }},
		{"cancel", StateCancelled, func(ctx context.Context) (bool, error) {
			err := f.svc.Cancel(ctx, f.agent, c.AuthReqID)
			return err == nil, err
		}, func(err error) bool {
			var ref *Refusal
			return errors.As(err, &ref) && (ref.Code == CodeInvalidGrant || ref.Code == CodeExpiredToken)
		}},
	}
}

// race starts every contender at one barrier and returns what each got.
func race(cs []contender) []raceOutcome {
	out := make([]raceOutcome, len(cs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			<-start
			won, err := c.run(context.Background())
			out[i] = raceOutcome{won, err}
		})
	}
	close(start)
	wg.Wait()
	return out
}

// TestConcurrentDecisionsOneOutcome races approve, deny, expire and cancel of
// one pending request: at most one changes it, the request ends in the
// winner's state, and every loser is told why with a domain error. Who may
// win is the state machine's answer (Next): a live request cannot expire, and
// one past its expiry can only expire, so before the sweeper runs nobody wins.
func TestConcurrentDecisionsOneOutcome(t *testing.T) {
	const trials = 30
	all := []string{"approve", "deny", "expire", "cancel"}
	for _, tc := range []struct {
		name    string
		due     bool
		racing  []string
		mayWin  []string // empty: nobody may change the request
		loserOK func(error) bool
	}{
		{"expiry not due", false, all, []string{"approve", "deny", "cancel"}, nil},
		{"expiry due", true, all, []string{"expire"}, nil},
		{"expiry due, no sweeper", true, []string{"approve", "deny", "cancel"}, nil, saysExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRaceFixture(t)
			ctx := context.Background()
			wins := map[string]int{}
			for trial := range trials {
				c := f.pending(t)
				if tc.due {
					if _, err := f.db.ExecContext(ctx, `UPDATE requests SET created_at = now() - interval '10 minutes',
						expires_at = now() - interval '1 second' WHERE id = $1`, c.Request.ID); err != nil {
						t.Fatal(err)
					}
				}
				cs := slices.DeleteFunc(f.contenders(c), func(c contender) bool { return !slices.Contains(tc.racing, c.name) })
				got := race(cs)

				var winners []string
				want := StatePending
				for i, o := range got {
					switch {
					case o.won:
						winners = append(winners, cs[i].name)
						want = cs[i].to
						if o.err != nil {
							t.Errorf("trial %d: %s won but: %v", trial, cs[i].name, o.err)
						}
					case !cs[i].lost(o.err) || (tc.loserOK != nil && !tc.loserOK(o.err)):
						t.Errorf("trial %d: %s lost with %v, want a domain refusal", trial, cs[i].name, o.err)
					}
				}
				if len(winners) > 1 || (len(winners) == 0 && len(tc.mayWin) > 0) {
					t.Errorf("trial %d: winners %v, want exactly one", trial, winners)
					continue
				}
				for _, w := range winners {
					wins[w]++
				}
				r, err := f.store.Request(ctx, c.Request.ID)
				if err != nil {
					t.Fatal(err)
				}
				if r.State != want {
					t.Errorf("trial %d: winners %v but the request is %s, want %s", trial, winners, r.State, want)
				}
			}
			t.Logf("winners over %d trials: %v", trials, wins)
			for name, n := range wins {
				if !slices.Contains(tc.mayWin, name) {
					t.Errorf("%s won %d of %d trials; only %v may win; Next(pending, %s) with the request %s says %v",
						name, n, trials, tc.mayWin, name, map[bool]string{true: "expired", false: "live"}[tc.due],
						nextErr(Action(name), tc.due))
				}
			}
		})
	}
}

// TestCancelPastExpiry: whether a request is still live is the database's
// call at the moment of the change, as for every other transition. A cancel
// whose read of the request comes just before its expiry and whose UPDATE
// just after, or one served by a replica whose clock runs behind the
// database's, must not cancel a request that has expired.
func TestCancelPastExpiry(t *testing.T) {
	f := newRaceFixture(t)
	ctx := context.Background()
	lagging := NewService(f.store, f.svc.Types(), f.svc.Keys(), Config{Issuer: "https://countersign.test", KEK: raceKEK,
		Now: func() time.Time { return time.Now().Add(-time.Minute) }})
	c := f.pending(t)
	if _, err := f.db.ExecContext(ctx, `UPDATE requests SET created_at = now() - interval '10 minutes',
		expires_at = now() - interval '1 second' WHERE id = $1`, c.Request.ID); err != nil {
		t.Fatal(err)
	}
	if err := lagging.Cancel(ctx, f.agent, c.AuthReqID); !saysExpired(err) {
		t.Errorf("cancel of a request past its expiry: %v, want expired_token", err)
	}
	r, err := f.store.Request(ctx, c.Request.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != StatePending {
		t.Errorf("request is %s, want pending until the sweeper expires it", r.State)
	}
}

// saysExpired reports whether err tells that the request has expired.
func saysExpired(err error) bool {
	var ref *Refusal
	return errors.Is(err, ErrExpired) || (errors.As(err, &ref) && ref.Code == CodeExpiredToken)
}

// nextErr is what the pure state machine says to event ev on a pending
// request, expired or live.
func nextErr(ev Action, expired bool) error {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	exp := now.Add(time.Hour)
	if expired {
		exp = now.Add(-time.Second)
	}
	_, err := Next(StatePending, ev, exp, now)
	return err
}

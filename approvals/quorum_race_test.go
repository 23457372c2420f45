package approvals

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// quorumMerge is a merge into main with passing checks: under the demo
// policy it needs two maintainers, the requester not counting.
const quorumMerge = `[{"type":"code_merge","repository":"acme/app","base_branch":"main","pull_request":7,"checks":"passed"}]`

// quorumPolicy is published when the demo policy no longer asks quorumMerge
// for two maintainers, so the race below keeps its subject.
const quorumPolicy = "types:\n  code_merge: [{id: two, when: \"true\", outcome: {quorum: {n: 2, group: maintainers, requester_counts: false}}, reason: two maintainers}]\n"

// TestQuorumReviewsRace: maintainers approving a quorum request at the same
// instant decide it once. Every review reads the request and its reviews,
// applies ApplyReview and writes with compare-and-swap on version; a review
// that loses the swap retries on what the winner wrote. So the request is
// approved exactly once (one request.approved event, one ping, one token),
// never left pending with its quorum met, and a review that comes too late
// is told ErrAlreadyDecided.
func TestQuorumReviewsRace(t *testing.T) {
	const trials = 20
	f := newRaceFixture(t)
	ctx := context.Background()
	agent, _, err := f.store.CreateAgent(ctx, NewAgent{Name: "Merge bot", Domain: "agent.example.com", Types: []string{"code_merge"},
		DeliveryMode: DeliveryPing, NotifyURL: "https://agent.example.com/cb"})
	if err != nil {
		t.Fatal(err)
	}
	var maintainers []Reviewer
	for i := range 3 {
		u, err := f.store.CreateUser(ctx, NewUser{Email: fmt.Sprintf("maintainer%d@example.com", i), Groups: []string{"maintainers"}})
		if err != nil {
			t.Fatal(err)
		}
		maintainers = append(maintainers, Reviewer{UserID: u.ID, AMR: []string{"hwk", "user"}})
	}
	trial := 0
	ask := func(t *testing.T) Created {
		t.Helper()
		trial++
		c, err := f.svc.Authorize(ctx, agent, AuthRequest{Scope: "openid", LoginHint: f.user.Email,
			AuthorizationDetails: []byte(quorumMerge), ClientNotificationToken: fmt.Sprintf("cnt-%d", trial)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	twoMaintainers := func(r Request) bool {
		return r.State == StatePending && slices.Equal(r.Quorum, QuorumJSON{{Group: "maintainers", N: 2, RequesterCounts: false}}) &&
			!r.StepUp && !r.UserRequired
	}
	f.applyDemoPolicy(t)
	if c := ask(t); !twoMaintainers(c.Request) {
		t.Logf("the demo policy gives the merge %s %+v; publishing a quorum policy of its own", c.Request.Outcome, c.Request.Quorum)
		if _, err := f.svc.Policies().Apply(ctx, "quorum.yaml", []byte(quorumPolicy)); err != nil {
			t.Fatal(err)
		}
		if c := ask(t); !twoMaintainers(c.Request) {
			t.Fatalf("the merge needs %s %+v, want a quorum of two maintainers", c.Request.Outcome, c.Request.Quorum)
		}
	}

	for _, tc := range []struct {
		name   string
		before int // maintainers who approve first, one after another
		racing int // maintainers who then approve at once
		// What the racing reviews get: accepted with the request still
		// pending, accepted and approving, refused as already decided.
		pending, approved, late int
	}{
		{"the third maintainer races the second", 1, 2, 0, 1, 1},
		{"two maintainers at once", 0, 2, 1, 1, 0},
		{"three maintainers at once", 0, 3, 1, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for n := range trials {
				c := ask(t)
				id := c.Request.ID
				for _, m := range maintainers[:tc.before] {
					if _, err := f.svc.Review(ctx, id, m, ReviewInput{Verdict: VerdictApprove}); err != nil {
						t.Fatal(err)
					}
				}
				racing := maintainers[tc.before : tc.before+tc.racing]
				got := make([]struct {
					r   Request
					err error
				}, len(racing))
				start := make(chan struct{})
				var wg sync.WaitGroup
				for i, m := range racing {
					wg.Go(func() {
						<-start
						got[i].r, got[i].err = f.svc.Review(ctx, id, m, ReviewInput{Verdict: VerdictApprove})
					})
				}
				close(start)
				wg.Wait()

				var pending, approved, late int
				var winner string
				for i, g := range got {
					switch {
					case g.err == nil && g.r.State == StatePending:
						pending++
					case g.err == nil && g.r.State == StateApproved:
						approved++
						winner = racing[i].UserID
					case errors.Is(g.err, ErrAlreadyDecided):
						late++
					default:
						t.Errorf("trial %d: %s got %s, %v", n, racing[i].UserID, g.r.State, g.err)
					}
				}
				if pending != tc.pending || approved != tc.approved || late != tc.late {
					t.Fatalf("trial %d: %d pending, %d approving, %d too late; want %d, %d, %d",
						n, pending, approved, late, tc.pending, tc.approved, tc.late)
				}
				checkDecidedOnce(t, f, agent, c, winner, n)
			}
		})
	}
}

// checkDecidedOnce checks that request c, approved by winner in a quorum
// of two, was decided exactly once and gives exactly one token.
func checkDecidedOnce(t *testing.T, f raceFixture, agent Agent, c Created, winner string, trial int) {
	t.Helper()
	ctx := context.Background()
	id := c.Request.ID
	r, err := f.store.Request(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// Two accepted reviews, two changes of the decision: version 2.
	if r.State != StateApproved || r.Version != 2 || r.DecidedBy == nil || *r.DecidedBy != winner || r.ACR != ACRApproval ||
		r.ClientNotificationToken != nil {
		t.Fatalf("trial %d: request %s version %d decided by %s acr %q token kept %v; want approved, version 2, by %s, acr %s, no token kept",
			trial, r.State, r.Version, deref(r.DecidedBy), r.ACR, r.ClientNotificationToken != nil, winner, ACRApproval)
	}
	var reviews int
	if err := f.db.Get(&reviews, `SELECT count(*) FROM reviews WHERE request_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	events := countEvents(t, f.db, id)
	if reviews != 2 || events[KindReviewRecorded] != 2 || events[KindRequestApproved] != 1 || events[KindRequestDenied] != 0 {
		t.Fatalf("trial %d: %d reviews stored, events %v; want 2 reviews, 2 review.recorded and 1 request.approved", trial, reviews, events)
	}
	var pings int
	if err := f.db.Get(&pings, `SELECT count(*) FROM outbox WHERE request_id = $1 AND kind = 'ping'`, id); err != nil {
		t.Fatal(err)
	}
	if pings != 1 {
		t.Fatalf("trial %d: %d pings enqueued, want 1", trial, pings)
	}
	if _, err := f.svc.Token(ctx, agent, c.AuthReqID); err != nil {
		t.Fatalf("trial %d: token: %v", trial, err)
	}
	var ref *Refusal
	if _, err := f.svc.Token(ctx, agent, c.AuthReqID); !errors.As(err, &ref) || ref.Code != CodeInvalidGrant {
		t.Fatalf("trial %d: second token call: %v, want invalid_grant", trial, err)
	}
	if n := countEvents(t, f.db, id)[KindTokenIssued]; n != 1 {
		t.Fatalf("trial %d: %d token.issued events, want 1", trial, n)
	}
}

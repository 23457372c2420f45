package approvals

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/internal/pgtest"
	"github.com/countersign/countersign/internal/softauthn"
	"github.com/countersign/countersign/rar"
)

// countEvents counts the audit_events rows by kind, of request requestID
// only when it is not "".
func countEvents(t *testing.T, db *sqlx.DB, requestID string) map[string]int {
	t.Helper()
	var rows []struct {
		Kind string `db:"kind"`
		N    int    `db:"n"`
	}
	if err := db.Select(&rows, `SELECT kind, count(*) AS n FROM audit_events
		WHERE $1 = '' OR request_id = NULLIF($1, '')::uuid GROUP BY kind`, requestID); err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range rows {
		out[r.Kind] = r.N
	}
	return out
}

// eventDelta is after minus before, without the kinds that did not change.
func eventDelta(before, after map[string]int) map[string]int {
	out := map[string]int{}
	for k, n := range after {
		if d := n - before[k]; d != 0 {
			out[k] = d
		}
	}
	for k, n := range before {
		if _, ok := after[k]; !ok {
			out[k] = -n
		}
	}
	return out
}

func lastEventID(t *testing.T, db *sqlx.DB) int64 {
	t.Helper()
	var id int64
	if err := db.Get(&id, `SELECT coalesce(max(id), 0) FROM audit_events`); err != nil {
		t.Fatal(err)
	}
	return id
}

func countOutbox(t *testing.T, db *sqlx.DB) int {
	t.Helper()
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM outbox`); err != nil {
		t.Fatal(err)
	}
	return n
}

// eventChange is one change of state to run and what to check of the events
// it wrote, in the order they were written.
type eventChange struct {
	do    func() error
	check func(t *testing.T, events []Event)
}

// isErr matches a refusal by errors.Is.
func isErr(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

// isRefusal matches an OAuth refusal by its code.
func isRefusal(code string) func(error) bool {
	return func(err error) bool {
		var ref *Refusal
		return errors.As(err, &ref) && ref.Code == code
	}
}

// errInactive is a redemption that spent nothing, as an error.
type errInactive string

func (e errInactive) Error() string { return "token not active: " + string(e) }

// eventsFixture is a race fixture under the demo policy with the principals
// the event cases need.
type eventsFixture struct {
	raceFixture
	policyVersion int
	pinger        Agent // ping delivery
	merger        Agent // code_merge: quorum of two maintainers
	dba           Agent // database_operation
	maintainers   []User
	stranger      User
	rs            ResourceServer // audience https://api.example.com
}

const eventsCNT = "cnt-5ecret-Notification-T0ken"

func newEventsFixture(t *testing.T) eventsFixture {
	t.Helper()
	ctx := context.Background()
	f := eventsFixture{raceFixture: newRaceFixture(t)}
	f.policyVersion = f.applyDemoPolicy(t)
	var err error
	if f.pinger, _, err = f.store.CreateAgent(ctx, NewAgent{Name: "Pinger", Domain: "ping.example.com", Types: []string{"payment_initiation"},
		DeliveryMode: DeliveryPing, NotifyURL: "https://ping.example.com/cb"}); err != nil {
		t.Fatal(err)
	}
	if f.merger, _, err = f.store.CreateAgent(ctx, NewAgent{Name: "Merger", Domain: "merge.example.com", Types: []string{"code_merge"}}); err != nil {
		t.Fatal(err)
	}
	if f.dba, _, err = f.store.CreateAgent(ctx, NewAgent{Name: "DBA", Domain: "db.example.com", Types: []string{"database_operation"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		u, err := f.store.CreateUser(ctx, NewUser{Email: fmt.Sprintf("maintainer%d@example.com", i), Groups: []string{"maintainers"}})
		if err != nil {
			t.Fatal(err)
		}
		f.maintainers = append(f.maintainers, u)
	}
	if f.stranger, err = f.store.CreateUser(ctx, NewUser{Email: "stranger@example.com", Groups: []string{"finance"}}); err != nil {
		t.Fatal(err)
	}
	servers, err := f.store.ResourceServers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(servers, func(rs ResourceServer) bool { return rs.Audience == "https://api.example.com" })
	if i < 0 {
		t.Fatal("the fixture has no resource server for https://api.example.com")
	}
	f.rs = servers[i]
	return f
}

// newAgent registers a poll agent for payments: one per case that counts on
// the demo policy allowing small payments, so no case runs into another's
// velocity limit.
func (f eventsFixture) newAgent(t *testing.T, name string) Agent {
	t.Helper()
	a, _, err := f.store.CreateAgent(context.Background(), NewAgent{Name: name, Domain: "agent.example.com", Types: []string{"payment_initiation"}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// pendingFor makes a request of agent for user hint that waits for its user.
func (f eventsFixture) pendingFor(t *testing.T, agent Agent, hint string) Created {
	t.Helper()
	c, err := f.svc.Authorize(context.Background(), agent, AuthRequest{Scope: "openid", LoginHint: hint, AuthorizationDetails: payment("500.00", "EUR")})
	if err != nil || c.Request.State != StatePending {
		t.Fatalf("pending request: %v %v", c.Request.State, err)
	}
	return c
}

// merge makes a code_merge request of Alice's that needs two maintainers.
func (f eventsFixture) merge(t *testing.T) Created {
	t.Helper()
	c, err := f.ask(t, f.merger, []byte(`[{"type":"code_merge","repository":"acme/app","base_branch":"main","pull_request":42,"checks":"passed"}]`))
	if err != nil || c.Request.State != StatePending || len(c.Request.Quorum) == 0 {
		t.Fatalf("quorum request: %+v %v", c.Request.Quorum, err)
	}
	return c
}

// token makes a request of agent for user hint that the demo policy allows
// at once (20 EUR) and collects its token.
func (f eventsFixture) token(t *testing.T, agent Agent, hint string) (Created, TokenResponse) {
	t.Helper()
	ctx := context.Background()
	c, err := f.svc.Authorize(ctx, agent, AuthRequest{Scope: "openid", LoginHint: hint, AuthorizationDetails: payment("20.00", "EUR")})
	if err != nil || c.Request.State != StateApproved {
		t.Fatalf("allowed request: %v %v", c.Request.State, err)
	}
	tr, err := f.svc.Token(ctx, agent, c.AuthReqID)
	if err != nil {
		t.Fatal(err)
	}
	return c, tr
}

func (f eventsFixture) redeem(rs ResourceServer, tr TokenResponse, details []byte) error {
	red, err := f.svc.Redeem(context.Background(), rs, tr.AccessToken, details, "")
	if err != nil {
		return err
	}
	if !red.Active {
		return errInactive(red.Reason)
	}
	return nil
}

// body decodes an event's body.
func body(t *testing.T, e Event) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(e.Body, &m); err != nil {
		t.Fatalf("%s body %s: %v", e.Kind, e.Body, err)
	}
	return m
}

// wantEvent checks an event's kind, actor and request.
func wantEvent(t *testing.T, e Event, kind, actor, requestID string) {
	t.Helper()
	if e.Kind != kind || e.Actor != actor || (requestID != "" && (e.RequestID == nil || *e.RequestID != requestID)) {
		t.Errorf("event %s by %s for request %v, want %s by %s for %s", e.Kind, e.Actor, deref(e.RequestID), kind, actor, requestID)
	}
}

// wantQueued checks that e is the notification.queued event of the outbox
// row of request requestID on channel, naming that row.
func wantQueued(t *testing.T, db *sqlx.DB, e Event, requestID, channel string) {
	t.Helper()
	wantEvent(t, e, KindNotificationQueued, ActorNotify, requestID)
	var ids []int64
	if err := db.Select(&ids, `SELECT id FROM outbox WHERE request_id = $1 AND kind = $2`, requestID, channel); err != nil {
		t.Fatal(err)
	}
	b := body(t, e)
	if len(ids) != 1 || b["channel"] != channel || b["outbox_id"] != float64(ids[0]) {
		t.Errorf("notification.queued body %s, want channel %s and outbox row %v", e.Body, channel, ids)
	}
	for _, k := range []string{"target", "bearer", "payload"} {
		if _, ok := b[k]; ok {
			t.Errorf("notification.queued body has %s: %s", k, e.Body)
		}
	}
}

// addDevice subscribes a push device for user userID.
func (f eventsFixture) addDevice(t *testing.T, userID string) {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.AddPushSubscription(context.Background(), PushSubscription{UserID: userID, Name: "Phone",
		Endpoint: "https://push.example.com/send/Pu5h-Capability-" + newID(""), P256dh: rawURL64(k.PublicKey().Bytes()),
		Auth: rawURL64([]byte("sixteen bytes!!!"))}); err != nil {
		t.Fatal(err)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// noSecret checks that no event body holds secret.
func noSecret(t *testing.T, events []Event, what, secret string) {
	t.Helper()
	if secret == "" {
		t.Fatalf("no %s to look for", what)
	}
	for _, e := range events {
		if strings.Contains(string(e.Body), secret) {
			t.Errorf("%s body holds the %s: %s", e.Kind, what, e.Body)
		}
	}
}

// TestEventsOfChanges: every change of state writes exactly its events
// (and ping outbox rows) in its own transaction, and a change that fails or
// is refused writes none.
func TestEventsOfChanges(t *testing.T) {
	f := newEventsFixture(t)
	ctx := context.Background()
	alice := f.user
	// Spelt out, not ActorRule: the actor format is what is under test.
	rule := func(name string) string { return fmt.Sprintf("rule:%d/%s", f.policyVersion, name) }

	tests := []struct {
		name    string
		prepare func(t *testing.T) eventChange
		refused func(error) bool // nil: the change must succeed
		want    map[string]int   // kinds of the events the change writes
		pings   int              // outbox rows it writes
	}{
		{"authorize: pending", func(t *testing.T) eventChange {
			var c Created
			return eventChange{
				do: func() (err error) {
					c, err = f.svc.Authorize(ctx, f.pinger, AuthRequest{Scope: "openid", LoginHint: alice.Email,
						AuthorizationDetails: payment("500.00", "EUR"), ClientNotificationToken: eventsCNT})
					return err
				},
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindRequestCreated, ActorAgent(f.pinger.ID), c.Request.ID)
					b := body(t, ev[0])
					if b["policy_version"] != float64(f.policyVersion) || b["rule"] != "payment" || b["outcome"] != "approve" ||
						b["details_hash"] != c.Request.DetailsHash {
						t.Errorf("request.created body %s: want policy_version %d, rule payment, outcome approve and the details hash", ev[0].Body, f.policyVersion)
					}
					for _, k := range []string{"authorization_details", "details", "details_canonical", "client_notification_token"} {
						if _, ok := b[k]; ok {
							t.Errorf("request.created body has %s: %s", k, ev[0].Body)
						}
					}
					noSecret(t, ev, "client_notification_token", eventsCNT)
					noSecret(t, ev, "creditor account", "DE89370400440532013000")
					noSecret(t, ev, "authorization_details", c.Request.DetailsCanonical)
				},
			}
		}, nil, map[string]int{KindRequestCreated: 1}, 0},

		{"authorize: allowed by a rule", func(t *testing.T) eventChange {
			var c Created
			return eventChange{
				do: func() (err error) {
					c, err = f.svc.Authorize(ctx, f.pinger, AuthRequest{Scope: "openid", LoginHint: alice.Email,
						AuthorizationDetails: payment("20.00", "EUR"), ClientNotificationToken: eventsCNT})
					return err
				},
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindRequestCreated, ActorAgent(f.pinger.ID), c.Request.ID)
					wantEvent(t, ev[1], KindRequestApproved, rule("small_eur_payment"), c.Request.ID)
					wantQueued(t, f.db, ev[2], c.Request.ID, "ping")
					noSecret(t, ev, "client_notification_token", eventsCNT)
					noSecret(t, ev, "notification endpoint", "ping.example.com")
				},
			}
		}, nil, map[string]int{KindRequestCreated: 1, KindRequestApproved: 1, KindNotificationQueued: 1}, 1},

		{"authorize: denied by a rule", func(t *testing.T) eventChange {
			// Refused to the agent, and recorded.
			return eventChange{
				do: func() error {
					_, err := f.ask(t, f.dba, []byte(`[{"type":"database_operation","operation":"DROP","database":"prod_main","table":"users","estimated_rows":10,"statement_sha256":"`+strings.Repeat("ab", 32)+`"}]`))
					return err
				},
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindRequestCreated, ActorAgent(f.dba.ID), "")
					wantEvent(t, ev[1], KindRequestDenied, rule("destructive_on_production"), deref(ev[0].RequestID))
				},
			}
		}, isRefusal(CodeAccessDenied), map[string]int{KindRequestCreated: 1, KindRequestDenied: 1}, 0},

		{"authorize: refused before admission", func(t *testing.T) eventChange {
			return eventChange{do: func() error {
				_, err := f.ask(t, f.agent, []byte(`[{"type":"payment_initiation"}]`))
				return err
			}}
		}, isRefusal(CodeInvalidAuthorizationDetails), nil, 0},

		{"review: approved by the user", func(t *testing.T) eventChange {
			c, err := f.svc.Authorize(ctx, f.pinger, AuthRequest{Scope: "openid", LoginHint: alice.Email,
				AuthorizationDetails: payment("500.00", "EUR"), ClientNotificationToken: eventsCNT})
			if err != nil {
				t.Fatal(err)
			}
			return eventChange{
				do: func() error { _, err := f.decide(ctx, c.Request.ID, true); return err },
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindReviewRecorded, ActorUser(alice.ID), c.Request.ID)
					wantEvent(t, ev[1], KindRequestApproved, ActorUser(alice.ID), c.Request.ID)
					if b := body(t, ev[0]); b["verdict"] != string(VerdictApprove) {
						t.Errorf("review.recorded body %s", ev[0].Body)
					}
					wantQueued(t, f.db, ev[2], c.Request.ID, "ping")
					noSecret(t, ev, "client_notification_token", eventsCNT)
					noSecret(t, ev, "notification endpoint", "ping.example.com")
				},
			}
		}, nil, map[string]int{KindReviewRecorded: 1, KindRequestApproved: 1, KindNotificationQueued: 1}, 1},

		{"review: denied by the user", func(t *testing.T) eventChange {
			c := f.pendingFor(t, f.agent, alice.Email)
			return eventChange{
				do: func() error { _, err := f.decide(ctx, c.Request.ID, false); return err },
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[1], KindRequestDenied, ActorUser(alice.ID), c.Request.ID)
				},
			}
		}, nil, map[string]int{KindReviewRecorded: 1, KindRequestDenied: 1}, 0},

		{"review: one of a quorum", func(t *testing.T) eventChange {
			c := f.merge(t)
			m := f.maintainers[0]
			return eventChange{
				do: func() error {
					_, err := f.svc.Review(ctx, c.Request.ID, Reviewer{UserID: m.ID, AMR: []string{"hwk", "user"}}, ReviewInput{Verdict: VerdictApprove})
					return err
				},
				check: func(t *testing.T, ev []Event) { wantEvent(t, ev[0], KindReviewRecorded, ActorUser(m.ID), c.Request.ID) },
			}
		}, nil, map[string]int{KindReviewRecorded: 1}, 0},

		{"review refused: second review by the same reviewer", func(t *testing.T) eventChange {
			c := f.merge(t)
			m := Reviewer{UserID: f.maintainers[0].ID, AMR: []string{"hwk", "user"}}
			if _, err := f.svc.Review(ctx, c.Request.ID, m, ReviewInput{Verdict: VerdictApprove}); err != nil {
				t.Fatal(err)
			}
			return eventChange{do: func() error {
				_, err := f.svc.Review(ctx, c.Request.ID, m, ReviewInput{Verdict: VerdictApprove})
				return err
			}}
		}, isErr(ErrAlreadyReviewed), nil, 0},

		{"review refused: a stranger", func(t *testing.T) eventChange {
			c := f.pendingFor(t, f.agent, alice.Email)
			return eventChange{do: func() error {
				_, err := f.svc.Review(ctx, c.Request.ID, Reviewer{UserID: f.stranger.ID}, ReviewInput{Verdict: VerdictDeny})
				return err
			}}
		}, isErr(ErrNotFound), nil, 0},

		{"review refused: already decided", func(t *testing.T) eventChange {
			c := f.pendingFor(t, f.agent, alice.Email)
			if _, err := f.decide(ctx, c.Request.ID, true); err != nil {
				t.Fatal(err)
			}
			return eventChange{do: func() error { _, err := f.decide(ctx, c.Request.ID, false); return err }}
		}, isErr(ErrAlreadyDecided), nil, 0},

		{"review refused: step-up without evidence", func(t *testing.T) eventChange {
			c, err := f.ask(t, f.agent, payment("50000.00", "EUR"))
			if err != nil {
				t.Fatal(err)
			}
			return eventChange{do: func() error { _, err := f.decide(ctx, c.Request.ID, true); return err }}
		}, isErr(ErrStepUpRequired), nil, 0},

		{"cancel", func(t *testing.T) eventChange {
			c := f.pendingFor(t, f.agent, alice.Email)
			return eventChange{
				do: func() error { return f.svc.Cancel(ctx, f.agent, c.AuthReqID) },
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindRequestCancelled, ActorAgent(f.agent.ID), c.Request.ID)
				},
			}
		}, nil, map[string]int{KindRequestCancelled: 1}, 0},

		{"cancel refused: already decided", func(t *testing.T) eventChange {
			c := f.pendingFor(t, f.agent, alice.Email)
			if _, err := f.decide(ctx, c.Request.ID, false); err != nil {
				t.Fatal(err)
			}
			return eventChange{do: func() error { return f.svc.Cancel(ctx, f.agent, c.AuthReqID) }}
		}, isRefusal(CodeInvalidGrant), nil, 0},

		{"expire", func(t *testing.T) eventChange {
			c := f.pendingFor(t, f.agent, alice.Email)
			if _, err := f.db.Exec(`UPDATE requests SET created_at = now() - interval '10 minutes', expires_at = now() - interval '1 second' WHERE id = $1`, c.Request.ID); err != nil {
				t.Fatal(err)
			}
			return eventChange{
				do: func() error {
					ids, err := f.store.ExpireDue(ctx, 10)
					if err == nil && !slices.Equal(ids, []string{c.Request.ID}) {
						return fmt.Errorf("expired %v, want [%s]", ids, c.Request.ID)
					}
					return err
				},
				check: func(t *testing.T, ev []Event) { wantEvent(t, ev[0], KindRequestExpired, ActorSweeper, c.Request.ID) },
			}
		}, nil, map[string]int{KindRequestExpired: 1}, 0},

		{"expire: nothing due", func(t *testing.T) eventChange {
			return eventChange{do: func() error {
				ids, err := f.store.ExpireDue(ctx, 10)
				if err == nil && len(ids) > 0 {
					return fmt.Errorf("expired %v, want none", ids)
				}
				return err
			}}
		}, nil, nil, 0},

		{"token issued", func(t *testing.T) eventChange {
			a := f.newAgent(t, "Collector")
			c, err := f.svc.Authorize(ctx, a, AuthRequest{Scope: "openid", LoginHint: alice.Email, AuthorizationDetails: payment("20.00", "EUR")})
			if err != nil {
				t.Fatal(err)
			}
			var tr TokenResponse
			return eventChange{
				do: func() (err error) { tr, err = f.svc.Token(ctx, a, c.AuthReqID); return err },
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindTokenIssued, ActorAgent(a.ID), c.Request.ID)
					noSecret(t, ev, "access token", tr.AccessToken)
					noSecret(t, ev, "id token", tr.IDToken)
				},
			}
		}, nil, map[string]int{KindTokenIssued: 1}, 0},

		{"token refused: already collected", func(t *testing.T) eventChange {
			a := f.newAgent(t, "Twice")
			c, _ := f.token(t, a, alice.Email)
			return eventChange{do: func() error { _, err := f.svc.Token(ctx, a, c.AuthReqID); return err }}
		}, isRefusal(CodeInvalidGrant), nil, 0},

		{"redeem", func(t *testing.T) eventChange {
			c, tr := f.token(t, f.newAgent(t, "Spender"), alice.Email)
			return eventChange{
				do: func() error { return f.redeem(f.rs, tr, payment("20.00", "EUR")) },
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindTokenRedeemed, ActorResourceServer(f.rs.ID), c.Request.ID)
				},
			}
		}, nil, map[string]int{KindTokenRedeemed: 1}, 0},

		{"redeem refused: other details", func(t *testing.T) eventChange {
			_, tr := f.token(t, f.newAgent(t, "Mismatch"), alice.Email)
			return eventChange{do: func() error { return f.redeem(f.rs, tr, payment("21.00", "EUR")) }}
		}, isErr(errInactive(ReasonTransactionMismatch)), nil, 0},

		{"redeem refused: already redeemed", func(t *testing.T) eventChange {
			_, tr := f.token(t, f.newAgent(t, "Double spender"), alice.Email)
			if err := f.redeem(f.rs, tr, payment("20.00", "EUR")); err != nil {
				t.Fatal(err)
			}
			return eventChange{do: func() error { return f.redeem(f.rs, tr, payment("20.00", "EUR")) }}
		}, isErr(errInactive(ReasonAlreadyRedeemed)), nil, 0},

		{"revoke", func(t *testing.T) eventChange {
			a := f.newAgent(t, "Revoker")
			c, tr := f.token(t, a, alice.Email)
			return eventChange{
				do:    func() error { return f.svc.Revoke(ctx, &a, nil, tr.AccessToken) },
				check: func(t *testing.T, ev []Event) { wantEvent(t, ev[0], KindTokenRevoked, ActorAgent(a.ID), c.Request.ID) },
			}
		}, nil, map[string]int{KindTokenRevoked: 1}, 0},

		{"revoke of a spent token changes nothing", func(t *testing.T) eventChange {
			a := f.newAgent(t, "Late revoker")
			_, tr := f.token(t, a, alice.Email)
			if err := f.redeem(f.rs, tr, payment("20.00", "EUR")); err != nil {
				t.Fatal(err)
			}
			return eventChange{do: func() error { return f.svc.Revoke(ctx, &a, nil, tr.AccessToken) }}
		}, nil, nil, 0},

		{"agent suspended: its unspent tokens revoked", func(t *testing.T) eventChange {
			a := f.newAgent(t, "Suspended")
			c1, _ := f.token(t, a, alice.Email)
			c2, _ := f.token(t, a, alice.Email)
			_, spent := f.token(t, a, alice.Email)
			if err := f.redeem(f.rs, spent, payment("20.00", "EUR")); err != nil {
				t.Fatal(err)
			}
			f.pendingFor(t, a, alice.Email) // no token: nothing to revoke
			return eventChange{
				do: func() error { return f.store.SetAgentStatus(ctx, a.ID, "suspended") },
				check: func(t *testing.T, ev []Event) {
					var revoked []string
					for _, e := range ev {
						switch e.Kind {
						case KindTokenRevoked:
							wantEvent(t, e, KindTokenRevoked, ActorCLI, "")
							revoked = append(revoked, deref(e.RequestID))
						case KindAgentSuspended:
							wantEvent(t, e, KindAgentSuspended, ActorCLI, "")
							if b := body(t, e); deref(e.AgentID) != a.ID || fmt.Sprint(b["before"], b["after"]) != "map[status:active] map[status:suspended]" {
								t.Errorf("agent.suspended: agent %s body %s", deref(e.AgentID), e.Body)
							}
						}
					}
					slices.Sort(revoked)
					want := []string{c1.Request.ID, c2.Request.ID}
					slices.Sort(want)
					if !slices.Equal(revoked, want) {
						t.Errorf("revoked the tokens of %v, want %v", revoked, want)
					}
				},
			}
		}, nil, map[string]int{KindAgentSuspended: 1, KindTokenRevoked: 2}, 0},

		{"agent resumed", func(t *testing.T) eventChange {
			a := f.newAgent(t, "Resumed")
			if err := f.store.SetAgentStatus(ctx, a.ID, "suspended"); err != nil {
				t.Fatal(err)
			}
			return eventChange{do: func() error { return f.store.SetAgentStatus(ctx, a.ID, "active") }}
		}, nil, map[string]int{KindAgentResumed: 1}, 0},

		{"agent status refused: unknown agent", func(t *testing.T) eventChange {
			return eventChange{do: func() error { return f.store.SetAgentStatus(ctx, "agt_nobody", "suspended") }}
		}, isErr(ErrNotFound), nil, 0},

		{"user suspended: their unspent tokens revoked", func(t *testing.T) eventChange {
			u, err := f.store.CreateUser(ctx, NewUser{Email: "carol@example.com"})
			if err != nil {
				t.Fatal(err)
			}
			a := f.newAgent(t, "Carol's agent")
			f.token(t, a, u.Email)
			f.token(t, a, u.Email)
			f.token(t, f.newAgent(t, "Alice's agent"), alice.Email) // another user's: kept
			return eventChange{
				do: func() error { return f.store.SetUserStatus(ctx, u.Email, "suspended") },
				check: func(t *testing.T, ev []Event) {
					for _, e := range ev {
						if deref(e.UserID) != u.ID || e.Actor != ActorCLI {
							t.Errorf("%s by %s of user %s, want by %s of %s", e.Kind, e.Actor, deref(e.UserID), ActorCLI, u.ID)
						}
					}
				},
			}
		}, nil, map[string]int{KindUserSuspended: 1, KindTokenRevoked: 2}, 0},

		{"user resumed", func(t *testing.T) eventChange {
			u, err := f.store.CreateUser(ctx, NewUser{Email: "dave@example.com"})
			if err != nil {
				t.Fatal(err)
			}
			if err := f.store.SetUserStatus(ctx, u.ID, "suspended"); err != nil {
				t.Fatal(err)
			}
			return eventChange{do: func() error { return f.store.SetUserStatus(ctx, u.ID, "active") }}
		}, nil, map[string]int{KindUserResumed: 1}, 0},

		{"create agent", func(t *testing.T) eventChange {
			var a Agent
			var secret string
			return eventChange{
				do: func() (err error) {
					a, secret, err = f.store.CreateAgent(ctx, NewAgent{Name: "New", Domain: "new.example.com", Types: []string{"payment_initiation"}})
					return err
				},
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindAgentCreated, ActorCLI, "")
					if deref(ev[0].AgentID) != a.ID {
						t.Errorf("agent.created of %s, want %s", deref(ev[0].AgentID), a.ID)
					}
					noSecret(t, ev, "client secret", secret)
					noSecret(t, ev, "secret hash", "secret_hash")
				},
			}
		}, nil, map[string]int{KindAgentCreated: 1}, 0},

		{"create agent refused: invalid", func(t *testing.T) eventChange {
			return eventChange{do: func() error {
				_, _, err := f.store.CreateAgent(ctx, NewAgent{Name: "No types", Domain: "x.example.com"})
				return err
			}}
		}, isErr(ErrInvalidInput), nil, 0},

		{"rotate agent secret", func(t *testing.T) eventChange {
			a := f.newAgent(t, "Rotated")
			var secret string
			return eventChange{
				do: func() (err error) { secret, err = f.store.RotateAgentSecret(ctx, a.ID); return err },
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindAgentSecretRotated, ActorCLI, "")
					noSecret(t, ev, "client secret", secret)
				},
			}
		}, nil, map[string]int{KindAgentSecretRotated: 1}, 0},

		{"rotate agent secret refused: unknown agent", func(t *testing.T) eventChange {
			return eventChange{do: func() error { _, err := f.store.RotateAgentSecret(ctx, "agt_nobody"); return err }}
		}, isErr(ErrNotFound), nil, 0},

		{"create user", func(t *testing.T) eventChange {
			const code = "135790"
			return eventChange{
				do: func() error {
					_, err := f.store.CreateUser(ctx, NewUser{Email: "erin@example.com", Groups: []string{"maintainers"}, UserCode: code})
					return err
				},
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindUserCreated, ActorCLI, "")
					noSecret(t, ev, "user code", code)
					noSecret(t, ev, "user code hash", HashUserCode(code))
				},
			}
		}, nil, map[string]int{KindUserCreated: 1}, 0},

		{"create user refused: email taken", func(t *testing.T) eventChange {
			return eventChange{do: func() error {
				_, err := f.store.CreateUser(ctx, NewUser{Email: strings.ToUpper(alice.Email)})
				return err
			}}
		}, isErr(ErrConflict), nil, 0},

		{"create resource server", func(t *testing.T) eventChange {
			var rs ResourceServer
			var secret string
			return eventChange{
				do: func() (err error) {
					rs, secret, err = f.store.CreateResourceServer(ctx, NewResourceServer{Name: "Mail", Audience: "https://mail.example.com", Types: []string{"email_send"}})
					return err
				},
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindResourceCreated, ActorCLI, "")
					if deref(ev[0].Subject) != "resource_server:"+rs.ID {
						t.Errorf("resource_server.created subject %s", deref(ev[0].Subject))
					}
					noSecret(t, ev, "secret", secret)
				},
			}
		}, nil, map[string]int{KindResourceCreated: 1}, 0},

		{"rotate resource server secret", func(t *testing.T) eventChange {
			var secret string
			return eventChange{
				do: func() (err error) { secret, err = f.store.RotateResourceServerSecret(ctx, f.rs.ID); return err },
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindResourceSecretRotate, ActorCLI, "")
					noSecret(t, ev, "secret", secret)
				},
			}
		}, nil, map[string]int{KindResourceSecretRotate: 1}, 0},

		{"types: one changed", func(t *testing.T) eventChange {
			defs, err := demo.TypeDefinitions()
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(defs, func(d rar.Type) bool { return d.Name == "email_send" })
			defs[i].Description += " Mind the recipients."
			return eventChange{
				do: func() error { _, err := f.svc.Types().Apply(ctx, defs); return err },
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindTypeUpdated, ActorCLI, "")
					if deref(ev[0].Subject) != "type:email_send" {
						t.Errorf("type.updated subject %s", deref(ev[0].Subject))
					}
				},
			}
		}, nil, map[string]int{KindTypeUpdated: 1}, 0},

		{"types: unchanged", func(t *testing.T) eventChange {
			defs, err := demo.TypeDefinitions()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.Types().Apply(ctx, defs); err != nil { // back to the demo's
				t.Fatal(err)
			}
			return eventChange{do: func() error { _, err := f.svc.Types().Apply(ctx, defs); return err }}
		}, nil, nil, 0},

		{"policy: identical", func(t *testing.T) eventChange {
			return eventChange{do: func() error {
				_, err := f.svc.Policies().Apply(ctx, "policy.yaml", append([]byte("# the same rules\n"), demo.Policy()...))
				return err
			}}
		}, nil, nil, 0},

		{"policy: new version", func(t *testing.T) eventChange {
			reworded := strings.Replace(string(demo.Policy()), "Reading data is allowed", "Reads are fine", 1)
			return eventChange{
				do: func() error { _, err := f.svc.Policies().Apply(ctx, "policy.yaml", []byte(reworded)); return err },
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindPolicyPublished, ActorCLI, "")
					if deref(ev[0].Subject) != fmt.Sprintf("policy:%d", f.policyVersion+1) {
						t.Errorf("policy.published subject %s, want policy:%d", deref(ev[0].Subject), f.policyVersion+1)
					}
				},
			}
		}, nil, map[string]int{KindPolicyPublished: 1}, 0},

		{"consent page viewed", func(t *testing.T) eventChange {
			c := f.pendingFor(t, f.agent, alice.Email)
			return eventChange{
				do: func() error { return f.svc.Viewed(ctx, c.Request.ID, alice, "ses_one") },
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindRequestViewed, ActorUser(alice.ID), c.Request.ID)
					if b := body(t, ev[0]); b["session"] != "ses_one" || b["state"] != string(StatePending) {
						t.Errorf("request.viewed body %s", ev[0].Body)
					}
				},
			}
		}, nil, map[string]int{KindRequestViewed: 1}, 0},

		{"consent page viewed again in the same session", func(t *testing.T) eventChange {
			c := f.pendingFor(t, f.agent, alice.Email)
			if err := f.svc.Viewed(ctx, c.Request.ID, alice, "ses_one"); err != nil {
				t.Fatal(err)
			}
			return eventChange{do: func() error { return f.svc.Viewed(ctx, c.Request.ID, alice, "ses_one") }}
		}, nil, nil, 0},

		{"consent page viewed in another session", func(t *testing.T) eventChange {
			c := f.pendingFor(t, f.agent, alice.Email)
			if err := f.svc.Viewed(ctx, c.Request.ID, alice, "ses_one"); err != nil {
				t.Fatal(err)
			}
			return eventChange{do: func() error { return f.svc.Viewed(ctx, c.Request.ID, alice, "ses_two") }}
		}, nil, map[string]int{KindRequestViewed: 1}, 0},

		{"consent page view refused: not a request id", func(t *testing.T) eventChange {
			return eventChange{do: func() error { return f.svc.Viewed(ctx, "not-a-uuid", alice, "ses_one") }}
		}, isErr(ErrNotFound), nil, 0},

		{"consent page view of no request", func(t *testing.T) eventChange {
			return eventChange{do: func() error { return f.svc.Viewed(ctx, "0b6f3c9e-1f5e-4c8a-9d7b-2a4e6c8f0a1b", alice, "ses_one") }}
		}, nil, nil, 0},

		{"review: step-up approval with evidence", func(t *testing.T) eventChange {
			c, err := f.ask(t, f.agent, payment("50000.00", "EUR"))
			if err != nil || !c.Request.StepUp {
				t.Fatalf("step-up request: %+v %v", c.Request, err)
			}
			a := newAuthn(t, "es256")
			nonce := []byte("a server nonce of 32 bytes......")
			as, err := a.Get(StepUpChallenge(c.Request.ID, c.Request.DetailsHash, nonce), softauthn.Options{RPID: evRPID, Origin: evOrigin})
			if err != nil {
				t.Fatal(err)
			}
			e := &StepUpEvidence{RequestID: c.Request.ID, UserID: alice.ID, DetailsHash: c.Request.DetailsHash, CredentialID: a.CredentialID,
				AuthenticatorData: as.AuthenticatorData, ClientDataJSON: as.ClientDataJSON, Signature: as.Signature, Nonce: nonce}
			return eventChange{
				do: func() error {
					_, err := f.svc.Review(ctx, c.Request.ID, Reviewer{UserID: alice.ID, AMR: []string{"hwk", "user"}},
						ReviewInput{Verdict: VerdictApprove, Evidence: e})
					return err
				},
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindReviewRecorded, ActorUser(alice.ID), c.Request.ID)
					wantEvent(t, ev[1], KindEvidenceRecorded, ActorUser(alice.ID), c.Request.ID)
					wantEvent(t, ev[2], KindRequestApproved, ActorUser(alice.ID), c.Request.ID)
					var id int64
					if err := f.db.Get(&id, `SELECT id FROM step_up_evidence WHERE request_id = $1`, c.Request.ID); err != nil {
						t.Fatal(err)
					}
					rb, eb := body(t, ev[0]), body(t, ev[1])
					if rb["evidence_id"] != float64(id) || eb["evidence_id"] != float64(id) || eb["details_hash"] != c.Request.DetailsHash ||
						eb["credential_id"] != base64.RawURLEncoding.EncodeToString(a.CredentialID) || eb["assertion_sha256"] == nil {
						t.Errorf("review.recorded %s, evidence.recorded %s: want evidence %d", ev[0].Body, ev[1].Body, id)
					}
					noSecret(t, ev, "signature", base64.StdEncoding.EncodeToString(as.Signature))
					noSecret(t, ev, "client data", base64.StdEncoding.EncodeToString(as.ClientDataJSON))
				},
			}
		}, nil, map[string]int{KindReviewRecorded: 1, KindEvidenceRecorded: 1, KindRequestApproved: 1}, 0},

		// Last: from here on Alice has a device, and her pending requests push.
		{"push: queued with the pending request", func(t *testing.T) eventChange {
			f.addDevice(t, alice.ID)
			var c Created
			return eventChange{
				do: func() (err error) {
					c, err = f.svc.Authorize(ctx, f.agent, AuthRequest{Scope: "openid", LoginHint: alice.Email, AuthorizationDetails: payment("510.00", "EUR")})
					return err
				},
				check: func(t *testing.T, ev []Event) {
					wantEvent(t, ev[0], KindRequestCreated, ActorAgent(f.agent.ID), c.Request.ID)
					wantQueued(t, f.db, ev[1], c.Request.ID, "push")
					if b := body(t, ev[1]); b["message"] != "new" || !strings.HasPrefix(fmt.Sprint(b["device"]), "dev_") {
						t.Errorf("notification.queued body %s", ev[1].Body)
					}
					noSecret(t, ev, "push endpoint", "Pu5h-Capability")
				},
			}
		}, nil, map[string]int{KindRequestCreated: 1, KindNotificationQueued: 1}, 1},

		{"push: decided, the unsent new push superseded", func(t *testing.T) eventChange {
			c := f.pendingFor(t, f.agent, alice.Email)
			return eventChange{
				do: func() error { _, err := f.decide(ctx, c.Request.ID, false); return err },
				check: func(t *testing.T, ev []Event) {
					var queued, dropped map[string]any
					for _, e := range ev {
						switch e.Kind {
						case KindNotificationQueued:
							wantEvent(t, e, KindNotificationQueued, ActorNotify, c.Request.ID)
							queued = body(t, e)
						case KindNotificationDropped:
							wantEvent(t, e, KindNotificationDropped, ActorNotify, c.Request.ID)
							dropped = body(t, e)
						}
					}
					if queued["message"] != "decided" || dropped["reason"] != "superseded" || dropped["channel"] != "push" {
						t.Errorf("queued %v, dropped %v", queued, dropped)
					}
					noSecret(t, ev, "push endpoint", "Pu5h-Capability")
				},
			}
		}, nil, map[string]int{KindReviewRecorded: 1, KindRequestDenied: 1, KindNotificationQueued: 1, KindNotificationDropped: 1}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			change := tc.prepare(t)
			before, mark, outbox := countEvents(t, f.db, ""), lastEventID(t, f.db), countOutbox(t, f.db)
			err := change.do()
			switch {
			case tc.refused == nil && err != nil:
				t.Fatalf("change failed: %v", err)
			case tc.refused != nil && !tc.refused(err):
				t.Fatalf("change: err = %v, want the refusal", err)
			}
			want := tc.want
			if want == nil {
				want = map[string]int{}
			}
			if got := eventDelta(before, countEvents(t, f.db, "")); !maps.Equal(got, want) {
				t.Fatalf("the change wrote events %v, want %v", got, want)
			}
			if got := countOutbox(t, f.db) - outbox; got != tc.pings {
				t.Errorf("the change wrote %d outbox rows, want %d", got, tc.pings)
			}
			ev, err := readEvents(ctx, f.db, `WHERE id > $1 ORDER BY id`, mark)
			if err != nil {
				t.Fatal(err)
			}
			if change.check != nil {
				change.check(t, ev)
			}
		})
	}
}

// TestEventsOfOneRequest: a request's events, read back by request, are the
// story of its life in order, each transition once.
func TestEventsOfOneRequest(t *testing.T) {
	f := newEventsFixture(t)
	ctx := context.Background()
	c := f.pendingFor(t, f.agent, f.user.Email)
	if _, err := f.decide(ctx, c.Request.ID, true); err != nil {
		t.Fatal(err)
	}
	tr, err := f.svc.Token(ctx, f.agent, c.AuthReqID)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.redeem(f.rs, tr, payment("500.00", "EUR")); err != nil {
		t.Fatal(err)
	}
	ev, err := readEvents(ctx, f.db, `WHERE request_id = $1 ORDER BY id`, c.Request.ID)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range ev {
		kinds = append(kinds, e.Kind)
	}
	want := []string{KindRequestCreated, KindReviewRecorded, KindRequestApproved, KindTokenIssued, KindTokenRedeemed}
	if !slices.Equal(kinds, want) {
		t.Fatalf("events of the request %v, want %v", kinds, want)
	}
	if got := countEvents(t, f.db, c.Request.ID); len(got) != len(want) {
		t.Fatalf("counted by request: %v", got)
	}
}

// TestEventsAppendOnly: audit_events cannot be changed or emptied, not even
// by the role that owns the table.
func TestEventsAppendOnly(t *testing.T) {
	f := newRaceFixture(t) // its setup wrote events
	var owns bool
	if err := f.db.Get(&owns, `SELECT tableowner = current_user FROM pg_tables WHERE tablename = 'audit_events'`); err != nil || !owns {
		t.Fatalf("the test's role does not own audit_events (%v): the test would prove less", err)
	}
	before := countEvents(t, f.db, "")
	if len(before) == 0 {
		t.Fatal("no events to tamper with")
	}
	for _, tc := range []struct{ name, sql string }{
		{"update", `UPDATE audit_events SET kind = 'x'`},
		{"update of the body", `UPDATE audit_events SET body = '{}'`},
		{"delete", `DELETE FROM audit_events`},
		{"delete of one", `DELETE FROM audit_events WHERE id = (SELECT max(id) FROM audit_events)`},
		{"truncate", `TRUNCATE audit_events`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.db.Exec(tc.sql)
			var pqErr *pq.Error
			if !errors.As(err, &pqErr) || pqErr.Code.Name() != "insufficient_privilege" || !strings.Contains(pqErr.Message, "append-only") {
				t.Fatalf("%s: err = %v, want the append-only refusal", tc.sql, err)
			}
			if after := countEvents(t, f.db, ""); !maps.Equal(after, before) {
				t.Fatalf("events changed: %v, were %v", after, before)
			}
		})
	}
}

// TestEventsAnnounced: a committed event is announced on EventsChannel with
// its ids and kind only; a change that fails announces nothing.
func TestEventsAnnounced(t *testing.T) {
	conf := pgtest.NewConfig(t)
	db, err := sqlx.Open("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store := NewStore(db)
	l := pq.NewListener(conf.URL(), time.Second, time.Second, nil)
	t.Cleanup(func() { l.Close() })
	if err := l.Listen(EventsChannel); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	next := func() *pq.Notification {
		select {
		case n := <-l.Notify:
			return n
		case <-time.After(500 * time.Millisecond):
			return nil
		}
	}

	u, err := store.CreateUser(ctx, NewUser{Email: "alice@example.com", UserCode: "97531"})
	if err != nil {
		t.Fatal(err)
	}
	n := next()
	if n == nil {
		t.Fatal("no notification of a committed event")
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(n.Extra), &got); err != nil {
		t.Fatal(err)
	}
	if got["kind"] != KindUserCreated || got["user_id"] != u.ID || got["id"] == nil {
		t.Errorf("notification %s", n.Extra)
	}
	for k := range got {
		if !slices.Contains([]string{"id", "kind", "request_id", "agent_id", "user_id", "subject"}, k) {
			t.Errorf("notification carries %s: %s", k, n.Extra)
		}
	}

	if _, err := store.CreateUser(ctx, NewUser{Email: "alice@example.com"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate user: %v", err)
	}
	if n := next(); n != nil {
		t.Errorf("a failed change was announced: %s", n.Extra)
	}

	// The outbox's own record and consent page views are not announced
	// (nothing acts on them); a review beside them is.
	for _, kind := range []string{KindNotificationQueued, KindNotificationSent, KindNotificationFailed, KindNotificationDropped,
		KindRequestViewed, KindReviewRecorded} {
		if _, err := db.Exec(`INSERT INTO audit_events (kind, actor, user_id) VALUES ($1, $2, $3)`, kind, ActorNotify, u.ID); err != nil {
			t.Fatal(err)
		}
		n := next()
		switch announced := n != nil; {
		case kind == KindReviewRecorded && !announced:
			t.Errorf("%s was not announced", kind)
		case kind != KindReviewRecorded && announced:
			t.Errorf("%s was announced: %s", kind, n.Extra)
		}
	}
}

// readEvents reads audit_events rows selected by where.
func readEvents(ctx context.Context, db *sqlx.DB, where string, args ...any) ([]Event, error) {
	var out []Event
	err := db.SelectContext(ctx, &out, `SELECT id, at, kind, actor, request_id, agent_id, user_id, subject, body FROM audit_events `+where, args...)
	return out, err
}

package approvals

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/internal/pgtest"
)

// TestListenerAcrossServices: two services on one database, each with its
// own listener. An event committed through one reaches the other's
// subscribers within a second; after the other's LISTEN connection is killed
// it reconnects, its subscribers are told to resync, and events flow again.
func TestListenerAcrossServices(t *testing.T) {
	conf := pgtest.NewConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dbA, err := sqlx.Connect("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer dbA.Close()
	storeA := NewStore(dbA)

	listenerB, err := NewListener(conf.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	notices := make(chan Notice, 16)
	stop := listenerB.Subscribe(func(n Notice) { notices <- n })
	defer stop()
	go listenerB.Run(ctx)

	// wait returns the next notice that matches, or fails after limit.
	wait := func(what string, limit time.Duration, match func(Notice) bool) Notice {
		t.Helper()
		deadline := time.After(limit)
		for {
			select {
			case n := <-notices:
				if match(n) {
					return n
				}
			case <-deadline:
				t.Fatalf("%s: nothing within %s", what, limit)
			}
		}
	}

	u, err := storeA.CreateUser(ctx, NewUser{Email: "bob@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	n := wait("user created through A", time.Second, func(n Notice) bool { return n.Kind == KindUserCreated })
	if n.UserID != u.ID || n.EventID == 0 || n.Resync {
		t.Fatalf("notice %+v, want user %s", n, u.ID)
	}

	// A rolled-back change announces nothing.
	err = storeA.change(ctx, func(tx *Tx) error {
		tx.record(Event{Kind: KindUserSuspended, Actor: ActorCLI, UserID: &u.ID})
		if err := tx.flush(ctx); err != nil {
			return err
		}
		return ErrConflict
	})
	if err != ErrConflict {
		t.Fatalf("change: %v", err)
	}

	var killed int
	if err := dbA.Get(&killed, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'listen%'`); err != nil || killed != 1 {
		t.Fatalf("terminating the listener's connection: %d killed, %v", killed, err)
	}
	wait("resync after the connection was killed", 15*time.Second, func(n Notice) bool {
		if n.Kind == KindUserSuspended {
			t.Fatal("a rolled-back event was announced")
		}
		return n.Resync
	})
	if !listenerB.Connected() {
		t.Fatal("reconnected listener says it is not connected")
	}
	if err := storeA.SetUserStatus(ctx, u.ID, "suspended"); err != nil {
		t.Fatal(err)
	}
	n = wait("event after the reconnect", time.Second, func(n Notice) bool { return n.Kind == KindUserSuspended })
	if n.UserID != u.ID {
		t.Fatalf("notice %+v", n)
	}
}

// TestListenerBurstWhilePinging: a burst of notifications larger than
// lib/pq's buffers arrives while the listener pings its connection over and
// over; every one is delivered (a ping on the delivering goroutine would
// wait behind them forever).
func TestListenerBurstWhilePinging(t *testing.T) {
	conf := pgtest.NewConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := sqlx.Connect("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l, err := NewListener(conf.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l.pingEvery = time.Millisecond
	got := make(chan Notice, 1000)
	l.Subscribe(func(n Notice) {
		time.Sleep(50 * time.Microsecond) // a subscriber that takes a little time
		got <- n
	})
	go l.Run(ctx)
	const burst = 300
	err = NewStore(db).change(ctx, func(tx *Tx) error {
		for range burst {
			tx.record(Event{Kind: KindUserCreated, Actor: ActorCLI})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for n := 0; n < burst; {
		select {
		case x := <-got:
			if x.Kind == KindUserCreated {
				n++
			}
		case <-deadline:
			t.Fatalf("%d of %d notifications delivered", n, burst)
		}
	}
}

// TestAnnounceAfterCommit: a service that announces after commit sends the
// request and review events of a pending admission and of a review itself
// (its notices carry no event id), and the trigger sends none of them; a
// service that does not leaves them to the trigger (notices with the id).
func TestAnnounceAfterCommit(t *testing.T) {
	const policy = "types:\n  payment_initiation: [{id: ask, when: \"true\", outcome: approve, reason: ask}]\n"
	for _, after := range []bool{true, false} {
		t.Run(fmt.Sprintf("after=%v", after), func(t *testing.T) {
			cs := newCountedService(t, policy, func(c *Config) { c.AnnounceAfterCommit = after })
			ctx := context.Background()
			got := make(chan Notice, 100)
			cs.l.Subscribe(func(n Notice) { got <- n })
			user, err := cs.svc.Store().UserByHint(ctx, "alice@example.com")
			if err != nil {
				t.Fatal(err)
			}
			c, err := cs.svc.Authorize(ctx, cs.agent, AuthRequest{Scope: "openid", LoginHint: "alice@example.com",
				AuthorizationDetails: payment("100.00", "EUR")})
			if err != nil || c.Request.State != StatePending {
				t.Fatalf("authorize: %v %v", c.Request.State, err)
			}
			if _, err := cs.svc.Review(ctx, c.Request.ID, Reviewer{UserID: user.ID, AMR: []string{"user"}}, ReviewInput{Verdict: VerdictApprove}); err != nil {
				t.Fatal(err)
			}
			want := []string{KindRequestCreated, KindReviewRecorded, KindRequestApproved}
			var kinds []string
			deadline := time.After(10 * time.Second)
			for len(kinds) < len(want) {
				select {
				case n := <-got:
					if n.RequestID != c.Request.ID {
						continue
					}
					kinds = append(kinds, n.Kind)
					if fromTrigger := n.EventID != 0; fromTrigger == after {
						t.Errorf("%s announced by the trigger: %v, want %v", n.Kind, fromTrigger, !after)
					}
					if n.AgentID != cs.agent.ID || n.UserID != user.ID {
						t.Errorf("%s notice %+v: want agent %s and user %s", n.Kind, n, cs.agent.ID, user.ID)
					}
				case <-deadline:
					t.Fatalf("notices of the request: %v, want %v", kinds, want)
				}
			}
			if !slices.Equal(kinds, want) {
				t.Errorf("notices of the request: %v, want %v", kinds, want)
			}
			// Nothing more for it (no notice twice, from both).
			select {
			case n := <-got:
				if n.RequestID == c.Request.ID {
					t.Errorf("a further notice of the request: %+v", n)
				}
			case <-time.After(300 * time.Millisecond):
			}
		})
	}
}

// TestAnnouncerCloseSends: what is queued when the announcer closes is sent
// before close returns (the database is closed right after, as on shutdown).
func TestAnnouncerCloseSends(t *testing.T) {
	conf := pgtest.NewConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := sqlx.Connect("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewListener(conf.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan Notice, 5000)
	l.Subscribe(func(n Notice) { got <- n })
	go l.Run(ctx)
	a := newAnnouncer(db, nil)
	// Distinct notices: PostgreSQL sends identical ones of one transaction
	// once.
	const n = 3000
	agent := "agt_x"
	for i := range n {
		rid := fmt.Sprintf("request-%d", i)
		a.announce(Event{Kind: KindRequestApproved, RequestID: &rid, AgentID: &agent})
	}
	a.announce(Event{Kind: KindAgentSuspended, AgentID: &agent}) // the trigger's, not the announcer's
	a.close(10 * time.Second)
	db.Close()
	deadline := time.After(10 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case x := <-got:
			if x.Kind != KindRequestApproved || !strings.HasPrefix(x.RequestID, "request-") || x.AgentID != agent || x.EventID != 0 {
				t.Fatalf("notice %+v", x)
			}
		case <-deadline:
			t.Fatalf("%d of %d queued notices sent before close returned", i, n)
		}
	}
	select {
	case x := <-got:
		t.Fatalf("a further notice %+v", x)
	case <-time.After(200 * time.Millisecond):
	}
}

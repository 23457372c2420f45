package approvals

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/internal/pgtest"
	"github.com/countersign/countersign/rar"
)

// replica is one Service on a shared database with a listener of its own,
// as one serve process is.
func replica(t *testing.T, url string) *Service {
	t.Helper()
	db, err := sqlx.Connect("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l, err := NewListener(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go l.Run(ctx)
	store := NewStore(db)
	keys, err := NewKeyStore(db, raceKEK, nil)
	if err != nil {
		t.Fatal(err)
	}
	return NewService(store, NewTypeStore(store), keys, Config{Issuer: "https://countersign.test", KEK: raceKEK, Listener: l})
}

// eventually polls cond every 20 ms for up to a second.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen within a second", what)
		}
	}
}

// TestCachesAcrossReplicas: two replicas cache agents, types and the policy;
// a change made through one is seen by the other within a second — an agent
// suspended, a secret rotated, a policy published, a type changed — and a
// suspended agent or user is refused by the database even by a replica
// whose cache still holds them active.
func TestCachesAcrossReplicas(t *testing.T) {
	conf := pgtest.NewConfig(t)
	a, b := replica(t, conf.URL()), replica(t, conf.URL())
	ctx := context.Background()
	defs, err := demo.TypeDefinitions()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Types().Apply(ctx, defs); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Policies().Apply(ctx, "p.yaml", []byte("types:\n  payment_initiation: [{id: all, when: \"true\", outcome: approve, reason: v1}]\n")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Store().CreateResourceServer(ctx, NewResourceServer{Name: "API", Audience: "https://api.example.com", Types: []string{"payment_initiation"}}); err != nil {
		t.Fatal(err)
	}
	user, err := a.Store().CreateUser(ctx, NewUser{Email: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	agent, secret, err := a.Store().CreateAgent(ctx, NewAgent{Name: "Agent", Domain: "agent.example.com", Types: []string{"payment_initiation"}})
	if err != nil {
		t.Fatal(err)
	}
	ask := func(s *Service, ag Agent) (Created, error) {
		return s.Authorize(ctx, ag, AuthRequest{Scope: "openid", LoginHint: user.Email, AuthorizationDetails: []byte(raceDetails)})
	}
	// Warm b's caches.
	bAgent, err := b.AuthenticateAgent(ctx, agent.ID, secret, AuthClientSecretBasic)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ask(b, bAgent)
	if err != nil || c.Request.PolicyReason != "v1" {
		t.Fatalf("b before: %+v %v", c.Request.PolicyReason, err)
	}

	t.Run("policy published", func(t *testing.T) {
		if _, err := a.Policies().Apply(ctx, "p.yaml", []byte("types:\n  payment_initiation: [{id: all, when: \"true\", outcome: approve, reason: v2}]\n")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the new policy on b", func() bool {
			_, v, err := b.currentPolicy(ctx)
			return err == nil && v == 2
		})
	})
	t.Run("type changed", func(t *testing.T) {
		_, before, _ := b.registry(ctx)
		changed := defs[0]
		changed.Description += " (changed)"
		if _, err := a.Types().Apply(ctx, []rar.Type{changed}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the changed type on b", func() bool {
			_, v, err := b.registry(ctx)
			return err == nil && v[changed.Name] == before[changed.Name]+1
		})
	})
	t.Run("secret rotated", func(t *testing.T) {
		fresh, err := a.Store().RotateAgentSecret(ctx, agent.ID)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the old secret refused on b", func() bool {
			_, err := b.AuthenticateAgent(ctx, agent.ID, secret, AuthClientSecretBasic)
			return errors.Is(err, ErrNotAllowed)
		})
		if bAgent, err = b.AuthenticateAgent(ctx, agent.ID, fresh, AuthClientSecretBasic); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("agent suspended", func(t *testing.T) {
		if err := a.Store().SetAgentStatus(ctx, agent.ID, "suspended"); err != nil {
			t.Fatal(err)
		}
		// bAgent is what b's cache held: active. The database refuses it.
		var ref *Refusal
		if _, err := ask(b, bAgent); !errors.As(err, &ref) || ref.Code != CodeAccessDenied {
			t.Fatalf("a suspended agent's request through a stale registration: %v", err)
		}
		eventually(t, "the suspension on b", func() bool {
			got, err := b.agent(ctx, agent.ID)
			return err == nil && got.Status == "suspended"
		})
		if err := a.Store().SetAgentStatus(ctx, agent.ID, "active"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("user suspended", func(t *testing.T) {
		if _, err := b.userByHint(ctx, user.Email); err != nil {
			t.Fatal(err)
		}
		if err := a.Store().SetUserStatus(ctx, user.ID, "suspended"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the user's suspension on b", func() bool {
			u, err := b.userByHint(ctx, user.Email)
			return err == nil && u.Status == "suspended"
		})
	})
}

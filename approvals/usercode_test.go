package approvals

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

// TestUserCodeBurst: guesses sent at once are counted before any is hashed,
// so a burst gets no more argon2id evaluations than the lockout allows, and
// the right code is refused once the code is locked — whichever request
// reaches the lock first. Not parallel: it reads the package's hash counter.
func TestUserCodeBurst(t *testing.T) {
	for _, tc := range []struct {
		name  string
		wrong int
		right bool // the right code is sent in the burst too
	}{
		{"30 wrong codes", 30, false},
		{"29 wrong codes and the right one", 29, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRaceFixture(t)
			ctx := context.Background()
			if _, err := f.store.CreateUser(ctx, NewUser{Email: "bob@example.com", UserCode: "2468"}); err != nil {
				t.Fatal(err)
			}
			try := func(code string) error {
				_, err := f.svc.Authorize(ctx, f.agent, AuthRequest{Scope: "openid", LoginHint: "bob@example.com",
					UserCode: code, AuthorizationDetails: payment("5.00", "EUR")})
				return err
			}
			codes := make([]string, tc.wrong)
			for i := range codes {
				codes[i] = "0000"
			}
			if tc.right {
				codes = append(codes, "2468")
			}
			before := userCodeHashes.Load()
			errs := make([]error, len(codes))
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, c := range codes {
				wg.Go(func() {
					<-start
					errs[i] = try(c)
				})
			}
			close(start)
			wg.Wait()
			hashed := userCodeHashes.Load() - before

			rightAccepted := false
			for i, err := range errs {
				var ref *Refusal
				switch {
				case codes[i] == "2468" && err == nil:
					rightAccepted = true
				case errors.As(err, &ref) && ref.Code == CodeInvalidUserCode:
				default:
					t.Errorf("attempt %d (%s): %v, want invalid_user_code", i, codes[i], err)
				}
			}
			// The right code, when it got one of the five places, resets the
			// count and may let five more wrong ones through.
			limit := int64(userCodeMaxFailures)
			if rightAccepted {
				limit = 2 * userCodeMaxFailures
			}
			if hashed > limit {
				t.Errorf("%d argon2id evaluations for %d concurrent codes, want at most %d", hashed, len(codes), limit)
			}
			var failures int
			if err := f.db.Get(&failures, `SELECT user_code_failures FROM users WHERE email = 'bob@example.com'`); err != nil {
				t.Fatal(err)
			}
			if !rightAccepted || failures >= userCodeMaxFailures {
				var ref *Refusal
				before := userCodeHashes.Load()
				if err := try("2468"); !errors.As(err, &ref) || ref.Code != CodeInvalidUserCode {
					t.Fatalf("right code after the burst (%d failures counted): %v, want invalid_user_code", failures, err)
				}
				if n := userCodeHashes.Load() - before; n != 0 {
					t.Errorf("a locked code was hashed %d times, want 0", n)
				}
			}
		})
	}
}

// TestUserCodeLockedEvent: the wrong code that locks the user's code writes
// user.user_code_locked, by the agent that sent it; the four before it and
// a right code write none.
func TestUserCodeLockedEvent(t *testing.T) {
	f := newRaceFixture(t)
	ctx := context.Background()
	u, err := f.store.CreateUser(ctx, NewUser{Email: "bob@example.com", UserCode: "2468"})
	if err != nil {
		t.Fatal(err)
	}
	try := func(code string) {
		_, _ = f.svc.Authorize(ctx, f.agent, AuthRequest{Scope: "openid", LoginHint: "bob@example.com",
			UserCode: code, AuthorizationDetails: payment("5.00", "EUR")})
	}
	locked := func() (n int, body string) {
		if err := f.db.QueryRow(`SELECT count(*), coalesce(max(body::text), '') FROM audit_events WHERE kind = 'user.user_code_locked'
			AND user_id = $1 AND agent_id = $2 AND actor = $3`, u.ID, f.agent.ID, ActorAgent(f.agent.ID)).Scan(&n, &body); err != nil {
			t.Fatal(err)
		}
		return n, body
	}
	try("2468")
	for range userCodeMaxFailures - 1 {
		try("0000")
	}
	if n, _ := locked(); n != 0 {
		t.Fatalf("%d lock events before the code is locked", n)
	}
	try("0000")
	if n, body := locked(); n != 1 || !strings.Contains(body, `"failures": 5`) {
		t.Fatalf("after the fifth wrong code: %d lock events, body %s", n, body)
	}
}

package approvals

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/rar"
)

// together runs fn n times at once, released together, and returns the errors.
func together(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			errs[i] = fn(i)
		}()
	}
	start.Done()
	done.Wait()
	return errs
}

// outcomes counts nil errors and errors that are want; anything else fails t.
func outcomes(t *testing.T, errs []error, want error) (ok, refused int) {
	t.Helper()
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, want):
			refused++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	return ok, refused
}

func TestConsumeLinkOnce(t *testing.T) {
	ctx := context.Background()
	f := newRaceFixture(t)
	_, link, err := f.store.InviteUser(ctx, "alice@example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	if u, err := f.store.LinkUser(ctx, LinkEnroll, link.Token); err != nil || u.ID != f.user.ID {
		t.Fatalf("LinkUser: %v %v, want alice and the link unspent", u.ID, err)
	}
	if _, err := f.store.ConsumeLink(ctx, LinkSignIn, link.Token); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an enrollment link used to sign in: %v, want ErrNotFound", err)
	}
	winners := make([]string, 16)
	ok, refused := outcomes(t, together(16, func(i int) error {
		u, err := f.store.ConsumeLink(ctx, LinkEnroll, link.Token)
		winners[i] = u.ID
		return err
	}), ErrNotFound)
	if ok != 1 || refused != 15 {
		t.Fatalf("16 concurrent uses of one link: %d succeeded, %d refused; want exactly one", ok, refused)
	}
	for _, id := range winners {
		if id != "" && id != f.user.ID {
			t.Errorf("the link signed in %s, want %s", id, f.user.ID)
		}
	}
	if _, err := f.store.LinkUser(ctx, LinkEnroll, link.Token); !errors.Is(err, ErrNotFound) {
		t.Errorf("LinkUser after the link was spent: %v, want ErrNotFound", err)
	}
	var stored int
	if err := f.db.Get(&stored, `SELECT count(*) FROM user_links WHERE token_hash = $1 OR token_hash = $2`, link.Token, HashSecret(link.Token)); err != nil || stored != 0 {
		t.Errorf("%d rows for the spent link (%v), want none", stored, err)
	}
}

func TestConsumeLinkExpired(t *testing.T) {
	ctx := context.Background()
	f := newRaceFixture(t)
	link, err := f.store.SignInLink(ctx, f.user.ID)
	if err != nil {
		t.Fatal(err)
	}
	var plain int
	if err := f.db.Get(&plain, `SELECT count(*) FROM user_links WHERE token_hash = $1`, link.Token); err != nil || plain != 0 {
		t.Fatalf("the link's secret is stored as it is (%d, %v)", plain, err)
	}
	if _, err := f.db.Exec(`UPDATE user_links SET expires_at = now() - interval '1 second' WHERE token_hash = $1`, HashSecret(link.Token)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.ConsumeLink(ctx, LinkSignIn, link.Token); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an expired link: %v, want ErrNotFound", err)
	}
	if n, err := f.store.PurgeExpiredAccess(ctx); err != nil || n != 1 {
		t.Errorf("PurgeExpiredAccess: %d rows, %v; want the expired link", n, err)
	}
}

func TestConsumeLinkSuspendedUser(t *testing.T) {
	ctx := context.Background()
	f := newRaceFixture(t)
	link, err := f.store.SignInLink(ctx, f.user.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec(`UPDATE users SET status = 'suspended' WHERE id = $1`, f.user.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.ConsumeLink(ctx, LinkSignIn, link.Token); !errors.Is(err, ErrSuspended) {
		t.Fatalf("a suspended user's link: %v, want ErrSuspended", err)
	}
	if _, err := f.db.Exec(`UPDATE users SET status = 'active' WHERE id = $1`, f.user.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.ConsumeLink(ctx, LinkSignIn, link.Token); !errors.Is(err, ErrNotFound) {
		t.Errorf("the link after a refused use: %v, want it spent (ErrNotFound)", err)
	}
}

func TestTakeChallengeOnce(t *testing.T) {
	ctx := context.Background()
	f := newRaceFixture(t)
	c, err := f.store.SaveChallenge(ctx, Challenge{Purpose: "signin", Data: []byte(`{"challenge":"x"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.TakeChallenge(ctx, c.ID, "enroll"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a sign-in ceremony taken as an enrollment: %v, want ErrNotFound", err)
	}
	ok, refused := outcomes(t, together(8, func(int) error {
		got, err := f.store.TakeChallenge(ctx, c.ID, "signin")
		if err == nil && strings.ReplaceAll(string(got.Data), " ", "") != `{"challenge":"x"}` {
			return errors.New("the ceremony's data changed: " + string(got.Data))
		}
		return err
	}), ErrNotFound)
	if ok != 1 || refused != 7 {
		t.Fatalf("8 concurrent finishes of one ceremony: %d succeeded, %d refused; want exactly one", ok, refused)
	}

	late, err := f.store.SaveChallenge(ctx, Challenge{Purpose: "step_up", UserID: &f.user.ID, Data: []byte(`{}`), Nonce: []byte("n")})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(late.ExpiresAt); d < ChallengeLifetime-time.Minute || d > ChallengeLifetime+time.Minute {
		t.Errorf("a ceremony expires in %v, want about %v", d, ChallengeLifetime)
	}
	if _, err := f.db.Exec(`UPDATE webauthn_challenges SET expires_at = now() - interval '1 second' WHERE id = $1`, late.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.TakeChallenge(ctx, late.ID, "step_up"); !errors.Is(err, ErrNotFound) {
		t.Errorf("an expired ceremony: %v, want ErrNotFound", err)
	}
}

func TestUsePasskeyCounter(t *testing.T) {
	ctx := context.Background()
	f := newRaceFixture(t)
	p, err := f.store.AddPasskey(ctx, Passkey{UserID: f.user.ID, CredentialID: []byte("cred-1"), PublicKey: []byte{1},
		SignCount: 3, Name: "Laptop", AttestationType: "none"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.UsePasskey(ctx, p.ID, 4, false); err != nil {
		t.Fatalf("a grown counter: %v", err)
	}
	// Two assertions with the same counter at once: one passes, the other is
	// a clone's and marks the passkey, which is refused from then on.
	ok, refused := outcomes(t, together(2, func(int) error { return f.store.UsePasskey(ctx, p.ID, 5, false) }), ErrCloneWarning)
	if ok != 1 || refused != 1 {
		t.Fatalf("two uses with counter 5: %d passed, %d refused; want one each", ok, refused)
	}
	if err := f.store.UsePasskey(ctx, p.ID, 9, false); !errors.Is(err, ErrCloneWarning) {
		t.Errorf("a marked passkey with a grown counter: %v, want ErrCloneWarning", err)
	}
	got, err := f.store.PasskeyByCredentialID(ctx, []byte("cred-1"))
	if err != nil || !got.CloneWarning || got.SignCount != 5 {
		t.Errorf("passkey after the clone: warning %v, counter %d, %v; want marked at 5", got.CloneWarning, got.SignCount, err)
	}
	var events int
	if err := f.db.Get(&events, `SELECT count(*) FROM audit_events WHERE kind = $1`, KindPasskeyCloneWarning); err != nil || events < 1 {
		t.Errorf("%d clone-warning events (%v), want at least one", events, err)
	}

	// An authenticator that keeps no counter (always 0) is not a clone.
	z, err := f.store.AddPasskey(ctx, Passkey{UserID: f.user.ID, CredentialID: []byte("cred-2"), PublicKey: []byte{1}, Name: "Key", AttestationType: "none"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := f.store.UsePasskey(ctx, z.ID, 0, false); err != nil {
			t.Errorf("a counterless authenticator: %v", err)
		}
	}
}

// A request reads as the agent wrote it, under the type versions it was made
// with, even after an admin applies a new version of its type.
func TestSummaryUsesTheRequestsTypeVersions(t *testing.T) {
	ctx := context.Background()
	f := newRaceFixture(t)
	before := f.pending(t)
	defs, err := demo.TypeDefinitions()
	if err != nil {
		t.Fatal(err)
	}
	for i := range defs {
		if defs[i].Name == "payment_initiation" {
			defs[i].Summary = "Version two of the payment sentence"
		}
	}
	if _, err := NewTypeStore(f.store).Apply(ctx, defs); err != nil {
		t.Fatal(err)
	}
	c, err := f.svc.Consent(ctx, before.Request.ID, f.user)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Summaries) != 1 || strings.Contains(c.Summaries[0].Sentence, "Version two") || !strings.Contains(c.Summaries[0].Sentence, "Alice Smith") {
		t.Errorf("a request made under version 1 reads %q after version 2 was applied; want its own version's sentence", sentences(c.Summaries))
	}
	later := before.Request
	later.TypeVersions = TypeVersions{"payment_initiation": 2}
	if got := sentences(f.svc.summarize(ctx, later)); got != "Version two of the payment sentence" {
		t.Errorf("under version 2 the request reads %q", got)
	}
	in, err := f.svc.Inbox(ctx, f.user, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Pending) != 1 || in.Pending[0].Sentence != c.Summaries[0].Sentence {
		t.Errorf("the inbox reads %+v, want the consent page's sentence %q", in.Pending, c.Summaries[0].Sentence)
	}
	missing := before.Request
	missing.TypeVersions = TypeVersions{"payment_initiation": 9}
	if got := f.svc.summarize(ctx, missing); got != nil {
		t.Errorf("an unknown version summarises as %q, want nothing (the page shows the JSON)", sentences(got))
	}
}

func sentences(s []rar.Summary) string {
	var out []string
	for _, x := range s {
		out = append(out, x.Sentence)
	}
	return strings.Join(out, " | ")
}

// TestSessionEndsLeaveEvents: the sweeper's purge of sessions past their
// limit or idle writes session.ended for each, with why.
func TestSessionEndsLeaveEvents(t *testing.T) {
	f := newRaceFixture(t)
	ctx := context.Background()
	var ids []string
	for range 3 {
		_, sess, err := f.store.CreateSession(ctx, f.user.ID, []string{"hwk"}, "test", "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sess.ID)
	}
	f.db.MustExec(`UPDATE web_sessions SET expires_at = now() - interval '1 second' WHERE public_id = $1`, ids[0])
	f.db.MustExec(`UPDATE web_sessions SET last_seen_at = now() - interval '30 days' WHERE public_id = $1`, ids[1])
	if _, err := f.store.PurgeExpiredAccess(ctx); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := f.db.Select(&got, `SELECT (body->>'session') || ' ' || (body->>'reason') FROM audit_events
		WHERE kind = 'session.ended' AND actor = 'system:sweeper' AND user_id = $1 ORDER BY id`, f.user.ID); err != nil {
		t.Fatal(err)
	}
	want := []string{ids[0] + " expired", ids[1] + " idle"}
	if len(got) != 2 || !(got[0] == want[0] && got[1] == want[1] || got[0] == want[1] && got[1] == want[0]) {
		t.Fatalf("session.ended events %v, want %v", got, want)
	}
	var left int
	if err := f.db.Get(&left, `SELECT count(*) FROM web_sessions WHERE public_id = $1`, ids[2]); err != nil || left != 1 {
		t.Fatalf("the live session: %d, %v", left, err)
	}
}

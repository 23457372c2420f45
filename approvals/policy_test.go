package approvals

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/countersign/countersign/examples/demo"
)

func payment(amount, currency string) []byte {
	return []byte(fmt.Sprintf(`[{"type":"payment_initiation","instructedAmount":{"currency":%q,"amount":%q},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}]`, currency, amount))
}

func (f raceFixture) ask(t *testing.T, agent Agent, details []byte, acr ...string) (Created, error) {
	t.Helper()
	return f.svc.Authorize(context.Background(), agent, AuthRequest{Scope: "openid", LoginHint: "alice@example.com",
		AuthorizationDetails: details, ACRValues: acr})
}

func (f raceFixture) applyDemoPolicy(t *testing.T) int {
	t.Helper()
	ch, err := f.svc.Policies().Apply(context.Background(), "policy.yaml", demo.Policy())
	if err != nil {
		t.Fatal(err)
	}
	return ch.Version
}

// TestPolicyOutcomes runs the demo policy's payment rules through
// Authorize: allow approves at once (acr policy), approve and step_up wait,
// acr_values raise, and the decision names its version, rule and reason.
func TestPolicyOutcomes(t *testing.T) {
	f := newRaceFixture(t)
	v := f.applyDemoPolicy(t)
	tests := []struct {
		name    string
		details []byte
		acr     []string
		state   State
		outcome string
		rule    string
	}{
		{"small EUR payment is allowed", payment("80.00", "EUR"), nil, StateApproved, "allow", "small_eur_payment"},
		{"small USD payment needs approval", payment("80.00", "USD"), nil, StatePending, "approve", "payment"},
		{"large payment needs a step-up", payment("10000.01", "EUR"), nil, StatePending, "step_up", "large_payment"},
		{"a currency without a threshold needs a step-up", payment("9999.999", "KWD"), nil, StatePending, "step_up", "unlisted_currency"},
		{"acr_values raise allow to step-up", payment("80.00", "EUR"), []string{ACRStepUp}, StatePending, "step_up", ""},
		{"acr_values raise allow to approval", payment("80.00", "EUR"), []string{ACRApproval}, StatePending, "approve", ""},
		{"acr_values never lower", payment("20000", "EUR"), []string{ACRPolicy}, StatePending, "step_up", "large_payment"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := f.ask(t, f.agent, tc.details, tc.acr...)
			if err != nil {
				t.Fatal(err)
			}
			r := c.Request
			if r.State != tc.state || r.Outcome != tc.outcome || r.PolicyRule != tc.rule {
				t.Fatalf("state %s outcome %s rule %q; want %s %s %q", r.State, r.Outcome, r.PolicyRule, tc.state, tc.outcome, tc.rule)
			}
			if r.PolicyVersion == nil || *r.PolicyVersion != v || r.PolicyReason == "" {
				t.Fatalf("decision does not name version %d and a reason: %v %q", v, r.PolicyVersion, r.PolicyReason)
			}
			if tc.state == StateApproved && (r.ACR != ACRPolicy || len(r.AMR) != 1 || r.AMR[0] != "policy" || r.DecidedAt == nil) {
				t.Fatalf("auto-approval: acr %q amr %v decided_at %v", r.ACR, r.AMR, r.DecidedAt)
			}
		})
	}

	t.Run("deny refuses with the rule's reason and is kept", func(t *testing.T) {
		ag, _, err := f.store.CreateAgent(context.Background(), NewAgent{Name: "DB bot", Domain: "db.example.com", Types: []string{"database_operation"}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.ask(t, ag, []byte(`[{"type":"database_operation","operation":"DROP","database":"prod_main","table":"users","estimated_rows":10,"statement_sha256":"`+strings.Repeat("ab", 32)+`"}]`))
		var ref *Refusal
		if !errors.As(err, &ref) || ref.Code != CodeAccessDenied || ref.Description != "Destructive operations on production are not allowed" {
			t.Fatalf("err = %v, want access_denied with the rule's reason", err)
		}
		var n int
		if err := f.db.Get(&n, `SELECT count(*) FROM requests WHERE agent_id = $1 AND state = 'denied' AND policy_rule = 'destructive_on_production'`, ag.ID); err != nil || n != 1 {
			t.Fatalf("denied request kept %d times (err %v), want 1", n, err)
		}
	})

	t.Run("no plain approval of a step-up", func(t *testing.T) {
		c, err := f.ask(t, f.agent, payment("50000", "EUR"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.decide(context.Background(), c.Request.ID, true); !errors.Is(err, ErrStepUpRequired) {
			t.Fatalf("plain approval of a step_up request: %v, want ErrStepUpRequired", err)
		}
		if _, err := f.decide(context.Background(), c.Request.ID, false); err != nil {
			t.Fatalf("denying a step_up request: %v", err)
		}
	})
}

// TestPolicyVelocity: ten auto-allowed small payments by one agent, then the
// eleventh needs approval; another agent is unaffected.
func TestPolicyVelocity(t *testing.T) {
	f := newRaceFixture(t)
	f.applyDemoPolicy(t)
	for i := range 10 {
		c, err := f.ask(t, f.agent, payment("10.00", "EUR"))
		if err != nil {
			t.Fatal(err)
		}
		if c.Request.Outcome != "allow" {
			t.Fatalf("payment %d: outcome %s, want allow", i+1, c.Request.Outcome)
		}
	}
	c, err := f.ask(t, f.agent, payment("10.00", "EUR"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Request.Outcome != "approve" || c.Request.PolicyRule != "payment_velocity" {
		t.Fatalf("11th payment: %s by %q, want approve by payment_velocity", c.Request.Outcome, c.Request.PolicyRule)
	}
	other, _, err := f.store.CreateAgent(context.Background(), NewAgent{Name: "Other", Domain: "other.example.com", Types: []string{"payment_initiation"}})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := f.ask(t, other, payment("10.00", "EUR")); err != nil || c.Request.Outcome != "allow" {
		t.Fatalf("another agent's first payment: %v %v, want allow", c.Request.Outcome, err)
	}

	rec, err := f.store.recent(context.Background(), f.store.db, f.agent.ID, f.user.ID, []string{"payment_initiation"}, true)
	if err != nil {
		t.Fatal(err)
	}
	r := rec["payment_initiation"]
	if r.Agent.Hour.Total.Count != 11 || r.Agent.Hour.Allowed.Count != 10 || r.Agent.Hour.Pending.Count != 1 || r.Agent.Day.Total.Sums["EUR"] != 110 || len(r.Agent.Day.Total.Sums) != 1 {
		t.Fatalf("agent velocity %+v", r.Agent)
	}
	if r.User.Hour.Total.Count != 12 {
		t.Fatalf("user velocity counts %d requests, want 12 (both agents)", r.User.Hour.Total.Count)
	}
}

// TestPolicyVersions: a decision made under v1 still names v1 after v2 is
// published; apply is idempotent; a bad file publishes nothing.
func TestPolicyVersions(t *testing.T) {
	f := newRaceFixture(t) // publishes v1: every payment needs approval
	ctx := context.Background()
	c1, err := f.ask(t, f.agent, payment("10.00", "EUR"))
	if err != nil {
		t.Fatal(err)
	}
	v2 := f.applyDemoPolicy(t)
	if again, err := f.svc.Policies().Apply(ctx, "policy.yaml", demo.Policy()); err != nil || again.Changed || again.Version != v2 {
		t.Fatalf("re-applying the same file: %+v %v, want no change", again, err)
	}
	// Comments and formatting alone change no decision and publish nothing.
	commented := append([]byte("# reviewed\n"), demo.Policy()...)
	if again, err := f.svc.Policies().Apply(ctx, "policy.yaml", commented); err != nil || again.Changed || again.Version != v2 {
		t.Fatalf("applying the file with a comment added: %+v %v, want no change", again, err)
	}
	// A changed reason is shown with its old value.
	reworded := strings.Replace(string(demo.Policy()), "Reading data is allowed", "Reads are fine", 1)
	ch, err := f.svc.Policies().Apply(ctx, "policy.yaml", []byte(reworded))
	if err != nil || !ch.Changed || len(ch.Diff) != 1 || !strings.Contains(ch.Diff[0], `reason "Reads are fine" (was "Reading data is allowed")`) {
		t.Fatalf("rewording a reason: %+v %v", ch, err)
	}
	if ch, err = f.svc.Policies().Apply(ctx, "policy.yaml", demo.Policy()); err != nil || !ch.Changed {
		t.Fatalf("restoring the reason: %+v %v", ch, err)
	}
	v2 = ch.Version
	c2, err := f.ask(t, f.agent, payment("10.00", "EUR"))
	if err != nil {
		t.Fatal(err)
	}
	r1, err := f.store.Request(ctx, c1.Request.ID)
	if err != nil {
		t.Fatal(err)
	}
	if *r1.PolicyVersion != 1 || r1.PolicyRule != "all" || *c2.Request.PolicyVersion != v2 || c2.Request.PolicyRule != "small_eur_payment" {
		t.Fatalf("v1 decision names v%d/%s; v2 decision names v%d/%s", *r1.PolicyVersion, r1.PolicyRule, *c2.Request.PolicyVersion, c2.Request.PolicyRule)
	}

	bad := []struct{ name, src, want string }{
		{"bad CEL", "types:\n  payment_initiation:\n    - id: broken\n      when: amount(details.instructedAmount) >\n      outcome: allow\n      reason: x\n", "broken"},
		{"non-bool", "types:\n  payment_initiation:\n    - id: number\n      when: 1 + 1\n      outcome: allow\n      reason: x\n", "number"},
		{"bad YAML", "types:\n  payment_initiation: [\n", "bad.yaml"},
	}
	for _, b := range bad {
		_, err := f.svc.Policies().Apply(ctx, "bad.yaml", []byte(b.src))
		if err == nil || !strings.Contains(err.Error(), "bad.yaml") || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: err = %v, want one naming the file and %q", b.name, err, b.want)
		}
	}
	if _, v, err := f.svc.Policies().Current(ctx); err != nil || v != v2 {
		t.Fatalf("after bad files the live version is %d (err %v), want %d", v, err, v2)
	}
	hist, err := f.svc.Policies().History(ctx)
	if err != nil || len(hist) != 4 || hist[0].Version != v2 {
		t.Fatalf("history %+v %v", hist, err)
	}
}

// TestNotificationTokenKeptOnlyWhileNeeded: the client_notification_token
// (sent back in clear, so not hashable) leaves the request when it is
// decided; the outbox row alone carries it to the ping.
func TestNotificationTokenKeptOnlyWhileNeeded(t *testing.T) {
	f := newRaceFixture(t)
	f.applyDemoPolicy(t)
	ctx := context.Background()
	ping, _, err := f.store.CreateAgent(ctx, NewAgent{Name: "Ping", Domain: "ping.example.com", Types: []string{"payment_initiation"},
		DeliveryMode: DeliveryPing, NotifyURL: "https://ping.example.com/cb"})
	if err != nil {
		t.Fatal(err)
	}
	ask := func(amount string) Created {
		c, err := f.svc.Authorize(ctx, ping, AuthRequest{Scope: "openid", LoginHint: "alice@example.com",
			AuthorizationDetails: payment(amount, "EUR"), ClientNotificationToken: "secret-" + amount})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	stored := func(id string) (request, outbox *string) {
		t.Helper()
		if err := f.db.Get(&request, `SELECT client_notification_token FROM requests WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		_ = f.db.Get(&outbox, `SELECT bearer FROM outbox WHERE request_id = $1`, id)
		return request, outbox
	}

	pending := ask("500.00")
	if r, o := stored(pending.Request.ID); r == nil || *r != "secret-500.00" || o != nil {
		t.Fatalf("pending: request token %v, outbox %v; want it on the request only", r, o)
	}
	if _, err := f.decide(ctx, pending.Request.ID, true); err != nil {
		t.Fatal(err)
	}
	if r, o := stored(pending.Request.ID); r != nil || o == nil || *o != "secret-500.00" {
		t.Fatalf("decided: request token %v, outbox %v; want it in the outbox only", r, o)
	}

	allowed := ask("20.00") // the demo policy allows it at once
	if r, o := stored(allowed.Request.ID); allowed.Request.State != StateApproved || r != nil || o == nil || *o != "secret-20.00" {
		t.Fatalf("auto-allowed (%s): request token %v, outbox %v; want it in the outbox only", allowed.Request.State, r, o)
	}
}

// TestPolicyVelocityConcurrent: fifty small payments by one agent at the
// same instant: exactly ten are allowed, however they interleave.
func TestPolicyVelocityConcurrent(t *testing.T) {
	f := newRaceFixture(t)
	f.applyDemoPolicy(t)
	start := make(chan struct{})
	outcomes := make(chan string, 50)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c, err := f.svc.Authorize(context.Background(), f.agent, AuthRequest{Scope: "openid", LoginHint: "alice@example.com",
				AuthorizationDetails: payment("10.00", "EUR")})
			if err != nil {
				outcomes <- "error: " + err.Error()
				return
			}
			outcomes <- c.Request.Outcome
		}()
	}
	close(start)
	wg.Wait()
	close(outcomes)
	counts := map[string]int{}
	for o := range outcomes {
		counts[o]++
	}
	if counts["allow"] != 10 || counts["approve"] != 40 {
		t.Fatalf("outcomes %v, want 10 allow and 40 approve", counts)
	}
}

// TestExpireAlongsideDecide: the sweeper expiring a user's due requests while
// the user approves another never deadlocks on the velocity counters.
func TestExpireAlongsideDecide(t *testing.T) {
	f := newRaceFixture(t)
	ctx := context.Background()
	for trial := range 20 {
		due1, live := f.pending(t), f.pending(t)
		due2 := f.pending(t)
		if _, err := f.decide(ctx, due2.Request.ID, true); err != nil {
			t.Fatal(err)
		}
		if _, err := f.db.Exec(`UPDATE requests SET created_at = now() - interval '20 minutes', expires_at = now() - interval '1 second' WHERE id IN ($1, $2)`,
			due1.Request.ID, due2.Request.ID); err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		errs := make(chan error, 2)
		go func() { <-start; _, err := f.store.ExpireDue(ctx, 10); errs <- err }()
		go func() {
			<-start
			_, err := f.decide(ctx, live.Request.ID, true)
			errs <- err
		}()
		close(start)
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("trial %d: %v", trial, err)
			}
		}
	}
}

// TestQuorumKeepsStepUp: a quorum outcome raised by acr_values to need a
// step-up keeps both requirements, and neither a plain approval nor the
// requester alone can meet it.
func TestQuorumKeepsStepUp(t *testing.T) {
	f := newRaceFixture(t)
	f.applyDemoPolicy(t)
	ctx := context.Background()
	ag, _, err := f.store.CreateAgent(ctx, NewAgent{Name: "Merge bot", Domain: "merge.example.com", Types: []string{"code_merge"}})
	if err != nil {
		t.Fatal(err)
	}
	merge := []byte(`[{"type":"code_merge","repository":"acme/app","base_branch":"main","pull_request":42,"checks":"passed"}]`)
	for _, tc := range []struct {
		acr    []string
		stepUp bool
		user   bool
	}{{nil, false, false}, {[]string{ACRStepUp}, true, true}} {
		c, err := f.ask(t, ag, merge, tc.acr...)
		if err != nil {
			t.Fatal(err)
		}
		r := c.Request
		if r.Outcome != "quorum" || len(r.Quorum) != 1 || r.Quorum[0].Group != "maintainers" || r.Quorum[0].N != 2 ||
			r.StepUp != tc.stepUp || r.UserRequired != tc.user {
			t.Fatalf("acr %v: outcome %s quorum %+v step_up %v user_required %v", tc.acr, r.Outcome, r.Quorum, r.StepUp, r.UserRequired)
		}
		if _, err := f.decide(ctx, r.ID, true); !errors.Is(err, ErrNoEffect) && !errors.Is(err, ErrStepUpRequired) {
			t.Fatalf("plain approval of a quorum request: %v", err)
		}
	}
}

// TestAudienceMustBeRegistered: locations and resource indicators name only
// active resource servers that execute the request's type.
func TestAudienceMustBeRegistered(t *testing.T) {
	f := newRaceFixture(t)
	ctx := context.Background()
	if _, _, err := f.store.CreateResourceServer(ctx, NewResourceServer{Name: "Mail", Audience: "https://mail.example.com", Types: []string{"email_send"}}); err != nil {
		t.Fatal(err)
	}
	withLocations := func(locs string) []byte {
		return []byte(`[{"type":"payment_initiation","locations":` + locs + `,"instructedAmount":{"currency":"EUR","amount":"5.00"},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}]`)
	}
	for _, tc := range []struct {
		name, locs string
		ok         bool
	}{
		{"registered", `["https://api.example.com"]`, true},
		{"unregistered", `["https://attacker.example"]`, false},
		{"blank", `[" "]`, false},
		{"server for another type", `["https://mail.example.com"]`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := f.ask(t, f.agent, withLocations(tc.locs))
			var ref *Refusal
			switch {
			case tc.ok && (err != nil || len(c.Request.Audience) != 1 || c.Request.Audience[0] != "https://api.example.com"):
				t.Fatalf("refused or wrong aud: %v %v", c.Request.Audience, err)
			case !tc.ok && (!errors.As(err, &ref) || ref.Code != CodeInvalidTarget):
				t.Fatalf("err = %v, want invalid_target", err)
			}
		})
	}
}

// TestSplitPayment: a payment split across elements is judged whole
// (request.amount): sixteen 100 EUR elements are not "up to 100 EUR", and two
// of 6,000 are over 10,000.
func TestSplitPayment(t *testing.T) {
	f := newRaceFixture(t)
	f.applyDemoPolicy(t)
	split := func(n int, amount string) []byte {
		el := strings.TrimSuffix(strings.TrimPrefix(string(payment(amount, "EUR")), "["), "]")
		return []byte("[" + strings.TrimSuffix(strings.Repeat(el+",", n), ",") + "]")
	}
	for _, tc := range []struct {
		name    string
		details []byte
		outcome string
	}{
		{"one of 100", split(1, "100.00"), "allow"},
		{"sixteen of 100", split(16, "100.00"), "approve"},
		{"two of 6,000", split(2, "6000.00"), "step_up"},
	} {
		c, err := f.ask(t, f.agent, tc.details)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if c.Request.Outcome != tc.outcome {
			t.Errorf("%s: outcome %s, want %s", tc.name, c.Request.Outcome, tc.outcome)
		}
	}
}

// TestUserCodeLockout: five wrong user codes lock the code; then even the
// right one is refused until the lock runs out, and a right code resets the
// count.
func TestUserCodeLockout(t *testing.T) {
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
	if err := try("2468"); err != nil {
		t.Fatalf("right code: %v", err)
	}
	for i := range 5 {
		var ref *Refusal
		if err := try("0000"); !errors.As(err, &ref) || ref.Code != CodeInvalidUserCode {
			t.Fatalf("wrong code %d: %v", i+1, err)
		}
	}
	var ref *Refusal
	if err := try("2468"); !errors.As(err, &ref) || ref.Code != CodeInvalidUserCode || !strings.Contains(ref.Description, "locked") {
		t.Fatalf("right code while locked: %v, want invalid_user_code (locked)", err)
	}
	if _, err := f.db.Exec(`UPDATE users SET user_code_locked_until = now() - interval '1 second' WHERE email = 'bob@example.com'`); err != nil {
		t.Fatal(err)
	}
	if err := try("2468"); err != nil {
		t.Fatalf("right code after the lock: %v", err)
	}
	var failures int
	if err := f.db.Get(&failures, `SELECT user_code_failures FROM users WHERE email = 'bob@example.com'`); err != nil || failures != 0 {
		t.Fatalf("failures after a right code: %d (err %v), want 0", failures, err)
	}
}

// TestAgentRegistrationURLs: endpoints and keys that the server would call or
// trust are checked when the agent is registered.
func TestAgentRegistrationURLs(t *testing.T) {
	f := newRaceFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		n    NewAgent
		ok   bool
	}{
		{"https ping", NewAgent{DeliveryMode: DeliveryPing, NotifyURL: "https://agent.example.com/cb"}, true},
		{"loopback http ping", NewAgent{DeliveryMode: DeliveryPing, NotifyURL: "http://127.0.0.1:9000/cb"}, true},
		{"http ping", NewAgent{DeliveryMode: DeliveryPing, NotifyURL: "http://agent.example.com/cb"}, false},
		{"ftp ping", NewAgent{DeliveryMode: DeliveryPing, NotifyURL: "ftp://agent.example.com/cb"}, false},
		{"http JWKS URL", NewAgent{AuthMethod: AuthPrivateKeyJWT, JWKSURL: "http://keys.example.com/jwks"}, false},
		{"private key in JWKS", NewAgent{AuthMethod: AuthPrivateKeyJWT, JWKS: []byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","d":"870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE"}]}`)}, false},
		{"empty JWKS", NewAgent{AuthMethod: AuthPrivateKeyJWT, JWKS: []byte(`{"keys":[]}`)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.n
			n.Name, n.Domain, n.Types = "A", "a.example.com", []string{"payment_initiation"}
			_, _, err := f.store.CreateAgent(ctx, n)
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidInput)) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// velocityFromRequests is what the counters should hold: the last day's
// requests grouped as request_velocity_track counts them, for type t.
const velocityFromRequestsSQL = `
SELECT s.subject || '/' || velocity_bucket(r.created_at)::text || '/' || velocity_class(r.state, r.outcome)
	|| '/' || c.currency || '/' || velocity_shard(r.id) || '=' || count(*) || ':' || sum(c.amount) AS row
FROM requests r
CROSS JOIN LATERAL (VALUES ('agent:' || r.agent_id), ('user:' || r.user_id)) s(subject)
CROSS JOIN LATERAL (SELECT '', 0::numeric UNION ALL SELECT key, value::numeric FROM jsonb_each_text(r.amounts)) c(currency, amount)
WHERE $1 = ANY(r.types)
GROUP BY s.subject, velocity_bucket(r.created_at), velocity_class(r.state, r.outcome), c.currency, velocity_shard(r.id)
ORDER BY 1`

const velocityCountersSQL = `
SELECT subject || '/' || bucket::text || '/' || class || '/' || currency || '/' || shard || '=' || n || ':' || amount AS row
FROM request_velocity WHERE type = $1 AND n <> 0 ORDER BY 1`

// TestVelocityCountedOnlyWhereRead: a policy whose rules never read
// recent for a type keeps no counters for it (the auto-allowed flow writes
// none); publishing one that reads it rebuilds them from the requests made
// meanwhile, and from then on the trigger keeps them exact through
// admissions and decisions; one that stops reading stops the counting.
func TestVelocityCountedOnlyWhereRead(t *testing.T) {
	f := newRaceFixture(t)
	ctx := context.Background()
	noRecent := []byte("types:\n  payment_initiation:\n    - {id: small, when: \"amount(details.instructedAmount) <= 100\", outcome: allow, reason: Small}\n" +
		"    - {id: rest, when: \"true\", outcome: approve, reason: Approval needed}\n")
	counters := func() []string {
		var rows []string
		if err := f.store.db.SelectContext(ctx, &rows, velocityCountersSQL, "payment_initiation"); err != nil {
			t.Fatal(err)
		}
		return rows
	}
	expected := func() []string {
		var rows []string
		if err := f.store.db.SelectContext(ctx, &rows, velocityFromRequestsSQL, "payment_initiation"); err != nil {
			t.Fatal(err)
		}
		return rows
	}
	if _, err := f.svc.Policies().Apply(ctx, "no-recent.yaml", noRecent); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if c, err := f.ask(t, f.agent, payment(fmt.Sprintf("%d.00", 10+i), "EUR")); err != nil || c.Request.Outcome != "allow" {
			t.Fatalf("payment %d: %v %v, want allow", i, c.Request.Outcome, err)
		}
	}
	pending, err := f.ask(t, f.agent, payment("500.00", "EUR"))
	if err != nil || pending.Request.State != StatePending {
		t.Fatalf("large payment: %+v %v, want pending", pending.Request.State, err)
	}
	if got := counters(); len(got) != 0 {
		t.Fatalf("counters kept for a type no rule reads recent of: %v", got)
	}

	// The demo policy reads recent for payments: the counters are rebuilt.
	f.applyDemoPolicy(t)
	var body string
	if err := f.store.db.GetContext(ctx, &body, `SELECT body::text FROM audit_events WHERE kind = $1 ORDER BY id DESC LIMIT 1`, KindVelocityCounting); err != nil {
		t.Fatalf("no %s event: %v", KindVelocityCounting, err)
	}
	if !strings.Contains(body, `"after": ["payment_initiation"]`) {
		t.Errorf("%s event body %s, want payment_initiation counted after", KindVelocityCounting, body)
	}
	if got, want := counters(), expected(); !slices.Equal(got, want) || len(want) == 0 {
		t.Fatalf("counters after the publish:\n%v\nwant (from the requests):\n%v", got, want)
	}
	// Kept exact from then on: an admission and a decision.
	if _, err := f.ask(t, f.agent, payment("20.00", "EUR")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Review(ctx, pending.Request.ID, Reviewer{UserID: f.user.ID}, ReviewInput{Verdict: VerdictDeny}); err != nil {
		t.Fatal(err)
	}
	if got, want := counters(), expected(); !slices.Equal(got, want) {
		t.Fatalf("counters after an admission and a decision:\n%v\nwant (from the requests):\n%v", got, want)
	}

	// A policy that stops reading recent stops the counting (the counters
	// left age out); reading it again rebuilds them, the requests made
	// meanwhile included.
	if _, err := f.svc.Policies().Apply(ctx, "no-recent.yaml", noRecent); err != nil {
		t.Fatal(err)
	}
	before := counters()
	if _, err := f.ask(t, f.agent, payment("30.00", "EUR")); err != nil {
		t.Fatal(err)
	}
	if got := counters(); !slices.Equal(got, before) {
		t.Fatalf("a request counted after the policy stopped reading recent:\n%v\nwas:\n%v", got, before)
	}
	f.applyDemoPolicy(t)
	if got, want := counters(), expected(); !slices.Equal(got, want) {
		t.Fatalf("counters after reading recent again:\n%v\nwant (from the requests):\n%v", got, want)
	}
}

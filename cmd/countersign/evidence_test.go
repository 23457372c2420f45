package main

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/internal/pgtest"
	"github.com/countersign/countersign/internal/softauthn"
)

// runCLI runs the binary and returns its stdout, stderr and exit status.
func runCLI(t *testing.T, environ []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = environ
	cmd.Dir = "../.."
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &exit):
		return stdout.String(), stderr.String(), exit.ExitCode()
	}
	t.Fatalf("countersign %s: %v", strings.Join(args, " "), err)
	return "", "", 0
}

// evidenceFixture is a database with a step-up request approved with a
// passkey (the software authenticator's), its evidence stored by
// Service.Review exactly as the approver pages store it.
type evidenceFixture struct {
	db      *sqlx.DB
	env     []string
	request approvals.Request
	user    approvals.User
	other   approvals.User // a second user with a passkey of their own
	authn   *softauthn.Authenticator
}

func newEvidenceFixture(t *testing.T) evidenceFixture {
	t.Helper()
	conf := pgtest.NewConfig(t)
	db, err := sqlx.Connect("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	store := approvals.NewStore(db)
	types := approvals.NewTypeStore(store)
	if _, err := types.Apply(ctx, demoTypes(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := approvals.NewPolicyStore(store).Apply(ctx, "policy.yaml", demo.Policy()); err != nil {
		t.Fatal(err)
	}
	f := evidenceFixture{db: db, env: env("DATABASE_URL=" + conf.URL())}
	if f.user, err = store.CreateUser(ctx, approvals.NewUser{Email: "alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	if f.other, err = store.CreateUser(ctx, approvals.NewUser{Email: "mallory@example.com"}); err != nil {
		t.Fatal(err)
	}
	agent, _, err := store.CreateAgent(ctx, approvals.NewAgent{Name: "Invoice bot", Domain: "bot.example.com", Types: []string{"payment_initiation"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.CreateResourceServer(ctx, approvals.NewResourceServer{Name: "Payments", Audience: "https://pay.example.com",
		Types: []string{"payment_initiation"}}); err != nil {
		t.Fatal(err)
	}
	svc := approvals.NewService(store, types, nil, approvals.Config{Issuer: "https://countersign.test", KEK: []byte(strings.Repeat("k", 32))})
	// The demo policy asks for a passkey above 10,000.
	c, err := svc.Authorize(ctx, agent, approvals.AuthRequest{Scope: "openid", LoginHint: "alice@example.com",
		AuthorizationDetails: []byte(`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"25000.00"},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}]`)})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Request.StepUp {
		t.Fatalf("the request needs no step-up: %+v", c.Request)
	}
	if f.authn, err = softauthn.NewES256(); err != nil {
		t.Fatal(err)
	}
	otherKey, err := softauthn.NewES256()
	if err != nil {
		t.Fatal(err)
	}
	for _, pk := range []struct {
		a    *softauthn.Authenticator
		user string
	}{{f.authn, f.user.ID}, {otherKey, f.other.ID}} {
		if _, err := db.Exec(`INSERT INTO passkeys (credential_id, public_key, user_id, backup_eligible, name) VALUES ($1, $2, $3, false, 'Test key')`,
			pk.a.CredentialID, pk.a.PublicKey, pk.user); err != nil {
			t.Fatal(err)
		}
	}

	nonce := []byte("a 32-byte nonce from the server.")
	as, err := f.authn.Get(approvals.StepUpChallenge(c.Request.ID, c.Request.DetailsHash, nonce),
		softauthn.Options{RPID: "countersign.test", Origin: "https://countersign.test"})
	if err != nil {
		t.Fatal(err)
	}
	ev := &approvals.StepUpEvidence{RequestID: c.Request.ID, UserID: f.user.ID, DetailsHash: c.Request.DetailsHash,
		CredentialID: f.authn.CredentialID, AuthenticatorData: as.AuthenticatorData, ClientDataJSON: as.ClientDataJSON,
		Signature: as.Signature, Nonce: nonce}
	if f.request, err = svc.Review(ctx, c.Request.ID, approvals.Reviewer{UserID: f.user.ID},
		approvals.ReviewInput{Verdict: approvals.VerdictApprove, Evidence: ev}); err != nil {
		t.Fatal(err)
	}
	if f.request.State != approvals.StateApproved {
		t.Fatalf("after the step-up approval the request is %s", f.request.State)
	}
	return f
}

// TestEvidenceVerify: the evidence of a step-up approval verifies, each
// check printed; each change to what is stored — the request's or the
// evidence's details hash, the nonce, the signature, the credential id, the
// passkey's owner — fails, naming the check it fails, with exit status 1.
func TestEvidenceVerify(t *testing.T) {
	f := newEvidenceFixture(t)
	id := f.request.ID

	out, stderr, code := runCLI(t, f.env, "evidence", "verify", id)
	if code != 0 {
		t.Fatalf("exit %d, want 0\n%s%s", code, out, stderr)
	}
	for _, want := range []string{"✓ credential", "✓ challenge", "✓ origin", "https://countersign.test", "✓ rp id",
		"✓ user verified", "✓ signature", "✓ passkey owner", "✓ request", "verifies; amr hwk user", "All 1 verify."} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "✗") {
		t.Errorf("a check failed:\n%s", out)
	}

	var rep struct {
		RequestID string `json:"request_id"`
		RPID      string `json:"rp_id"`
		OK        bool   `json:"ok"`
		Error     string `json:"error"`
		Evidence  []struct {
			UserID string                    `json:"user_id"`
			OK     bool                      `json:"ok"`
			AMR    []string                  `json:"amr"`
			Checks []approvals.EvidenceCheck `json:"checks"`
		} `json:"evidence"`
	}
	out, _, code = runCLI(t, f.env, "evidence", "verify", "--json", id) // the id after the flags
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
		t.Fatalf("--json: exit %d, %v\n%s", code, err, out)
	}
	if !rep.OK || rep.RequestID != id || rep.RPID != "countersign.test" || len(rep.Evidence) != 1 || !rep.Evidence[0].OK ||
		rep.Evidence[0].UserID != f.user.ID || len(rep.Evidence[0].Checks) != 14 || strings.Join(rep.Evidence[0].AMR, " ") != "hwk user" {
		t.Fatalf("--json report: %+v", rep)
	}

	for _, tc := range []struct {
		name    string
		tamper  string // an UPDATE with $1 the request id
		restore string
		check   string
		detail  string
	}{
		{"request's details hash", `UPDATE requests SET details_hash = 'x' || details_hash WHERE id = $1`,
			`UPDATE requests SET details_hash = substr(details_hash, 2) WHERE id = $1`,
			approvals.CheckRequest, "is not the"},
		{"evidence's details hash", `UPDATE step_up_evidence SET details_hash = 'x' || details_hash WHERE request_id = $1`,
			`UPDATE step_up_evidence SET details_hash = substr(details_hash, 2) WHERE request_id = $1`,
			approvals.CheckChallenge, "does not match the request's id, details hash and nonce"},
		{"nonce", `UPDATE step_up_evidence SET nonce = nonce || '\x00'::bytea WHERE request_id = $1`,
			`UPDATE step_up_evidence SET nonce = substring(nonce from 1 for length(nonce) - 1) WHERE request_id = $1`,
			approvals.CheckChallenge, "does not match"},
		{"signature", `UPDATE step_up_evidence SET signature = set_byte(signature, length(signature) - 1, get_byte(signature, length(signature) - 1) # 1) WHERE request_id = $1`,
			`UPDATE step_up_evidence SET signature = set_byte(signature, length(signature) - 1, get_byte(signature, length(signature) - 1) # 1) WHERE request_id = $1`,
			approvals.CheckSignature, "does not verify with the passkey's public key"},
		{"credential id", `UPDATE step_up_evidence SET credential_id = credential_id || '\x00'::bytea WHERE request_id = $1`,
			`UPDATE step_up_evidence SET credential_id = substring(credential_id from 1 for length(credential_id) - 1) WHERE request_id = $1`,
			approvals.CheckCredential, "no passkey has credential id"},
		{"credential id of another user's passkey",
			`UPDATE step_up_evidence SET credential_id = (SELECT credential_id FROM passkeys p JOIN users u ON u.id = p.user_id WHERE u.email = 'mallory@example.com') WHERE request_id = $1`,
			`UPDATE step_up_evidence SET credential_id = (SELECT credential_id FROM passkeys p JOIN users u ON u.id = p.user_id WHERE u.email = 'alice@example.com') WHERE request_id = $1`,
			approvals.CheckSignature, "does not verify"},
		{"passkey's owner",
			`UPDATE passkeys SET user_id = (SELECT id FROM users WHERE email = 'mallory@example.com') WHERE credential_id = (SELECT credential_id FROM step_up_evidence WHERE request_id = $1)`,
			`UPDATE passkeys SET user_id = (SELECT id FROM users WHERE email = 'alice@example.com') WHERE credential_id = (SELECT credential_id FROM step_up_evidence WHERE request_id = $1)`,
			approvals.CheckPasskeyOwner, "not " + f.user.ID + "'s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.db.Exec(tc.tamper, id); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if _, err := f.db.Exec(tc.restore, id); err != nil {
					t.Fatal(err)
				}
			})
			out, stderr, code := runCLI(t, f.env, "evidence", "verify", id)
			if code != 1 {
				t.Fatalf("exit %d, want 1\n%s%s", code, out, stderr)
			}
			want := "fails its " + tc.check + " check: "
			if !strings.Contains(stderr, want) || !strings.Contains(stderr, tc.detail) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("stderr %q, want one line with %q and %q", stderr, want, tc.detail)
			}
			if !strings.Contains(out, "✗ "+tc.check) {
				t.Errorf("output does not mark %s failed:\n%s", tc.check, out)
			}
			out, _, code = runCLI(t, f.env, "evidence", "verify", id, "--json")
			if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || rep.OK || !strings.Contains(rep.Error, want) {
				t.Fatalf("--json: exit %d, %v, %+v", code, err, rep)
			}
		})
	}

	// After every restore the evidence verifies again.
	if out, stderr, code := runCLI(t, f.env, "evidence", "verify", id); code != 0 {
		t.Fatalf("after the restores: exit %d\n%s%s", code, out, stderr)
	}
}

// TestEvidenceVerifyRefusals: a request without evidence, an unknown
// request, a malformed id, a missing id and a missing issuer each get one
// clear line, with exit status 1 for what the database says and 2 for
// usage errors.
func TestEvidenceVerifyRefusals(t *testing.T) {
	f := newEvidenceFixture(t)
	// The request without its evidence (and the review that held it).
	id := f.request.ID
	if _, err := f.db.Exec(`DELETE FROM reviews WHERE request_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec(`DELETE FROM step_up_evidence WHERE request_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	noIssuer := slicesWithout(f.env, "COUNTERSIGN_ISSUER=")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"no evidence", f.env, []string{id}, 1, "has no step-up evidence"},
		{"unknown request", f.env, []string{"00000000-0000-4000-8000-000000000000"}, 1, "there is no request 00000000-0000-4000-8000-000000000000"},
		{"not a UUID", f.env, []string{"req-1"}, 2, "a request id is a UUID"},
		{"no request id", f.env, []string{"--json"}, 2, "want a REQUEST_ID"},
		{"no issuer", noIssuer, []string{id}, 2, "no issuer: set --issuer (COUNTERSIGN_ISSUER)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := runCLI(t, tc.env, append([]string{"evidence", "verify"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("exit %d, stderr %q; want exit %d and one line with %q\n%s", code, stderr, tc.code, tc.want, out)
			}
		})
	}
}

// slicesWithout is environ without the variables that start with prefix.
func slicesWithout(environ []string, prefix string) []string {
	var out []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	return out
}

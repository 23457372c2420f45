package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/internal/pgtest"
)

// cli runs the real binary against databaseURL and returns stdout.
func cli(t *testing.T, databaseURL string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = env("DATABASE_URL="+databaseURL, testKEK)
	cmd.Dir = "../.."
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("countersign %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// TestTypesApplyIdempotent: applying the demo types twice changes nothing the
// second time.
func TestTypesApplyIdempotent(t *testing.T) {
	url := pgtest.NewConfig(t).URL()
	first := cli(t, url, "types", "apply", "-f", "examples/demo/types")
	for _, name := range []string{"payment_initiation", "database_operation", "code_merge", "email_send"} {
		if !strings.Contains(first, "created   "+name+" (version 1)") {
			t.Errorf("first apply does not report %s created:\n%s", name, first)
		}
	}
	second := cli(t, url, "types", "apply", "-f", "examples/demo/types")
	if !strings.Contains(second, "no change") || strings.Contains(second, "created") || strings.Contains(second, "updated") {
		t.Fatalf("second apply reports a change:\n%s", second)
	}
	var changes []struct{ Name, Action string }
	if err := json.Unmarshal([]byte(cli(t, url, "types", "apply", "-f", "examples/demo/types/code_merge.yaml", "--json")), &changes); err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Action != "unchanged" {
		t.Fatalf("third apply: %+v", changes)
	}
}

// TestAdminJSON: every create command prints the created object with its
// one-time secret as one JSON object.
func TestAdminJSON(t *testing.T) {
	url := pgtest.NewConfig(t).URL()
	cli(t, url, "types", "apply", "-f", "examples/demo/types")

	var agent map[string]any
	out := cli(t, url, "agents", "add", "--name", "Invoice bot", "--domain", "bot.example.com",
		"--types", "payment_initiation,email_send", "--label", "team=finance", "--json")
	if err := json.Unmarshal([]byte(out), &agent); err != nil {
		t.Fatalf("agents add --json: %v\n%s", err, out)
	}
	for _, k := range []string{"client_id", "client_secret", "name", "domain", "types", "labels", "token_endpoint_auth_method"} {
		if _, ok := agent[k]; !ok {
			t.Errorf("agents add --json lacks %q: %s", k, out)
		}
	}
	if !strings.HasPrefix(agent["client_id"].(string), "agt_") || len(agent["client_secret"].(string)) != 43 {
		t.Errorf("client_id/secret look wrong: %v / %v", agent["client_id"], agent["client_secret"])
	}
	if _, ok := agent["secret_hash"]; ok {
		t.Error("the secret hash is printed")
	}

	var user map[string]any
	if err := json.Unmarshal([]byte(cli(t, url, "users", "add", "--email", "Bob@Example.com", "--role", "admin", "--group", "sre", "--json")), &user); err != nil {
		t.Fatal(err)
	}
	if user["email"] != "bob@example.com" || !strings.HasPrefix(user["id"].(string), "usr_") {
		t.Errorf("users add --json: %v", user)
	}

	var rs map[string]any
	if err := json.Unmarshal([]byte(cli(t, url, "resources", "add", "--name", "Payments", "--audience", "https://pay.example.com", "--json")), &rs); err != nil {
		t.Fatal(err)
	}
	if rs["audience"] != "https://pay.example.com" || rs["client_secret"] == "" || !strings.HasPrefix(rs["client_id"].(string), "rs_") {
		t.Errorf("resources add --json: %v", rs)
	}

	// The secret shown is the one stored (hashed): rotate-secret prints a new one.
	var rotated map[string]string
	if err := json.Unmarshal([]byte(cli(t, url, "agents", "rotate-secret", "--client-id", agent["client_id"].(string), "--json")), &rotated); err != nil {
		t.Fatal(err)
	}
	if rotated["client_secret"] == "" || rotated["client_secret"] == agent["client_secret"] {
		t.Errorf("rotate-secret: %v", rotated)
	}
	list := cli(t, url, "agents", "list")
	if !strings.Contains(list, "Invoice bot") || !strings.Contains(list, "active") {
		t.Errorf("agents list:\n%s", list)
	}
	cli(t, url, "agents", "suspend", "--client-id", agent["client_id"].(string))
	if list := cli(t, url, "agents", "list"); !strings.Contains(list, "suspended") {
		t.Errorf("after suspend:\n%s", list)
	}
}

// TestAdminRefusesUnknownType: an agent cannot be registered for a type that
// does not exist; the error is one line and the exit status 2.
func TestAdminRefusesUnknownType(t *testing.T) {
	url := pgtest.NewConfig(t).URL()
	cmd := exec.Command(binary, "agents", "add", "--name", "x", "--domain", "x.example.com", "--types", "wire_transfer")
	cmd.Env = env("DATABASE_URL="+url, testKEK)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("err = %v, want exit status 2\n%s", err, out)
	}
	if !strings.Contains(string(out), `request type "wire_transfer" is not registered`) || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Fatalf("output:\n%s", out)
	}
}

// TestPolicyCLI: apply is idempotent and prints a diff; a bad file names the
// file, rule and position and publishes nothing; dry-run and history print
// what they should.
func TestPolicyCLI(t *testing.T) {
	url := pgtest.NewConfig(t).URL()
	cli(t, url, "types", "apply", "-f", "examples/demo/types")
	first := cli(t, url, "policy", "apply", "-f", "examples/demo/policy.yaml")
	if !strings.Contains(first, "published version 1") || !strings.Contains(first, "+ payment_initiation: 6 rules") {
		t.Fatalf("first apply:\n%s", first)
	}
	if again := cli(t, url, "policy", "apply", "-f", "examples/demo/policy.yaml"); !strings.Contains(again, "no change: version 1 is live") {
		t.Fatalf("second apply:\n%s", again)
	}

	dir := t.TempDir()
	bad := dir + "/bad.yaml"
	writeFile(t, bad, "types:\n  payment_initiation:\n    - id: typo\n      when: amount(details.instructedAmount) >> 5\n      outcome: allow\n      reason: x\n")
	cmd := exec.Command(binary, "policy", "apply", "-f", bad)
	cmd.Env = env("DATABASE_URL="+url, testKEK)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bad.yaml:4:") || !strings.Contains(string(out), "typo") ||
		!strings.Contains(string(out), "nothing was published") {
		t.Fatalf("bad policy: err %v\n%s", err, out)
	}

	changed := dir + "/policy.yaml"
	src := strings.Replace(string(readFile(t, "../../examples/demo/policy.yaml")), "> 10000", "> 5000", 1)
	writeFile(t, changed, src)
	diff := cli(t, url, "policy", "apply", "-f", changed)
	if !strings.Contains(diff, "published version 2") || !strings.Contains(diff, "~ payment_initiation/large_payment") {
		t.Fatalf("changed apply:\n%s", diff)
	}

	details := dir + "/sample.json"
	writeFile(t, details, `[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"7500.00"},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}},
	{"type":"database_operation","operation":"SELECT","database":"prod","table":"t","estimated_rows":1,"statement_sha256":"`+strings.Repeat("ab", 32)+`"}]`)
	dry := cli(t, url, "policy", "dry-run", "-f", changed, "--details", details)
	for _, want := range []string{"step_up  large_payment", "allow    read_only", "request", "Payments over 10,000 need a passkey"} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry-run lacks %q:\n%s", want, dry)
		}
	}
	var dryJSON map[string]any
	if err := json.Unmarshal([]byte(cli(t, url, "policy", "dry-run", "-f", changed, "--details", details, "--json")), &dryJSON); err != nil {
		t.Fatal(err)
	}
	elements, _ := dryJSON["elements"].([]any)
	request, _ := dryJSON["request"].(map[string]any)
	if len(elements) != 2 || request == nil {
		t.Fatalf("dry-run --json: %v", dryJSON)
	}
	el0, _ := elements[0].(map[string]any)
	if el0["index"] != 0.0 || el0["type"] != "payment_initiation" || el0["outcome"] != "step_up" || el0["rule"] != "large_payment" {
		t.Errorf("dry-run --json element 0: %v", el0)
	}
	if request["outcome"] != "step_up" || request["step_up"] != true || request["rule"] != "large_payment" {
		t.Errorf("dry-run --json request: %v", request)
	}
	hist := cli(t, url, "policy", "history")
	if !strings.Contains(hist, "2 (live)") || !strings.Contains(hist, "\n1 ") {
		t.Fatalf("history:\n%s", hist)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeysRotate: a rotation publishes next keys that become current later;
// rotating again replaces them.
func TestKeysRotate(t *testing.T) {
	url := pgtest.NewConfig(t).URL()
	cli(t, url, "migrate")
	before := cli(t, url, "keys", "list", "--json")
	var first []approvals.KeyInfo
	out := cli(t, url, "keys", "rotate", "--json")
	if err := json.Unmarshal([]byte(out), &first); err != nil || len(first) != 2 {
		t.Fatalf("keys rotate --json: %v\n%s", err, out)
	}
	for _, k := range first {
		if k.Status != approvals.KeyNext || k.ActivatesAt.Sub(k.CreatedAt) < approvals.KeyPublishDelay {
			t.Fatalf("rotated key %+v: want next, active no sooner than %s after its creation", k, approvals.KeyPublishDelay)
		}
	}
	cli(t, url, "keys", "rotate")
	list := cli(t, url, "keys", "list")
	if strings.Count(list, " next ") != 2 || strings.Count(list, " retired ") != 2 || strings.Count(list, " current ") != 2 {
		t.Fatalf("after two rotations want two next, the two first next retired, the current kept:\nbefore %s\n%s", before, list)
	}
}

// TestKeysRotateGuard: a second immediate rotation within a token lifetime
// is refused (it would retire keys that signed live tokens) unless forced.
func TestKeysRotateGuard(t *testing.T) {
	url := pgtest.NewConfig(t).URL()
	if out := cli(t, url, "keys", "rotate", "--now"); !strings.Contains(out, "current") {
		t.Fatalf("first rotation:\n%s", out)
	}
	cmd := exec.Command(binary, "keys", "rotate", "--now")
	cmd.Env = env("DATABASE_URL="+url, testKEK)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "use --force") {
		t.Fatalf("second rotation at once: err %v\n%s", err, out)
	}
	if out := cli(t, url, "keys", "rotate", "--now", "--force"); !strings.Contains(out, "current") {
		t.Fatalf("forced rotation:\n%s", out)
	}
	if list := cli(t, url, "keys", "list"); strings.Count(list, "retired") != 2 {
		t.Fatalf("after the forced rotation, want the two first keys retired:\n%s", list)
	}
}

// TestPolicyApplyWarnsUnregisteredType: rules for a type that is not
// registered (a typo, most likely) are published with a warning naming it.
func TestPolicyApplyWarnsUnregisteredType(t *testing.T) {
	url := pgtest.NewConfig(t).URL()
	cli(t, url, "types", "apply", "-f", "examples/demo/types")
	path := t.TempDir() + "/p.yaml"
	writeFile(t, path, "types:\n  payment_initation:\n    - id: all\n      outcome: approve\n      reason: x\n")
	cmd := exec.Command(binary, "policy", "apply", "-f", path)
	cmd.Env = env("DATABASE_URL="+url, testKEK)
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "warning: "+path+": type payment_initation is not registered") {
		t.Fatalf("err %v, output:\n%s", err, out)
	}
	if strings.Contains(string(out), "payment_initiation is not") {
		t.Fatalf("warned about a registered type:\n%s", out)
	}
}

// TestDomainError: invalid input and conflicts from the domain are usage
// errors (exit 2), told by their type; an error that merely quotes their
// text, such as a value an admin typed, is not.
func TestDomainError(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		usage bool
	}{
		{"invalid input", fmt.Errorf("approvals: create user: %w: %q is not an email address", approvals.ErrInvalidInput, "bob"), true},
		{"conflict", fmt.Errorf("approvals: create user: %w (users_email_key)", approvals.ErrConflict), true},
		{"not found quoting the invalid-input text", fmt.Errorf("approvals: agent %q: %w", approvals.ErrInvalidInput.Error(), approvals.ErrNotFound), false},
		{"database error quoting the conflict text", fmt.Errorf("approvals: create agent: pq: %s", approvals.ErrConflict.Error()), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := domainError(tc.err)
			if got := errors.As(err, new(errUsage)); got != tc.usage {
				t.Fatalf("domainError(%v) is a usage error: %v, want %v", tc.err, got, tc.usage)
			}
			if !errors.Is(err, tc.err) && !tc.usage {
				t.Errorf("domainError(%v) = %v, want the error itself", tc.err, err)
			}
		})
	}
}

// TestAdminWithoutKEK: the admin commands that touch no key material run
// without a key-encryption key outside dev mode, and create no signing key;
// keys rotate, which seals keys, still refuses to run without one.
func TestAdminWithoutKEK(t *testing.T) {
	conf := pgtest.NewConfig(t)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(binary, args...)
		cmd.Env = env("DATABASE_URL=" + conf.URL())
		cmd.Dir = "../.."
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, args := range [][]string{
		{"types", "apply", "-f", "examples/demo/types"},
		{"users", "add", "--email", "bob@example.com", "--user-code", "2468"},
		{"users", "list"},
		{"agents", "add", "--name", "Bot", "--domain", "bot.example.com", "--types", "payment_initiation"},
		{"agents", "list"},
		{"resources", "add", "--name", "API", "--audience", "https://api.example.com"},
		{"policy", "apply", "-f", "examples/demo/policy.yaml"},
		{"policy", "history"},
		{"keys", "list"},
	} {
		if out, err := run(args...); err != nil {
			t.Fatalf("countersign %s without a KEK: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	db, err := sqlx.Connect("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var keys int
	if err := db.Get(&keys, `SELECT count(*) FROM signing_keys`); err != nil || keys != 0 {
		t.Fatalf("%d signing keys (err %v) after admin commands without a KEK, want 0", keys, err)
	}

	out, err := run("keys", "rotate")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(out, "no key-encryption key") {
		t.Fatalf("keys rotate without a KEK: %v\n%s", err, out)
	}
}

// TestUsersInvite: users invite creates the user if needed and prints a
// one-time enrollment link whose secret the database keeps only hashed.
func TestUsersInvite(t *testing.T) {
	conf := pgtest.NewConfig(t)
	url := conf.URL()
	var out map[string]any
	raw := cli(t, url, "users", "invite", "--email", "Carol@Example.com", "--name", "Carol", "--issuer", "https://countersign.test", "--json")
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("users invite --json: %v\n%s", err, raw)
	}
	if len(out) != 4 || out["email"] != "carol@example.com" || !strings.HasPrefix(out["user_id"].(string), "usr_") {
		t.Fatalf("users invite --json: %s", raw)
	}
	link := out["enrollment_url"].(string)
	token, ok := strings.CutPrefix(link, "https://countersign.test/enroll/")
	if !ok || len(token) != 43 {
		t.Fatalf("enrollment_url %q", link)
	}
	exp, err := time.Parse(time.RFC3339, out["expires_at"].(string))
	if err != nil || time.Until(exp) < 23*time.Hour || time.Until(exp) > 25*time.Hour {
		t.Errorf("expires_at %v (%v), want in 24 h", out["expires_at"], err)
	}
	db := sqlx.MustConnect("postgres", url)
	defer db.Close()
	store := approvals.NewStore(db)
	u, err := store.LinkUser(context.Background(), approvals.LinkEnroll, token)
	if err != nil || u.ID != out["user_id"] {
		t.Fatalf("the printed link is not the user's: %v %v", u.ID, err)
	}
	var leaks int
	if err := db.Get(&leaks, `SELECT (SELECT count(*) FROM user_links WHERE encode(token_hash, 'escape') LIKE '%' || $1 || '%')
		+ (SELECT count(*) FROM audit_events WHERE body::text LIKE '%' || $1 || '%')`, token); err != nil || leaks != 0 {
		t.Errorf("the link's secret is stored in clear (%d rows, %v)", leaks, err)
	}
	// Inviting again keeps the user and makes a new link; both work until used.
	again := cli(t, url, "users", "invite", "--email", "carol@example.com", "--issuer", "https://countersign.test")
	if !strings.Contains(again, "https://countersign.test/enroll/") || strings.Contains(again, token) {
		t.Errorf("second invite: %s", again)
	}
	if _, err := store.ConsumeLink(context.Background(), approvals.LinkEnroll, token); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ConsumeLink(context.Background(), approvals.LinkEnroll, token); !errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("a spent link was spent again: %v", err)
	}
}

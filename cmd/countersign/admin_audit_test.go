package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/internal/pgtest"
)

// inProcess runs the countersign command line in this process against
// databaseURL, as main would, and returns stdout, stderr and the exit code.
func inProcess(t *testing.T, databaseURL string, args ...string) (string, string, int) {
	t.Helper()
	vars := map[string]string{"DATABASE_URL": databaseURL, "COUNTERSIGN_ISSUER": "https://countersign.test",
		"COUNTERSIGN_KEK": strings.TrimPrefix(testKEK, "COUNTERSIGN_KEK=")}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr, func(k string) string { return vars[k] })
	return stdout.String(), stderr.String(), code
}

// auditRow is an audit_events row as the admin tests read it.
type auditRow struct {
	ID      int64           `db:"id"`
	Kind    string          `db:"kind"`
	Actor   string          `db:"actor"`
	AgentID *string         `db:"agent_id"`
	UserID  *string         `db:"user_id"`
	Subject *string         `db:"subject"`
	Body    json.RawMessage `db:"body"`
}

func auditSince(t *testing.T, db *sqlx.DB, mark int64) []auditRow {
	t.Helper()
	var out []auditRow
	if err := db.Select(&out, `SELECT id, kind, actor, agent_id, user_id, subject, body FROM audit_events WHERE id > $1 ORDER BY id`, mark); err != nil {
		t.Fatal(err)
	}
	return out
}

func auditMark(t *testing.T, db *sqlx.DB) int64 {
	t.Helper()
	var id int64
	if err := db.Get(&id, `SELECT coalesce(max(id), 0) FROM audit_events`); err != nil {
		t.Fatal(err)
	}
	return id
}

// secretForms are the ways a secret or its hash could show in a JSON body.
func secretForms(b []byte) []string {
	return []string{hex.EncodeToString(b), base64.StdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b)}
}

// TestAdminCommandsAudit: every admin command that changes something leaves
// its audit rows — of the expected kinds, by admin:cli, about the object it
// changed, with before/after, and with no secret or secret hash in the body —
// and a command that fails, or only reads, leaves none.
func TestAdminCommandsAudit(t *testing.T) {
	conf := pgtest.NewConfig(t)
	url := conf.URL()
	db := sqlx.MustConnect("postgres", url)
	defer db.Close()
	dir := t.TempDir()
	badPolicy := filepath.Join(dir, "bad-policy.yaml")
	if err := os.WriteFile(badPolicy, []byte("types:\n  payment_initiation:\n    rules:\n      - name: x\n        when: 'details.amount >'\n        outcome: allow\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badType := filepath.Join(dir, "bad-type.yaml")
	if err := os.WriteFile(badType, []byte("name: broken\nschema: 42\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	details := filepath.Join(dir, "details.json")
	if err := os.WriteFile(details, []byte(`[{"type":"payment_initiation","instructedAmount":{"amount":"20.00","currency":"EUR"},"creditorName":"Alice","creditorAccount":{"iban":"DE89370400440532013000"}}]`), 0o600); err != nil {
		t.Fatal(err)
	}

	// State the cases share, filled in as they run.
	var agentID, userID string
	idOf := func(re string) func(string) string {
		return func(out string) string { return regexp.MustCompile(re).FindString(out) }
	}
	secretHash := func(table, id string) []string {
		var h []byte
		if err := db.Get(&h, `SELECT secret_hash FROM `+table+` WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		return secretForms(h)
	}

	tests := []struct {
		name string
		args func() []string
		exit int
		want map[string]int // kinds of the rows it writes
		// after runs once the command has: it may keep ids, and returns the
		// secrets no row may hold.
		after func(t *testing.T, out string, rows []auditRow) []string
	}{
		{"types apply", func() []string { return []string{"types", "apply", "-f", "../../examples/demo/types"} }, 0,
			map[string]int{approvals.KindTypeCreated: 4}, func(t *testing.T, _ string, rows []auditRow) []string {
				for _, r := range rows {
					if !strings.HasPrefix(deref(r.Subject), "type:") || !strings.Contains(string(r.Body), `"after"`) {
						t.Errorf("%s: subject %s, body %s", r.Kind, deref(r.Subject), r.Body)
					}
				}
				return nil
			}},
		{"types apply: unchanged", func() []string { return []string{"types", "apply", "-f", "../../examples/demo/types"} }, 0, nil, nil},
		{"types apply refused: invalid", func() []string { return []string{"types", "apply", "-f", badType} }, 2, nil, nil},
		{"policy apply", func() []string { return []string{"policy", "apply", "-f", "../../examples/demo/policy.yaml"} }, 0,
			// The demo policy has velocity rules: the types it counts change too.
			map[string]int{approvals.KindPolicyPublished: 1, approvals.KindVelocityCounting: 1}, func(t *testing.T, _ string, rows []auditRow) []string {
				for _, r := range rows {
					if b := string(r.Body); !strings.Contains(b, `"before"`) || !strings.Contains(b, `"after"`) ||
						r.Kind == approvals.KindPolicyPublished && deref(r.Subject) != "policy:1" {
						t.Errorf("%s subject %s body %s", r.Kind, deref(r.Subject), b)
					}
				}
				return nil
			}},
		{"policy apply refused: invalid", func() []string { return []string{"policy", "apply", "-f", badPolicy} }, 2, nil, nil},
		{"policy dry-run", func() []string {
			return []string{"policy", "dry-run", "-f", "../../examples/demo/policy.yaml", "--details", details}
		}, 0, nil, nil},
		{"policy history", func() []string { return []string{"policy", "history"} }, 0, nil, nil},
		{"agents add", func() []string {
			return []string{"agents", "add", "--name", "Invoice bot", "--domain", "bot.example.com", "--types", "payment_initiation", "--json"}
		}, 0, map[string]int{approvals.KindAgentCreated: 1}, func(t *testing.T, out string, rows []auditRow) []string {
			var got struct {
				ID     string `json:"client_id"`
				Secret string `json:"client_secret"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil || got.Secret == "" {
				t.Fatalf("agents add --json: %v\n%s", err, out)
			}
			agentID = got.ID
			if deref(rows[0].AgentID) != agentID || !strings.Contains(string(rows[0].Body), `"after"`) {
				t.Errorf("agent.created about %s: %s", deref(rows[0].AgentID), rows[0].Body)
			}
			return append(secretHash("agents", agentID), got.Secret)
		}},
		{"agents add refused: unknown type", func() []string {
			return []string{"agents", "add", "--name", "x", "--domain", "x.example.com", "--types", "wire_transfer"}
		}, 2, nil, nil},
		{"agents list", func() []string { return []string{"agents", "list"} }, 0, nil, nil},
		{"agents rotate-secret", func() []string { return []string{"agents", "rotate-secret", "--client-id", agentID, "--json"} }, 0,
			map[string]int{approvals.KindAgentSecretRotated: 1}, func(t *testing.T, out string, rows []auditRow) []string {
				old := secretHash("agents", agentID) // the new one now
				var got map[string]string
				if err := json.Unmarshal([]byte(out), &got); err != nil {
					t.Fatal(err)
				}
				b := string(rows[0].Body)
				if deref(rows[0].AgentID) != agentID || !strings.Contains(b, `"before"`) || !strings.Contains(b, `"after"`) {
					t.Errorf("agent.secret_rotated about %s: %s", deref(rows[0].AgentID), b)
				}
				return append(old, got["client_secret"])
			}},
		{"agents rotate-secret refused: unknown agent", func() []string { return []string{"agents", "rotate-secret", "--client-id", "agt_nobody"} }, 1, nil, nil},
		{"agents suspend", func() []string { return []string{"agents", "suspend", "--client-id", agentID} }, 0,
			map[string]int{approvals.KindAgentSuspended: 1}, func(t *testing.T, _ string, rows []auditRow) []string {
				if b := string(rows[0].Body); deref(rows[0].AgentID) != agentID || !strings.Contains(b, `"before": {"status": "active"}`) ||
					!strings.Contains(b, `"after": {"status": "suspended"}`) {
					t.Errorf("agent.suspended about %s: %s", deref(rows[0].AgentID), b)
				}
				return nil
			}},
		{"agents suspend refused: unknown agent", func() []string { return []string{"agents", "suspend", "--client-id", "agt_nobody"} }, 1, nil, nil},
		{"agents resume", func() []string { return []string{"agents", "resume", "--client-id", agentID} }, 0,
			map[string]int{approvals.KindAgentResumed: 1}, nil},
		{"users add", func() []string {
			return []string{"users", "add", "--email", "bob@example.com", "--user-code", "97531", "--group", "sre", "--json"}
		}, 0, map[string]int{approvals.KindUserCreated: 1}, func(t *testing.T, out string, rows []auditRow) []string {
			userID = idOf(`usr_[A-Za-z0-9_-]+`)(out)
			var hash string
			if err := db.Get(&hash, `SELECT user_code_hash FROM users WHERE id = $1`, userID); err != nil {
				t.Fatal(err)
			}
			if deref(rows[0].UserID) != userID {
				t.Errorf("user.created about %s, want %s", deref(rows[0].UserID), userID)
			}
			return []string{hash, "97531"}
		}},
		{"users add refused: email taken", func() []string { return []string{"users", "add", "--email", "Bob@example.com"} }, 2, nil, nil},
		{"users invite", func() []string { return []string{"users", "invite", "--email", "carol@example.com", "--json"} }, 0,
			map[string]int{approvals.KindUserCreated: 1, approvals.KindUserInvited: 1}, func(t *testing.T, out string, rows []auditRow) []string {
				var got map[string]string
				if err := json.Unmarshal([]byte(out), &got); err != nil {
					t.Fatal(err)
				}
				token := got["enrollment_url"][strings.LastIndex(got["enrollment_url"], "/")+1:]
				var hash []byte
				if err := db.Get(&hash, `SELECT token_hash FROM user_links WHERE user_id = $1`, got["user_id"]); err != nil {
					t.Fatal(err)
				}
				return append(secretForms(hash), token)
			}},
		{"users invite refused: not an email", func() []string { return []string{"users", "invite", "--email", "not-an-email"} }, 2, nil, nil},
		{"users list", func() []string { return []string{"users", "list"} }, 0, nil, nil},
		{"users suspend", func() []string { return []string{"users", "suspend", "--user", "bob@example.com"} }, 0,
			map[string]int{approvals.KindUserSuspended: 1}, func(t *testing.T, _ string, rows []auditRow) []string {
				if b := string(rows[0].Body); deref(rows[0].UserID) != userID || !strings.Contains(b, `"after": {"status": "suspended"}`) {
					t.Errorf("user.suspended about %s: %s", deref(rows[0].UserID), b)
				}
				return nil
			}},
		{"users suspend refused: unknown user", func() []string { return []string{"users", "suspend", "--user", "nobody@example.com"} }, 1, nil, nil},
		{"users resume", func() []string { return []string{"users", "resume", "--user", userID} }, 0, map[string]int{approvals.KindUserResumed: 1}, nil},
		{"resources add", func() []string {
			return []string{"resources", "add", "--name", "Payments", "--audience", "https://pay.example.com", "--json"}
		}, 0, map[string]int{approvals.KindResourceCreated: 1}, func(t *testing.T, out string, rows []auditRow) []string {
			var got struct {
				ID     string `json:"client_id"`
				Secret string `json:"client_secret"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil || got.Secret == "" {
				t.Fatalf("resources add --json: %v\n%s", err, out)
			}
			if deref(rows[0].Subject) != "resource_server:"+got.ID {
				t.Errorf("resource_server.created subject %s", deref(rows[0].Subject))
			}
			return append(secretHash("resource_servers", got.ID), got.Secret)
		}},
		{"resources add refused: relative audience", func() []string { return []string{"resources", "add", "--name", "x", "--audience", "pay"} }, 2, nil, nil},
		{"resources list", func() []string { return []string{"resources", "list"} }, 0, nil, nil},
		{"keys list", func() []string { return []string{"keys", "list"} }, 0, nil, nil},
		{"keys rotate", func() []string { return []string{"keys", "rotate"} }, 0,
			// The first command with the KEK makes the current keys (by the
			// server), then the rotation prepares the next ones.
			map[string]int{approvals.KindKeyCreated: 4}, func(t *testing.T, _ string, rows []auditRow) []string {
				byCLI := 0
				for _, r := range rows {
					if r.Actor == approvals.ActorCLI {
						byCLI++
					}
					if !strings.HasPrefix(deref(r.Subject), "key:") || strings.Contains(string(r.Body), "private") {
						t.Errorf("%s: subject %s body %s", r.Kind, deref(r.Subject), r.Body)
					}
				}
				if byCLI != 2 {
					t.Errorf("%d key events by the CLI, want 2 (one new key per algorithm)", byCLI)
				}
				return nil
			}},
		{"keys rotate again: the prepared keys retired", func() []string { return []string{"keys", "rotate"} }, 0,
			map[string]int{approvals.KindKeyCreated: 2, approvals.KindKeyRetired: 2}, nil},
		{"keys rotate --now", func() []string { return []string{"keys", "rotate", "--now", "--force"} }, 0,
			map[string]int{approvals.KindKeyCreated: 2, approvals.KindKeyRetired: 2, approvals.KindKeyDemoted: 2},
			func(t *testing.T, _ string, rows []auditRow) []string {
				for _, r := range rows {
					if r.Kind == approvals.KindKeyDemoted && !strings.Contains(string(r.Body), `"after": {"status": "previous"}`) {
						t.Errorf("key.demoted body %s", r.Body)
					}
				}
				return nil
			}},
		{"evidence verify refused: unknown request", func() []string {
			return []string{"evidence", "verify", "0b6f3c9e-1f5e-4c8a-9d7b-2a4e6c8f0a1b"}
		}, 1, nil, nil},
		{"requests list", func() []string { return []string{"requests", "list"} }, 0, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mark := auditMark(t, db)
			out, errOut, code := inProcess(t, url, tc.args()...)
			if code != tc.exit {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.exit, out, errOut)
			}
			rows := auditSince(t, db, mark)
			got := map[string]int{}
			for _, r := range rows {
				got[r.Kind]++
			}
			want := tc.want
			if want == nil {
				want = map[string]int{}
			}
			if !maps.Equal(got, want) {
				t.Fatalf("the command wrote rows %v, want %v", got, want)
			}
			for _, r := range rows {
				if r.Actor != approvals.ActorCLI && !(r.Kind == approvals.KindKeyCreated && r.Actor == approvals.ActorServer) {
					t.Errorf("%s by %s, want %s", r.Kind, r.Actor, approvals.ActorCLI)
				}
			}
			if tc.after == nil {
				return
			}
			for _, secret := range tc.after(t, out, rows) {
				if secret == "" {
					t.Fatal("an empty secret to look for")
				}
				for _, r := range rows {
					if strings.Contains(string(r.Body), secret) {
						t.Errorf("%s body holds a secret (%s…): %s", r.Kind, secret[:4], r.Body)
					}
				}
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

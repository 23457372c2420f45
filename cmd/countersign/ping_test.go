package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/rar"
)

// failpointsBinary builds countersign with the failpoints tag, once.
var failpointsBinary = sync.OnceValues(func() (string, error) {
	path := filepath.Join(filepath.Dir(binary), "countersign-failpoints")
	out, err := exec.Command("go", "build", "-tags", "failpoints", "-o", path, ".").CombinedOutput()
	if err != nil {
		return "", &buildError{err, out}
	}
	return path, nil
})

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string {
	return "go build -tags failpoints: " + e.err.Error() + "\n" + string(e.out)
}

// TestFailpointOnlyInTaggedBuild: the failpoint and its environment variable
// exist in the failpoints build and leave no trace in the normal one.
func TestFailpointOnlyInTaggedBuild(t *testing.T) {
	fp, err := failpointsBinary()
	if err != nil {
		t.Fatal(err)
	}
	normal, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	tagged, err := os.ReadFile(fp)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"ping-before-send", "COUNTERSIGN_FAILPOINT"} {
		if bytes.Contains(normal, []byte(s)) {
			t.Errorf("the normal binary contains %q", s)
		}
		if !bytes.Contains(tagged, []byte(s)) {
			t.Errorf("the failpoints binary lacks %q", s)
		}
	}
}

// TestPingSurvivesCrash is the crash test of ping delivery: the process that
// claimed the ping is SIGKILLed right before sending it; after a restart the
// ping arrives once, the request was decided once, and the token is issued
// once.
func TestPingSurvivesCrash(t *testing.T) {
	built := make(chan error, 1)
	go func() { _, err := failpointsBinary(); built <- err }()

	// The agent's notification endpoint: https on loopback, trusted by the
	// child processes through SSL_CERT_FILE, reachable through --ping-allow.
	var mu sync.Mutex
	var pings []*http.Request
	var bodies []string
	got := make(chan struct{}, 10)
	rc := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		pings, bodies = append(pings, r), append(bodies, string(b))
		mu.Unlock()
		got <- struct{}{}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rc.Close()
	received := func() int { mu.Lock(); defer mu.Unlock(); return len(pings) }
	certFile := trustFile(t, rc)
	sd := newServeDB(t, "policy.yaml", demo.Policy(),
		approvals.NewAgent{Name: "Ping agent", Domain: "agent.example.com", DeliveryMode: approvals.DeliveryPing, NotifyURL: rc.URL + "/cb"})
	conf, db, store, user, agent, secret := sd.conf, sd.db, sd.store, sd.user, sd.agent, sd.secret
	ctx := context.Background()
	kek := []byte("0123456789abcdef0123456789abcdef") // testKEK
	types := approvals.NewTypeStore(store)
	svc := approvals.NewService(store, types, nil, approvals.Config{KEK: kek})

	if err := <-built; err != nil {
		t.Fatal(err)
	}
	fp, _ := failpointsBinary()
	first := exec.Command(fp, "serve", "--addr", "127.0.0.1:0", "--ping-allow", "127.0.0.0/8")
	first.Env = env("DATABASE_URL="+conf.URL(), testKEK, "SSL_CERT_FILE="+certFile,
		"COUNTERSIGN_FAILPOINT=ping-before-send", "COUNTERSIGN_FAILPOINT_LEASE=2s")
	p1, addr := start(t, first)
	base := "http://" + addr

	form := url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"}, "client_notification_token": {"notify-me-4c1e"},
		"authorization_details": {`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"500.00"},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}]`}}
	status, body := postForm(t, base+"/bc-authorize", agent.ID, secret, form)
	if status != http.StatusOK {
		t.Fatalf("bc-authorize: %d %v", status, body)
	}
	authReqID := body["auth_req_id"].(string)
	approvalURL := body["approval_url"].(string)
	requestID := approvalURL[strings.LastIndex(approvalURL, "/")+1:]
	if _, err := svc.Review(ctx, requestID, approvals.Reviewer{UserID: user.ID}, approvals.ReviewInput{Verdict: approvals.VerdictApprove}); err != nil {
		t.Fatal(err)
	}
	decided, err := store.Request(ctx, requestID)
	if err != nil || decided.DecidedAt == nil {
		t.Fatalf("decided request: %+v, %v", decided, err)
	}

	// The worker claims the ping and stops at the failpoint; kill it there.
	waitFor(t, 15*time.Second, "the worker to reach the failpoint", func() bool {
		return strings.Contains(p1.logText(), "failpoint reached")
	})
	if err := first.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = p1.wait(t, 10*time.Second)
	var leased struct {
		Attempts int  `db:"attempts"`
		Leased   bool `db:"leased"`
	}
	if err := db.Get(&leased, `SELECT attempts, lease_until IS NOT NULL AS leased FROM outbox WHERE request_id = $1`, requestID); err != nil {
		t.Fatal(err)
	}
	if n := received(); n != 0 || leased.Attempts != 1 || !leased.Leased {
		t.Fatalf("at the kill: %d pings received, row %+v; want none, claimed once", n, leased)
	}

	// A normal build takes over once the dead process's lease has run out
	// (the allowlist from the environment this time).
	second := exec.Command(binary, "serve", "--addr", "127.0.0.1:0")
	second.Env = env("DATABASE_URL="+conf.URL(), testKEK, "SSL_CERT_FILE="+certFile, "COUNTERSIGN_PING_ALLOW=192.0.2.0/24, 127.0.0.0/8")
	p2, addr := start(t, second)
	base = "http://" + addr
	select {
	case <-got:
	case <-time.After(20 * time.Second):
		t.Fatalf("no ping after the restart\n%s", p2.logText())
	}
	var row struct {
		Attempts   int     `db:"attempts"`
		Duplicates int     `db:"duplicates"`
		Delivered  bool    `db:"delivered"`
		Bearer     *string `db:"bearer"`
	}
	waitFor(t, 10*time.Second, "the delivery to be recorded", func() bool {
		err := db.Get(&row, `SELECT attempts, duplicates, delivered_at IS NOT NULL AS delivered, bearer FROM outbox WHERE request_id = $1`, requestID)
		return err == nil && row.Delivered
	})
	if row.Attempts != 2 || row.Duplicates != 1 || row.Bearer != nil {
		t.Errorf("outbox row: %+v; want 2 attempts, 1 possible duplicate counted, no token kept", row)
	}
	mu.Lock()
	if len(pings) != 1 || pings[0].Header.Get("Authorization") != "Bearer notify-me-4c1e" ||
		pings[0].Header.Get("Content-Type") != "application/json" || bodies[0] != `{"auth_req_id":"`+authReqID+`"}` {
		t.Errorf("pings: %d, first %v %q", len(pings), pings[0].Header, bodies[0])
	}
	mu.Unlock()

	// Decided once: still approved at the original instant.
	after, err := store.Request(ctx, requestID)
	if err != nil {
		t.Fatal(err)
	}
	if after.State != approvals.StateApproved || after.DecidedAt == nil || !after.DecidedAt.Equal(*decided.DecidedAt) || after.DecidedBy == nil || *after.DecidedBy != user.ID {
		t.Fatalf("request after the crash: state %s, decided_at %v (was %v)", after.State, after.DecidedAt, decided.DecidedAt)
	}
	// The token once, then invalid_grant.
	tokenForm := url.Values{"grant_type": {"urn:openid:params:grant-type:ciba"}, "auth_req_id": {authReqID}}
	if status, body := postForm(t, base+"/token", agent.ID, secret, tokenForm); status != http.StatusOK || body["access_token"] == nil {
		t.Fatalf("first token request: %d %v", status, body)
	}
	if status, body := postForm(t, base+"/token", agent.ID, secret, tokenForm); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Fatalf("second token request: %d %v, want 400 invalid_grant", status, body)
	}
	if n := received(); n != 1 {
		t.Fatalf("%d pings in the end, want 1", n)
	}
}

// postForm POSTs form with client_secret_basic and decodes the JSON answer.
func postForm(t *testing.T, u, clientID, secret string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(clientID)+":"+url.QueryEscape(secret))))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("%s: %d, body is not JSON: %v", u, resp.StatusCode, err)
	}
	return resp.StatusCode, m
}

// waitFor polls cond until it holds or within has passed.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func demoTypes(t *testing.T) []rar.Type {
	t.Helper()
	types, err := demo.TypeDefinitions()
	if err != nil {
		t.Fatal(err)
	}
	return types
}

// TestPingAllowInvalid: a --ping-allow value (or COUNTERSIGN_PING_ALLOW entry)
// that is not a CIDR stops serve with one clear line.
func TestPingAllowInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  string
	}{
		{"flag", []string{"serve", "--ping-allow", "10.0.0.0/8", "--ping-allow", "10.0.0.1"}, ""},
		{"env", []string{"serve"}, "COUNTERSIGN_PING_ALLOW=10.0.0.0/8,10.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, tc.args...)
			cmd.Env = env("DATABASE_URL=postgres://localhost/x", testKEK, tc.env)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatal("serve accepted an invalid --ping-allow")
			}
			want := `countersign: --ping-allow: "10.0.0.1" is not a CIDR such as 10.0.0.0/8`
			if strings.TrimSpace(string(out)) != want {
				t.Fatalf("output %q, want %q", out, want)
			}
		})
	}
}

package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/approvals"
)

const allowAllPolicy = "types:\n  payment_initiation: [{id: all, when: \"true\", outcome: allow, reason: Allowed}]\n"

// TestAuditSealedAcrossReplicas: two serve processes, each with a sealer,
// under concurrent auto-allowed flows for 10 s; the leader is killed
// halfway. One unbroken chain holds every event exactly once, one sealer
// sealed at a time (the checkpoints name the first leader, then the
// second, never back), and the CLI verifies the database, exports, and
// verifies the export offline; after a row is changed it names it and
// exits 1.
func TestAuditSealedAcrossReplicas(t *testing.T) {
	t.Parallel()
	sd := newServeDB(t, "allow.yaml", []byte(allowAllPolicy), approvals.NewAgent{Name: "Agent", Domain: "agent.example.com"})
	dbURL := sd.conf.URL()
	type replica struct {
		proc *proc
		addr string
	}
	start1 := func() replica {
		cmd := exec.Command(binary, "serve", "--addr", "127.0.0.1:0", "--audit-seal-interval", "100ms")
		cmd.Env = env("DATABASE_URL="+dbURL, testKEK)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		p, addr := start(t, cmd)
		waitReady(t, "http://"+addr, 30*time.Second)
		return replica{p, addr}
	}
	a := start1()
	// A leads: it was first, and has sealed the setup's events.
	waitFor(t, 10*time.Second, "the first replica's first checkpoint", func() bool {
		var n int
		return sd.db.Get(&n, `SELECT count(*) FROM audit_checkpoints`) == nil && n > 0
	})
	b := start1()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var flows, failures atomic.Int64
	var aDead atomic.Bool
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				target := []replica{a, b}[i%2]
				if aDead.Load() {
					target = b
				}
				if err := autoFlow(ctx, "http://"+target.addr, sd.agent.ID, sd.secret); err != nil {
					if ctx.Err() == nil && !strings.Contains(err.Error(), "connection refused") && !strings.Contains(err.Error(), "EOF") &&
						!strings.Contains(err.Error(), "connection reset") {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
					continue
				}
				flows.Add(1)
			}
		}()
	}
	time.Sleep(5 * time.Second)
	aDead.Store(true)
	_ = syscall.Kill(-a.proc.cmd.Process.Pid, syscall.SIGKILL)
	_ = a.proc.wait(t, 10*time.Second)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d flows failed, first: %v", n, firstErr.Load())
	}
	if flows.Load() < 20 {
		t.Fatalf("only %d flows in 10 s", flows.Load())
	}
	t.Logf("%d auto-allowed flows in 10 s on two replicas, the first killed after 5 s", flows.Load())

	waitFor(t, 20*time.Second, "every event sealed", func() bool {
		var n int
		return sd.db.Get(&n, `SELECT count(*) FROM audit_events e WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id)`) == nil && n == 0
	})
	var sealers []string
	if err := sd.db.Select(&sealers, `SELECT sealer FROM audit_checkpoints ORDER BY position`); err != nil {
		t.Fatal(err)
	}
	runs := []string{sealers[0]}
	for _, s := range sealers[1:] {
		if s != runs[len(runs)-1] {
			runs = append(runs, s)
		}
	}
	if len(runs) != 2 {
		t.Fatalf("checkpoints sealed in turns by %v: want the first leader, then the second after it died", runs)
	}
	if !strings.HasSuffix(runs[0], fmt.Sprintf("/%d", a.proc.cmd.Process.Pid)) || !strings.HasSuffix(runs[1], fmt.Sprintf("/%d", b.proc.cmd.Process.Pid)) {
		t.Fatalf("sealers %v: want A (pid %d) then B (pid %d)", runs, a.proc.cmd.Process.Pid, b.proc.cmd.Process.Pid)
	}
	var events, chained, distinct, maxPos int64
	if err := sd.db.QueryRow(`SELECT (SELECT count(*) FROM audit_events), count(*), count(DISTINCT event_id), coalesce(max(position), 0) FROM audit_chain`).
		Scan(&events, &chained, &distinct, &maxPos); err != nil {
		t.Fatal(err)
	}
	if chained != events || distinct != events || maxPos != events {
		t.Fatalf("%d events, %d chain rows for %d distinct events up to position %d: want each once, without gaps", events, chained, distinct, maxPos)
	}

	// The CLI: verify the database, export, verify the export offline.
	var rep struct {
		OK     bool `json:"ok"`
		Report struct {
			Events      int64 `json:"events"`
			Checkpoints int64 `json:"checkpoints"`
		} `json:"report"`
	}
	if err := json.Unmarshal([]byte(cli(t, dbURL, "audit", "verify", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Report.Events != events || rep.Report.Checkpoints != int64(len(sealers)) {
		t.Fatalf("audit verify: %+v, want ok with %d events and %d checkpoints", rep, events, len(sealers))
	}
	dir := t.TempDir()
	keyFile, exportFile := filepath.Join(dir, "checkpoint-public-key.jwk"), filepath.Join(dir, "export.jsonl")
	cli(t, dbURL, "audit", "key", "--output", keyFile)
	cli(t, dbURL, "audit", "export", "--since", "1h", "--format", "jsonl", "--output", exportFile)
	out, err := exec.Command(binary, "audit", "verify", "--file", exportFile, "--key", keyFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("OK: the export verifies: %d events", events)) {
		t.Fatalf("audit verify --file: %v\n%s", err, out)
	}

	// A changed row: the database check and a new export name it.
	var id int64
	if err := sd.db.Get(&id, `SELECT event_id FROM audit_chain WHERE position = 7`); err != nil {
		t.Fatal(err)
	}
	tx := sd.db.MustBegin()
	tx.MustExec(`ALTER TABLE audit_events DISABLE TRIGGER USER`)
	tx.MustExec(`UPDATE audit_events SET body = body || '{"amount": "1"}' WHERE id = $1`, id)
	tx.MustExec(`ALTER TABLE audit_events ENABLE TRIGGER USER`)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("BROKEN: the database's audit trail: position 7 (event %d): changed", id)
	cmd := exec.Command(binary, "audit", "verify")
	cmd.Env = env("DATABASE_URL="+dbURL, testKEK)
	out, err = cmd.CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), want) {
		t.Fatalf("audit verify after a change: exit %d\n%s\nwant exit 1 and %q", code, out, want)
	}
	cli(t, dbURL, "audit", "export", "--since", "1h", "--output", exportFile)
	out, err = exec.Command(binary, "audit", "verify", "--file", exportFile, "--key", keyFile).CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), fmt.Sprintf("position 7 (event %d): changed", id)) {
		t.Fatalf("audit verify --file after a change: exit %d\n%s", code, out)
	}
	// The same keys are published over HTTP.
	resp, err := http.Get("http://" + b.addr + "/audit/keys.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var published, printed struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&published); err != nil || resp.StatusCode != http.StatusOK ||
		resp.Header.Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("/audit/keys.json: %d %s %v", resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	if err := json.Unmarshal(readFile(t, keyFile), &printed); err != nil {
		t.Fatal(err)
	}
	if len(published.Keys) != 1 || fmt.Sprint(published.Keys) != fmt.Sprint(printed.Keys) || published.Keys[0]["d"] != nil {
		t.Fatalf("published %v, printed %v: want the one public key", published.Keys, printed.Keys)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// autoFlow runs one auto-allowed flow: bc-authorize, then the token.
func autoFlow(ctx context.Context, base, clientID, secret string) error {
	form := url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"},
		"authorization_details": {`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"5.00"},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}]`}}
	var started struct {
		AuthReqID string `json:"auth_req_id"`
	}
	if err := post(ctx, base+"/bc-authorize", clientID, secret, form, &started); err != nil {
		return err
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := post(ctx, base+"/token", clientID, secret, url.Values{"grant_type": {"urn:openid:params:grant-type:ciba"}, "auth_req_id": {started.AuthReqID}}, &tok); err != nil {
		return err
	}
	if tok.AccessToken == "" {
		return fmt.Errorf("no access token")
	}
	return nil
}

func post(ctx context.Context, u, clientID, secret string, form url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(clientID)+":"+url.QueryEscape(secret))))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s: %d %v", u, resp.StatusCode, e)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// TestAuditVerifyUnsealed: with no sealer running, events wait unsealed;
// audit verify says so, and fails once they are older than
// --max-unsealed-age.
func TestAuditVerifyUnsealed(t *testing.T) {
	t.Parallel()
	sd := newServeDB(t, "allow.yaml", []byte(allowAllPolicy), approvals.NewAgent{Name: "Agent", Domain: "agent.example.com"})
	out := cli(t, sd.conf.URL(), "audit", "verify")
	if !strings.Contains(out, "Not yet sealed: ") {
		t.Fatalf("audit verify of an unsealed trail:\n%s", out)
	}
	time.Sleep(20 * time.Millisecond)
	cmd := exec.Command(binary, "audit", "verify", "--max-unsealed-age", "10ms")
	cmd.Env = env("DATABASE_URL="+sd.conf.URL(), testKEK)
	b, err := cmd.CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(b), "BROKEN: the database's audit trail: unsealed:") {
		t.Fatalf("audit verify --max-unsealed-age 10ms: exit %d\n%s", code, b)
	}
}

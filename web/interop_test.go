package web

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/internal/interop"
	"github.com/countersign/countersign/notify"
)

// The interop test drives interop/ciba.mjs: panva's openid-client and jose,
// run by the machine's node, as an agent this project did not write.

// interopStarted is the script's first line: the request exists.
type interopStarted struct {
	Event       string `json:"event"`
	AuthReqID   string `json:"auth_req_id"`
	ApprovalURL string `json:"approval_url"`
	ExpiresIn   int    `json:"expires_in"`
	Interval    int    `json:"interval"`
}

// interopDone is the script's last line.
type interopDone struct {
	Event                string          `json:"event"`
	Mode                 string          `json:"mode"`
	Error                string          `json:"error"`  // poll-deny
	Status               int             `json:"status"` // poll-deny
	IDTokenAlg           string          `json:"id_token_alg"`
	IDTokenClaims        map[string]any  `json:"id_token_claims"`
	AccessTokenHeader    map[string]any  `json:"access_token_header"`
	AccessTokenClaims    map[string]any  `json:"access_token_claims"`
	AuthorizationDetails json.RawMessage `json:"authorization_details"`
	TokenCalls           []tokenCall     `json:"token_calls"`
	Pings                []struct {
		AtMS   int    `json:"at_ms"`
		Method string `json:"method"`
		Path   string `json:"path"`
	} `json:"pings"` // ping
}

// tokenCall is one answer of the token endpoint as openid-client saw it.
type tokenCall struct {
	AtMS       int     `json:"at_ms"` // since the script started
	Status     int     `json:"status"`
	Error      *string `json:"error"`
	RetryAfter *string `json:"retry_after"`
}

func (c tokenCall) String() string {
	if c.Error == nil {
		return "200"
	}
	return *c.Error
}

// interopRun is one running interop/ciba.mjs.
type interopRun struct {
	t         *testing.T
	cmd       *exec.Cmd
	out       *bufio.Scanner
	stderr    bytes.Buffer
	cancel    context.CancelFunc
	started   interopStarted
	requestID string
}

// startInterop runs the script in mode as agent c and returns once the
// backchannel request exists. listener, when set, is handed to the script as
// file descriptor 3 (its ping endpoint).
func startInterop(t *testing.T, e *testEnv, mode string, c client, listener *os.File) *interopRun {
	t.Helper()
	script, err := filepath.Abs(interop.Script("ciba.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	r := &interopRun{t: t, cancel: cancel}
	t.Cleanup(cancel)
	r.cmd = exec.CommandContext(ctx, "node", script, mode)
	r.cmd.Env = append(os.Environ(),
		"CS_ISSUER="+e.srv.URL,
		"CS_CLIENT_ID="+c.ID,
		"CS_CLIENT_SECRET="+c.Secret,
		"CS_AUDIENCE="+testAudience,
		"CS_DETAILS="+paymentEUR,
		"CS_LOGIN_HINT="+e.user.Email,
		"CS_BINDING_MESSAGE=interop "+mode,
		"CS_TIMEOUT_MS=25000",
	)
	r.cmd.Stderr = &r.stderr
	r.cmd.WaitDelay = 2 * time.Second
	if listener != nil {
		r.cmd.ExtraFiles = []*os.File{listener}
	}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.out = bufio.NewScanner(stdout)
	r.out.Buffer(nil, 1<<20)
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	if !r.out.Scan() {
		r.fail("the script ended before the request existed")
	}
	if err := json.Unmarshal(r.out.Bytes(), &r.started); err != nil || r.started.Event != "started" {
		r.fail("first line is not the started event: %s", r.out.Bytes())
	}
	if r.started.AuthReqID == "" || !strings.HasPrefix(r.started.ApprovalURL, e.srv.URL+"/approve/") {
		r.fail("started event: %s", r.out.Bytes())
	}
	r.requestID = r.started.ApprovalURL[strings.LastIndex(r.started.ApprovalURL, "/")+1:]
	return r
}

// wait waits for the script to end successfully and returns its last line.
func (r *interopRun) wait() interopDone {
	r.t.Helper()
	if !r.out.Scan() {
		r.fail("the script ended without a result")
	}
	line := append([]byte(nil), r.out.Bytes()...)
	if err := r.cmd.Wait(); err != nil {
		r.t.Fatalf("node %s: %v\nstderr:\n%s", r.cmd.Args[2], err, r.stderr.String())
	}
	var d interopDone
	if err := json.Unmarshal(line, &d); err != nil || d.Event != "done" {
		r.t.Fatalf("last line is not the done event: %s\nstderr:\n%s", line, r.stderr.String())
	}
	return d
}

// fail stops the script and the test, showing what the script said.
func (r *interopRun) fail(format string, args ...any) {
	r.t.Helper()
	r.cancel()
	err := r.cmd.Wait()
	r.t.Fatalf(format+"\nnode: %v\nstderr:\n%s", append(args, err, r.stderr.String())...)
}

// awaitRequest polls the stored request until cond holds.
func awaitRequest(t *testing.T, e *testEnv, id, what string, cond func(approvals.Request) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := e.svc.Store().Request(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if cond(r) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; request: state %s, poll interval %d", what, r.State, r.PollInterval)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func callSequence(calls []tokenCall) string {
	s := make([]string, len(calls))
	for i, c := range calls {
		s[i] = c.String()
	}
	return strings.Join(s, ",")
}

// TestInteropOpenIDClient runs CIBA flows with openid-client as the agent:
// discovery, the backchannel request with authorization_details, polling
// that honours interval and slow_down, ID token validation (claims and
// signature), and the access token verified by jose against jwks_uri.
func TestInteropOpenIDClient(t *testing.T) {
	interop.Require(t)

	t.Run("poll approve", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t)
		run := startInterop(t, e, "poll-approve", e.agent, nil)
		if run.started.Interval != 5 {
			t.Fatalf("interval %d, want 5", run.started.Interval)
		}
		// Poll once ourselves mid-interval, so that openid-client's first poll
		// comes too soon and gets slow_down (CIBA §11, RFC 8628 §3.5).
		time.Sleep(2 * time.Second)
		if r := e.poll(e.agent, run.started.AuthReqID); r.JSON(t)["error"] != "authorization_pending" {
			t.Fatalf("our poll: %d %s", r.Status, r.Body)
		}
		awaitRequest(t, e, run.requestID, "slow_down", func(r approvals.Request) bool { return r.PollInterval > 5 })
		e.decide(run.requestID, true)
		d := run.wait()

		if got := callSequence(d.TokenCalls); got != "slow_down,200" {
			t.Fatalf("token endpoint answers %s, want slow_down,200", got)
		}
		if ra := d.TokenCalls[0].RetryAfter; ra == nil || *ra != "10" {
			t.Errorf("slow_down Retry-After %v, want 10", ra)
		}
		// openid-client waited the grown interval: one slow_down only.
		if gap := d.TokenCalls[1].AtMS - d.TokenCalls[0].AtMS; gap < 9900 {
			t.Errorf("openid-client polled %d ms after slow_down, want >= 10 s", gap)
		}
		req, err := e.svc.Store().Request(t.Context(), run.requestID)
		if err != nil {
			t.Fatal(err)
		}
		if req.PollInterval != 10 || req.State != approvals.StateTokenIssued {
			t.Errorf("request: poll interval %d, state %s; want 10, token_issued", req.PollInterval, req.State)
		}
		checkInteropTokens(t, e, run, d, e.agent.ID, req)
	})

	t.Run("poll deny", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t)
		run := startInterop(t, e, "poll-deny", e.agent, nil)
		// Deny after openid-client's first poll, so it sees
		// authorization_pending first and keeps polling.
		awaitRequest(t, e, run.requestID, "the first poll", func(r approvals.Request) bool { return r.LastPolledAt != nil })
		e.decide(run.requestID, false)
		d := run.wait()
		if d.Error != "access_denied" || d.Status != 400 {
			t.Fatalf("denied request: error %q status %d, want access_denied 400 (CIBA §11, RFC 6749 §5.2)", d.Error, d.Status)
		}
		if got := callSequence(d.TokenCalls); got != "authorization_pending,access_denied" {
			t.Fatalf("token endpoint answers %s, want authorization_pending,access_denied", got)
		}
		if gap := d.TokenCalls[1].AtMS - d.TokenCalls[0].AtMS; gap < 4900 {
			t.Errorf("openid-client polled again after %d ms, want >= the 5 s interval", gap)
		}
	})

	t.Run("ping approve", func(t *testing.T) {
		t.Parallel()
		testInteropPing(t, newTestEnv(t))
	})
}

// checkInteropTokens checks what openid-client and jose accepted against the
// stored request: the same user, client, transaction and details.
func checkInteropTokens(t *testing.T, e *testEnv, run *interopRun, d interopDone, clientID string, req approvals.Request) {
	t.Helper()
	id, at := d.IDTokenClaims, d.AccessTokenClaims
	if d.IDTokenAlg != "ES256" {
		t.Errorf("ID token alg %s, want ES256", d.IDTokenAlg)
	}
	if id["iss"] != e.srv.URL || id["sub"] != e.user.ID || id["aud"] != clientID {
		t.Errorf("ID token iss %v sub %v aud %v; want %s %s %s", id["iss"], id["sub"], id["aud"], e.srv.URL, e.user.ID, clientID)
	}
	if id["urn:openid:params:jwt:claim:auth_req_id"] != run.started.AuthReqID {
		t.Errorf("ID token auth_req_id %v", id["urn:openid:params:jwt:claim:auth_req_id"])
	}
	if d.AccessTokenHeader["typ"] != "at+jwt" || d.AccessTokenHeader["alg"] != "ES256" {
		t.Errorf("access token header %v", d.AccessTokenHeader)
	}
	want := map[string]any{
		"iss": e.srv.URL, "sub": e.user.ID, "aud": testAudience, "client_id": clientID,
		"txn": req.ID, "authorization_details_hash": req.DetailsHash, "acr": approvals.ACRApproval,
	}
	for k, v := range want {
		if at[k] != v {
			t.Errorf("access token %s = %v, want %v", k, at[k], v)
		}
	}
	if req.TokenJTI == nil || at["jti"] != *req.TokenJTI {
		t.Errorf("access token jti %v, stored %v", at["jti"], req.TokenJTI)
	}
	var got, sent any
	if err := json.Unmarshal(d.AuthorizationDetails, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(paymentEUR), &sent); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sent) {
		t.Errorf("authorization_details %s, want %s", d.AuthorizationDetails, paymentEUR)
	}
}

// testInteropPing runs the ping flow (CIBA §10.2) with openid-client as the
// agent: the script listens on a loopback socket we open, a notify worker
// pings it on decision, and only then does it call the token endpoint, once.
func testInteropPing(t *testing.T, e *testEnv) {
	w, err := notify.NewWorker(notify.Config{DB: e.db, AuthReqID: e.svc.AuthReqID,
		// Plain http to loopback, as in dev mode; nothing else is reachable.
		Policy: notify.Policy{DevLoopback: true}, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	var worker sync.WaitGroup
	worker.Go(func() { w.Run(ctx) })
	defer worker.Wait()
	defer stop()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	notifyURL := "http://" + l.Addr().String() + "/cb"
	a, secret, err := e.svc.Store().CreateAgent(t.Context(), approvals.NewAgent{
		Name: "Ping agent", Domain: "ping.example.com", Types: []string{"payment_initiation"},
		DeliveryMode: approvals.DeliveryPing, NotifyURL: notifyURL,
	})
	if err != nil {
		t.Fatal(err)
	}
	run := startInterop(t, e, "ping", client{ID: a.ID, Secret: secret, Basic: true}, f)
	// The socket is the script's now: with ours closed, a ping after the
	// script has gone is refused instead of waiting in a backlog nobody reads.
	f.Close()
	l.Close()
	e.decide(run.requestID, true)
	d := run.wait()
	if len(d.Pings) == 0 {
		t.Fatal("no ping reached the client")
	}
	if got := callSequence(d.TokenCalls); got != "200" {
		t.Fatalf("token endpoint answers %s, want one 200 after the ping", got)
	}
	req, err := e.svc.Store().Request(t.Context(), run.requestID)
	if err != nil {
		t.Fatal(err)
	}
	checkInteropTokens(t, e, run, d, a.ID, req)
}

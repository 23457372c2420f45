package main

import (
	"context"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/internal/pgtest"
)

// liveClient is a WebSocket client of one replica's GET /live, signed in
// as a person by their session cookie; its messages arrive on msgs.
type liveClient struct {
	conn *websocket.Conn
	msgs chan map[string]string
}

func dialLive(t *testing.T, addr, session string) *liveClient {
	t.Helper()
	h := http.Header{}
	h.Set("Cookie", "__Host-countersign-session="+session)
	h.Set("Origin", "https://countersign.test") // the issuer's origin
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/live", h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s/live: %v (HTTP %d)", addr, err, status)
	}
	t.Cleanup(func() { conn.Close() })
	c := &liveClient{conn: conn, msgs: make(chan map[string]string, 64)}
	// The server reads (and answers pings) only once the socket is in its
	// hub: a pong means notices now reach this client.
	pong := make(chan struct{}, 1)
	conn.SetPongHandler(func(string) error {
		select {
		case pong <- struct{}{}:
		default:
		}
		return nil
	})
	go func() {
		defer close(c.msgs)
		for {
			var m map[string]string
			if err := conn.ReadJSON(&m); err != nil {
				return
			}
			c.msgs <- m
		}
	}()
	if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pong:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s/live: no pong", addr)
	}
	return c
}

// await returns how long after since (when the test sent the change) the
// socket said that request id changed, failing once within has passed.
func (c *liveClient) await(t *testing.T, id string, since time.Time, within time.Duration, what string) time.Duration {
	t.Helper()
	timeout := time.After(time.Until(since.Add(within)))
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				t.Fatalf("%s: the socket closed", what)
			}
			if m["type"] == "changed" && m["request_id"] == id {
				return time.Since(since)
			}
		case <-timeout:
			t.Fatalf("%s: no change of %s within %s", what, id, within)
		}
	}
}

// TestLiveAcrossReplicas runs two serve processes on one database: a
// request made through A reaches a person's live socket on B within a
// second, and their decision made on B reaches their socket on A within a
// second, through PostgreSQL's notifications (the replicas share nothing
// else).
func TestLiveAcrossReplicas(t *testing.T) {
	t.Parallel()
	conf := pgtest.NewConfig(t)
	db, err := sqlx.Connect("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	store := approvals.NewStore(db)
	if _, err := approvals.NewTypeStore(store).Apply(ctx, demoTypes(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := approvals.NewPolicyStore(store).Apply(ctx, "policy.yaml", demo.Policy()); err != nil {
		t.Fatal(err)
	}
	user, err := store.CreateUser(ctx, approvals.NewUser{Email: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	agent, secret, err := store.CreateAgent(ctx, approvals.NewAgent{Name: "Agent", Domain: "agent.example.com",
		Types: []string{"payment_initiation"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.CreateResourceServer(ctx, approvals.NewResourceServer{Name: "API", Audience: "https://api.example.com",
		Types: []string{"payment_initiation"}}); err != nil {
		t.Fatal(err)
	}
	session, sess, err := store.CreateSession(ctx, user.ID, []string{"hwk", "user"}, "test", "")
	if err != nil {
		t.Fatal(err)
	}

	replica := func() string {
		cmd := exec.Command(binary, "serve", "--addr", "127.0.0.1:0")
		cmd.Env = env("DATABASE_URL="+conf.URL(), testKEK)
		_, addr := start(t, cmd)
		waitReady(t, "http://"+addr, 30*time.Second)
		return addr
	}
	a, b := replica(), replica()
	onA, onB := dialLive(t, a, session), dialLive(t, b, session)
	form := url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"},
		"authorization_details": {`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"500.00"},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}]`}}
	made := time.Now()
	status, body := postForm(t, "http://"+a+"/bc-authorize", agent.ID, secret, form)
	if status != http.StatusOK {
		t.Fatalf("bc-authorize on A: %d %v", status, body)
	}
	approvalURL, _ := body["approval_url"].(string)
	id := approvalURL[strings.LastIndex(approvalURL, "/")+1:]
	took := onB.await(t, id, made, time.Second, "a request made on A, on B's socket")
	t.Logf("request made on A reached B's socket after %s", took)

	// The decision, through B's consent page form.
	decision := url.Values{"verdict": {"approve"}, "csrf": {sess.CSRF}}
	req, err := http.NewRequest(http.MethodPost, "http://"+b+"/approve/"+id, strings.NewReader(decision.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Cookie", "__Host-countersign-session="+session)
	decided := time.Now()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("decision on B: %d, want 303", resp.StatusCode)
	}
	took = onA.await(t, id, decided, time.Second, "a decision made on B, on A's socket")
	t.Logf("decision made on B reached A's socket after %s", took)

	r, err := store.Request(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != approvals.StateApproved || r.DecidedBy == nil || *r.DecidedBy != user.ID {
		t.Fatalf("request after the decision on B: %s by %v", r.State, r.DecidedBy)
	}
}

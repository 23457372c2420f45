package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
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

	"github.com/gorilla/websocket"
	"github.com/jmoiron/sqlx"
	"github.com/peterldowns/pgtestdb"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/internal/loadgen"
	"github.com/countersign/countersign/internal/pgtest"
)

// serveDB is a fresh database made ready for serve processes: the demo
// types, a policy, alice, one agent for payments and the API resource
// server.
type serveDB struct {
	conf   pgtestdb.Config
	db     *sqlx.DB
	store  *approvals.Store
	user   approvals.User
	agent  approvals.Agent
	secret string // the agent's
}

func newServeDB(t *testing.T, policyName string, policy []byte, agent approvals.NewAgent) *serveDB {
	t.Helper()
	s := &serveDB{conf: pgtest.NewConfig(t)}
	var err error
	if s.db, err = sqlx.Connect("postgres", s.conf.URL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.db.Close() })
	ctx := context.Background()
	s.store = approvals.NewStore(s.db)
	if _, err := approvals.NewTypeStore(s.store).Apply(ctx, demoTypes(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := approvals.NewPolicyStore(s.store).Apply(ctx, policyName, policy); err != nil {
		t.Fatal(err)
	}
	if s.user, err = s.store.CreateUser(ctx, approvals.NewUser{Email: "alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	agent.Types = []string{"payment_initiation"}
	if s.agent, s.secret, err = s.store.CreateAgent(ctx, agent); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.store.CreateResourceServer(ctx, approvals.NewResourceServer{Name: "API", Audience: "https://api.example.com",
		Types: []string{"payment_initiation"}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// trustFile writes srv's certificate where child processes find it
// through SSL_CERT_FILE, and returns its path.
func trustFile(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "receiver.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

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
	sd := newServeDB(t, "policy.yaml", demo.Policy(), approvals.NewAgent{Name: "Agent", Domain: "agent.example.com"})
	conf, store, user, agent, secret := sd.conf, sd.store, sd.user, sd.agent, sd.secret
	ctx := context.Background()
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

// TestOutboxSurvivesReplicaKill: replica A holds 100 undelivered pings,
// two of them in flight to an agent's endpoint that does not answer yet,
// when it is SIGKILLed. Replica B delivers every one: none is lost, and
// only the two in flight arrive twice. The outbox counts each row A had
// claimed as a possible duplicate.
func TestOutboxSurvivesReplicaKill(t *testing.T) {
	t.Parallel()
	built := make(chan error, 1)
	go func() { _, err := failpointsBinary(); built <- err }()

	// The agents' endpoint: until the kill it holds every ping open (in
	// flight); after it, it answers at once.
	var mu sync.Mutex
	hold := true
	inFlight := map[string]bool{}
	received := map[string]int{}
	held := make(chan struct{}, 100)
	rc := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			AuthReqID string `json:"auth_req_id"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		received[body.AuthReqID]++
		holding := hold
		if holding {
			inFlight[body.AuthReqID] = true
		}
		mu.Unlock()
		if holding {
			held <- struct{}{}
			<-r.Context().Done() // the sender is gone
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rc.Close()
	certFile := trustFile(t, rc)
	sd := newServeDB(t, loadgen.PolicyFileName, []byte(loadgen.DefaultPolicy),
		approvals.NewAgent{Name: "Ping agent", Domain: "agent.example.com", DeliveryMode: approvals.DeliveryPing, NotifyURL: rc.URL + "/cb"})
	conf, db, agent, secret := sd.conf, sd.db, sd.agent, sd.secret
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	fp, _ := failpointsBinary()

	// A: the failpoints build only for its shorter lease (10 s rather than
	// 30: its sends time out after 5 s, well after the kill, and the rows
	// it claimed are due again soon after).
	first := exec.Command(fp, "serve", "--addr", "127.0.0.1:0", "--ping-allow", "127.0.0.0/8")
	first.Env = env("DATABASE_URL="+conf.URL(), testKEK, "SSL_CERT_FILE="+certFile, "COUNTERSIGN_FAILPOINT_LEASE=10s")
	pa, addr := start(t, first)
	const n = 100
	ids := make([]string, 0, n)
	for i := range n {
		form := url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"}, "client_notification_token": {fmt.Sprintf("notify-%03d", i)},
			"authorization_details": {fmt.Sprintf(`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"%d.00"},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}]`, 1+i%90)}}
		status, body := postForm(t, "http://"+addr+"/bc-authorize", agent.ID, secret, form)
		id, _ := body["auth_req_id"].(string)
		if status != http.StatusOK || id == "" {
			t.Fatalf("bc-authorize %d: %d %v", i, status, body)
		}
		ids = append(ids, id)
	}
	// A sends at most two at once to one endpoint: kill it with both held.
	for range 2 {
		select {
		case <-held:
		case <-time.After(15 * time.Second):
			t.Fatalf("A sent no ping\n%s", pa.logText())
		}
	}
	if err := first.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = pa.wait(t, 10*time.Second)
	var undelivered int
	if err := db.Get(&undelivered, `SELECT count(*) FROM outbox WHERE kind = 'ping' AND delivered_at IS NULL`); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	hold = false
	flying := len(inFlight)
	mu.Unlock()
	if undelivered != n || flying != 2 {
		t.Fatalf("at the kill: %d undelivered rows, %d pings in flight; want %d and 2", undelivered, flying, n)
	}

	second := exec.Command(binary, "serve", "--addr", "127.0.0.1:0", "--ping-allow", "127.0.0.0/8")
	second.Env = env("DATABASE_URL="+conf.URL(), testKEK, "SSL_CERT_FILE="+certFile)
	pb, _ := start(t, second)
	waitFor(t, 45*time.Second, "B to deliver every ping", func() bool {
		var left int
		return db.Get(&left, `SELECT count(*) FROM outbox WHERE kind = 'ping' AND delivered_at IS NULL`) == nil && left == 0
	})
	var counted int
	if err := db.Get(&counted, `SELECT coalesce(sum(duplicates), 0) FROM outbox WHERE kind = 'ping'`); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	lost, twice := 0, 0
	for _, id := range ids {
		switch got := received[id]; {
		case got == 0:
			lost++
		case got == 2 && inFlight[id]:
			twice++
		case got != 1:
			t.Errorf("auth_req_id %s arrived %d times (in flight at the kill: %v)", id, got, inFlight[id])
		}
	}
	t.Logf("%d pings: %d lost, %d delivered twice (in flight at the kill), %d possible duplicates counted by the outbox", n, lost, twice, counted)
	if lost != 0 || twice != 2 {
		t.Fatalf("%d lost, %d of the 2 in flight delivered again; want none lost and both again\n%s", lost, twice, pb.logText())
	}
	if counted < twice {
		t.Errorf("the outbox counted %d possible duplicates; want at least the %d actual ones", counted, twice)
	}
}

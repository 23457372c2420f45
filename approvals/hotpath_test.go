package approvals

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/internal/pgtest"
)

// counting is a database/sql connector that counts what reaches PostgreSQL:
// statements (queries and execs, plain or of a prepared statement: each one
// round trip with lib/pq's single-round-trip parameters), preparations and
// transactions.
type counting struct {
	driver.Connector
	statements, preparedRuns, prepares, begins atomic.Int64
}

func (c *counting) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, c: c}, nil
}

type countingConn struct {
	driver.Conn
	c *counting
}

func (cc *countingConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	cc.c.statements.Add(1)
	return cc.Conn.(driver.QueryerContext).QueryContext(ctx, q, args)
}

func (cc *countingConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	cc.c.statements.Add(1)
	return cc.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
}

func (cc *countingConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	cc.c.prepares.Add(1)
	st, err := cc.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	return &countingStmt{Stmt: st, c: cc.c}, nil
}

type countingStmt struct {
	driver.Stmt
	c *counting
}

func (cs *countingStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	cs.c.statements.Add(1)
	cs.c.preparedRuns.Add(1)
	return cs.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
}

func (cs *countingStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	cs.c.statements.Add(1)
	cs.c.preparedRuns.Add(1)
	return cs.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (cc *countingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	cc.c.begins.Add(1)
	return cc.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (cc *countingConn) CheckNamedValue(nv *driver.NamedValue) error {
	if c, ok := cc.Conn.(driver.NamedValueChecker); ok {
		return c.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

// countedService is a Service on a one-connection pool that counts what
// reaches PostgreSQL, with the demo types, the rule set policy, a resource
// server, alice and an agent (returned with its secret). Its caches are
// warm once the setup's notices have reached them (see synced).
type countedService struct {
	svc    *Service
	l      *Listener
	cnt    *counting
	agent  Agent
	secret string
}

func newCountedService(t *testing.T, policy string, opts ...func(*Config)) countedService {
	t.Helper()
	conf := pgtest.NewConfig(t)
	connector, err := pq.NewConnector(conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	cnt := &counting{Connector: connector}
	db := sqlx.NewDb(sql.OpenDB(cnt), "postgres")
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1) // a statement prepared once stays prepared
	l, err := NewListener(conf.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go l.Run(ctx)
	store := NewStore(db)
	keys, err := NewKeyStore(db, raceKEK, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Issuer: "https://countersign.test", KEK: raceKEK, Listener: l}
	for _, o := range opts {
		o(&cfg)
	}
	svc := NewService(store, NewTypeStore(store), keys, cfg)
	defs, err := demo.TypeDefinitions()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Types().Apply(ctx, defs); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Policies().Apply(ctx, "policy.yaml", []byte(policy)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.CreateResourceServer(ctx, NewResourceServer{Name: "API", Audience: "https://api.example.com", Types: []string{"payment_initiation"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateUser(ctx, NewUser{Email: "alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	agent, secret, err := store.CreateAgent(ctx, NewAgent{Name: "Agent", Domain: "agent.example.com", Types: []string{"payment_initiation"}})
	if err != nil {
		t.Fatal(err)
	}
	// The setup's events (and the resync of the listener's first connection)
	// reach the caches through the listener, in order, some time after
	// their commits: once a notice sent after them has arrived, no
	// invalidation is still on its way to the measured flows.
	synced := make(chan struct{}, 1)
	l.Subscribe(func(n Notice) {
		if n.Kind == "test.synced" {
			select {
			case synced <- struct{}{}:
			default:
			}
		}
	})
	// (Sent again until it arrives: the listener may not be listening yet.)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := db.ExecContext(ctx, `SELECT pg_notify($1, '{"kind":"test.synced"}')`, EventsChannel); err != nil {
			t.Fatal(err)
		}
		select {
		case <-synced:
		case <-time.After(200 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("the listener did not deliver the test's notice")
			}
			continue
		}
		break
	}
	return countedService{svc: svc, l: l, cnt: cnt, agent: agent, secret: secret}
}

// TestAutoFlowStatements: with warm caches, an auto-allowed flow —
// authenticate, bc-authorize, token — sends PostgreSQL at most 3 statements
// and opens no explicit transaction (each statement commits by itself: 2
// commits), every one of them prepared once on the connection and not again.
func TestAutoFlowStatements(t *testing.T) {
	cs := newCountedService(t, "types:\n  payment_initiation: [{id: small, when: \"details.instructedAmount.currency == 'EUR'\", outcome: allow, reason: ok}]\n")
	svc, cnt, agent, secret, ctx := cs.svc, cs.cnt, cs.agent, cs.secret, context.Background()
	flow := func() {
		t.Helper()
		a, err := svc.AuthenticateAgent(ctx, agent.ID, secret, AuthClientSecretBasic)
		if err != nil {
			t.Fatal(err)
		}
		c, err := svc.Authorize(ctx, a, AuthRequest{Scope: "openid", LoginHint: "alice@example.com", AuthorizationDetails: []byte(raceDetails)})
		if err != nil || c.Request.State != StateApproved {
			t.Fatalf("authorize: %+v %v", c.Request.State, err)
		}
		a, err = svc.AuthenticateAgent(ctx, agent.ID, secret, AuthClientSecretBasic)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Token(ctx, a, c.AuthReqID); err != nil {
			t.Fatal(err)
		}
	}
	flow() // warms the caches
	s0, r0, p0, b0 := cnt.statements.Load(), cnt.preparedRuns.Load(), cnt.prepares.Load(), cnt.begins.Load()
	const flows = 5
	for range flows {
		flow()
	}
	perFlow := float64(cnt.statements.Load()-s0) / flows
	begins, prepares := cnt.begins.Load()-b0, cnt.prepares.Load()-p0
	t.Logf("per auto-allowed flow: %.1f statements, %d explicit transactions; %d preparations in %d flows", perFlow, begins, prepares, flows)
	if perFlow > 3 || perFlow < 2 || begins != 0 {
		t.Errorf("an auto-allowed flow took %.1f statements and %d transactions; want 2 or 3 and none", perFlow, begins)
	}
	if runs := cnt.preparedRuns.Load() - r0; runs != cnt.statements.Load()-s0 {
		t.Errorf("%d of the flows' %d statements ran prepared; want all (parsed and planned once per connection)", runs, cnt.statements.Load()-s0)
	}
	if prepares != 0 {
		t.Errorf("%d statements were prepared again on a connection that had them; want none", prepares)
	}
}

// TestReviewStatements: a pending admission (under its locks) and a
// person's review run every statement prepared, once per connection.
func TestReviewStatements(t *testing.T) {
	cs := newCountedService(t, "types:\n  payment_initiation: [{id: ask, when: \"true\", outcome: approve, reason: ask}]\n")
	ctx, svc, cnt := context.Background(), cs.svc, cs.cnt
	user, err := svc.Store().UserByHint(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	review := func(i int) {
		t.Helper()
		c, err := svc.Authorize(ctx, cs.agent, AuthRequest{Scope: "openid", LoginHint: "alice@example.com",
			AuthorizationDetails: payment(fmt.Sprintf("%d.00", 100+i), "EUR")})
		if err != nil || c.Request.State != StatePending {
			t.Fatalf("authorize: %+v %v", c.Request.State, err)
		}
		r, err := svc.Review(ctx, c.Request.ID, Reviewer{UserID: user.ID, AMR: []string{"user"}}, ReviewInput{Verdict: VerdictApprove})
		if err != nil || r.State != StateApproved {
			t.Fatalf("review: %+v %v", r.State, err)
		}
	}
	review(0) // prepares
	const reviews = 3
	for i := range reviews {
		s0, r0, p0 := cnt.statements.Load(), cnt.preparedRuns.Load(), cnt.prepares.Load()
		c, err := svc.Authorize(ctx, cs.agent, AuthRequest{Scope: "openid", LoginHint: "alice@example.com",
			AuthorizationDetails: payment(fmt.Sprintf("%d.00", 200+i), "EUR")})
		if err != nil {
			t.Fatal(err)
		}
		s1, r1 := cnt.statements.Load(), cnt.preparedRuns.Load()
		if _, err := svc.Review(ctx, c.Request.ID, Reviewer{UserID: user.ID, AMR: []string{"user"}}, ReviewInput{Verdict: VerdictApprove}); err != nil {
			t.Fatal(err)
		}
		statements, runs := cnt.statements.Load()-s1, cnt.preparedRuns.Load()-r1
		t.Logf("a review: %d statements, %d of them prepared; the pending admission before it: %d, %d", statements, runs, s1-s0, r1-r0)
		if runs != statements {
			t.Errorf("%d of a review's %d statements ran prepared; want all (parsed and planned once per connection)", runs, statements)
		}
		if r1-r0 != s1-s0 {
			t.Errorf("%d of a pending admission's %d statements ran prepared; want all", r1-r0, s1-s0)
		}
		if p := cnt.prepares.Load() - p0; p != 0 {
			t.Errorf("%d statements were prepared again; want none", p)
		}
	}
}

// TestRequestScanTargets: the hot path's scan targets are Request's fields
// in requestColumns order, every column once.
func TestRequestScanTargets(t *testing.T) {
	var r Request
	targets := r.scanTargets()
	v := reflect.ValueOf(&r).Elem()
	tagAt := map[uintptr]string{}
	for i := range v.NumField() {
		tagAt[v.Field(i).Addr().Pointer()] = v.Type().Field(i).Tag.Get("db")
	}
	var got []string
	for _, p := range targets {
		got = append(got, tagAt[reflect.ValueOf(p).Pointer()])
	}
	var want []string
	for _, c := range strings.Split(requestColumns, ",") {
		want = append(want, strings.TrimSpace(c))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("scan targets\n%v\nrequestColumns\n%v", got, want)
	}
	if len(want) != v.NumField() {
		t.Fatalf("requestColumns has %d columns, Request %d fields", len(want), v.NumField())
	}
}

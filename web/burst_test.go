package web

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/internal/pgtest"
)

// stallBound is how long a request may take before the burst tests call the
// server stalled. It detects a stall (before the fix, requests hung past 30 s
// and other agents waited 27 s); it is no performance target.
const stallBound = 10 * time.Second

// TestAdmissionBurst: 4× the production pool size of concurrent
// /bc-authorize calls for one user — from one agent, and from many — under a
// policy whose rule reads recent (so admissions of one agent and one user
// are serialised), over HTTP with the production pool settings. All succeed;
// meanwhile another agent's request for another user is answered at once and
// /readyz stays ready.
func TestAdmissionBurst(t *testing.T) {
	for _, tc := range []struct {
		name   string
		agents int
	}{{"one agent", 1}, {"many agents", 16}} {
		t.Run(tc.name, func(t *testing.T) {
			db := pgtest.New(t)
			approvals.ConfigurePool(db)
			e := newTestEnvOn(t, db, nil, nil)
			ctx := context.Background()
			demoPolicy, err := os.ReadFile("../examples/demo/policy.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := approvals.NewPolicyStore(approvals.NewStore(db)).Apply(ctx, "policy.yaml", demoPolicy); err != nil {
				t.Fatal(err)
			}
			agents := []client{e.agent}
			for i := 1; i < tc.agents; i++ {
				a, secret, err := approvals.NewStore(db).CreateAgent(ctx, approvals.NewAgent{Name: fmt.Sprint("Agent ", i),
					Domain: "agent.example.com", Types: []string{"payment_initiation"}})
				if err != nil {
					t.Fatal(err)
				}
				agents = append(agents, client{ID: a.ID, Secret: secret, Basic: true})
			}
			if _, err := approvals.NewStore(db).CreateUser(ctx, approvals.NewUser{Email: "bob@example.com"}); err != nil {
				t.Fatal(err)
			}
			httpc := &http.Client{Timeout: 2 * stallBound, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
			send := func(c client, user string) (int, error) {
				form := url.Values{"scope": {"openid"}, "login_hint": {user}, "authorization_details": {paymentEUR}}
				req := e.formRequest("/bc-authorize", &c, form)
				resp, err := httpc.Do(req)
				if err != nil {
					return 0, err
				}
				defer resp.Body.Close()
				_, _ = io.Copy(io.Discard, resp.Body)
				return resp.StatusCode, nil
			}

			n := 4 * approvals.PoolMaxOpen
			start := make(chan struct{})
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					status, err := send(agents[i%len(agents)], "alice@example.com")
					if err == nil && status != http.StatusOK {
						err = fmt.Errorf("status %d", status)
					}
					if err != nil {
						errs <- err
					}
				}()
			}
			burstStart := time.Now()
			close(start)

			// While the burst runs: another agent, another user, and the probe.
			time.Sleep(20 * time.Millisecond)
			t0 := time.Now()
			status, err := send(e.post, "bob@example.com")
			if err != nil || status != http.StatusOK {
				t.Errorf("another agent during the burst: %d %v", status, err)
			}
			if d := time.Since(t0); d > stallBound {
				t.Errorf("another agent waited %s during the burst", d)
			}
			resp, err := httpc.Get(e.srv.URL + "/readyz")
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("/readyz during the burst: %v %v", resp, err)
			}
			if resp != nil {
				resp.Body.Close()
			}

			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("burst request: %v", err)
			}
			var stored int
			if err := db.Get(&stored, `SELECT count(*) FROM requests r JOIN users u ON u.id = r.user_id WHERE u.email = 'alice@example.com'`); err != nil || stored != n {
				t.Errorf("%d requests stored for alice, want %d (%v)", stored, n, err)
			}
			st := db.Stats()
			t.Logf("%d requests in %s; pool: %d waits, %s waited in all, %d open at most %d",
				n, time.Since(burstStart).Round(time.Millisecond), st.WaitCount, st.WaitDuration.Round(time.Millisecond), st.OpenConnections, st.MaxOpenConnections)
		})
	}
}

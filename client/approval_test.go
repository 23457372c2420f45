package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/client"
	"github.com/countersign/countersign/internal/testserver"
	"github.com/countersign/countersign/protocol"
	"github.com/countersign/countersign/rar/canonical"
)

// TestPollApproved: the request is accepted, the callback gets the
// approval URL and binding message before any poll, the first poll comes at
// once, and after the approval the next one a full interval later collects
// the token, bound to the details sent.
func TestPollApproved(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.Options{})
	c, rec := agent(t, srv, approvals.NewAgent{}, client.Config{})
	details := payment("500.00", "Bob")
	cb, pending := onPending()
	done := make(chan error, 1)
	var tok *client.Token
	go func() {
		var err error
		tok, err = c.RequestApproval(t.Context(), details, client.RequestOptions{LoginHint: testserver.UserEmail, BindingMessage: "pay invoice 7", OnPending: cb})
		done <- err
	}()
	p := <-pending
	if !strings.HasPrefix(p.ApprovalURL, srv.URL+"/approve/") || p.BindingMessage != "pay invoice 7" || p.Interval != time.Second || p.AuthReqID == "" {
		t.Fatalf("pending = %+v", p)
	}
	if time.Until(p.ExpiresAt) < time.Minute {
		t.Errorf("expires at %s, want the type's lifetime ahead", p.ExpiresAt)
	}
	id := testserver.RequestID(p.ApprovalURL)
	srv.AwaitRequest(t, id, "the first poll", func(r approvals.Request) bool { return r.LastPolledAt != nil })
	srv.Approve(t, id)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := rec.sequence(); got != "authorization_pending,200" {
		t.Fatalf("token endpoint answered %s, want authorization_pending,200", got)
	}
	calls := rec.tokenCalls()
	if gap := calls[1].at.Sub(calls[0].at); gap < time.Second {
		t.Errorf("polled again after %s, want at least the 1 s interval", gap)
	}
	want, _ := canonical.DetailsHash(details)
	var claims protocol.AccessTokenClaims
	if err := json.Unmarshal(jwtPayload(t, tok.AccessToken), &claims); err != nil {
		t.Fatal(err)
	}
	if claims.AuthorizationDetailsHash != want || claims.Txn != id || claims.ACR != protocol.ACRApproval || tok.AuthReqID != p.AuthReqID {
		t.Errorf("token claims %+v, auth_req_id %s; want hash %s, txn %s", claims, tok.AuthReqID, want, id)
	}
	if time.Until(tok.ExpiresAt) < 4*time.Minute {
		t.Errorf("token expires at %s", tok.ExpiresAt)
	}
}

// TestSlowDown: a poll that comes too soon (someone else polled the same
// request just before) gets slow_down; the SDK then waits the interval
// plus 5 s, or longer when Retry-After says so, and polls once more.
func TestSlowDown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		retryAfter string // rewritten onto the slow_down answer; "" keeps the server's, "-" drops it
		wait       time.Duration
	}{
		{"interval plus 5 s", "", 6 * time.Second},
		{"interval plus 5 s without Retry-After", "-", 6 * time.Second},
		{"Retry-After beyond that", "8", 8 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := testserver.New(t, testserver.Options{})
			c, rec := agent(t, srv, approvals.NewAgent{}, client.Config{})
			if tt.retryAfter != "" {
				rec.rewrite = func(resp *http.Response) {
					switch {
					case resp.StatusCode != http.StatusBadRequest:
					case tt.retryAfter == "-":
						resp.Header.Del("Retry-After")
					default:
						resp.Header.Set("Retry-After", tt.retryAfter)
					}
				}
			}
			// The agent polls once itself before RequestApproval's first poll,
			// which then comes too soon.
			ids := make(chan string, 1)
			cb := func(p client.Pending) {
				if _, err := c.Poll(t.Context(), p.AuthReqID); !errors.Is(err, client.ErrPending) {
					t.Errorf("the other poll: %v, want pending", err)
				}
				ids <- testserver.RequestID(p.ApprovalURL)
			}
			done := make(chan error, 1)
			go func() {
				_, err := c.RequestApproval(t.Context(), payment("500.00", "Bob"), client.RequestOptions{LoginHint: testserver.UserEmail, OnPending: cb})
				done <- err
			}()
			id := <-ids
			srv.AwaitRequest(t, id, "slow_down", func(r approvals.Request) bool { return r.PollInterval == 6 })
			srv.Approve(t, id)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			// The poll in the callback is the first recorded.
			if got := rec.sequence(); got != "authorization_pending,slow_down,200" {
				t.Fatalf("token endpoint answered %s, want authorization_pending,slow_down,200", got)
			}
			calls := rec.tokenCalls()
			if tt.retryAfter == "" && calls[1].retryAfter != "6" {
				t.Errorf("slow_down Retry-After %q, want 6", calls[1].retryAfter)
			}
			if gap := calls[2].at.Sub(calls[1].at); gap < tt.wait {
				t.Errorf("polled %s after slow_down, want at least %s", gap, tt.wait)
			}
			if r := srv.Request(t, id); r.PollInterval != 6 {
				t.Errorf("server interval %d, want 6: one slow_down only", r.PollInterval)
			}
		})
	}
}

// TestPing: with a ping receiver the SDK polls only after the server's
// ping: one token request, soon after the decision (the backstop poll
// would come after 30 s). A request a rule allows at once is pinged at
// once, maybe before /bc-authorize has answered.
func TestPing(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.Options{Ping: true})
	ping, err := client.ListenPing("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ping.Close() })
	c, rec := agent(t, srv, approvals.NewAgent{DeliveryMode: approvals.DeliveryPing, NotifyURL: "http://" + ping.Addr().String() + "/cb"},
		client.Config{Ping: ping})

	t.Run("approved by the user", func(t *testing.T) {
		start := time.Now()
		cb := func(p client.Pending) {
			go func() {
				time.Sleep(1500 * time.Millisecond) // more than the interval: a poller would have polled
				srv.Approve(t, testserver.RequestID(p.ApprovalURL))
			}()
		}
		tok, err := c.RequestApproval(t.Context(), payment("500.00", "Bob"), client.RequestOptions{LoginHint: testserver.UserEmail, OnPending: cb})
		if err != nil {
			t.Fatal(err)
		}
		if got := rec.sequence(); got != "200" || tok.AccessToken == "" {
			t.Fatalf("token endpoint answered %s, want one 200 after the ping", got)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("took %s: the token came by the backstop poll, not the ping", d)
		}
	})
	t.Run("allowed at once", func(t *testing.T) {
		before := len(rec.tokenCalls())
		start := time.Now()
		tok, err := c.RequestApproval(t.Context(), payment("20.00", "Bob"), client.RequestOptions{LoginHint: testserver.UserEmail})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(rec.tokenCalls()) - before; n != 1 || tok.AccessToken == "" {
			t.Fatalf("%d token requests, want 1", n)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("took %s: the token came by the backstop poll, not the ping", d)
		}
	})
}

// TestPingRefusesStrangers: the receiver wakes nothing for a ping without
// one of its tokens.
func TestPingRefusesStrangers(t *testing.T) {
	t.Parallel()
	ping, err := client.ListenPing("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ping.Close()
	for _, auth := range []string{"", "Bearer made-up", "Basic eDp5"} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+ping.Addr().String()+"/cb", strings.NewReader(`{"auth_req_id":"x"}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("ping with Authorization %q: %d, want 401", auth, resp.StatusCode)
		}
	}
}

// TestDenied: a person's denial, and a rule's at admission, are
// *DeniedError with the server's reason.
func TestDenied(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.Options{})
	c, _ := agent(t, srv, approvals.NewAgent{}, client.Config{})

	t.Run("by the user", func(t *testing.T) {
		t.Parallel()
		cb := func(p client.Pending) { srv.Deny(t, testserver.RequestID(p.ApprovalURL), "not this invoice") }
		_, err := c.RequestApproval(t.Context(), payment("500.00", "Bob"), client.RequestOptions{LoginHint: testserver.UserEmail, OnPending: cb})
		var de *client.DeniedError
		if !errors.Is(err, client.ErrDenied) || !errors.As(err, &de) || de.Admission || de.Reason != "the request was denied: not this invoice" {
			t.Fatalf("err = %v (%+v), want a person's denial", err, de)
		}
		var oe *client.Error
		if !errors.As(err, &oe) || oe.Code != protocol.CodeAccessDenied || oe.Status != http.StatusBadRequest {
			t.Errorf("the server's answer = %+v", oe)
		}
	})
	t.Run("by a rule", func(t *testing.T) {
		t.Parallel()
		called := false
		_, err := c.RequestApproval(t.Context(), payment("500.00", "Mallory"), client.RequestOptions{LoginHint: testserver.UserEmail,
			OnPending: func(client.Pending) { called = true }})
		var de *client.DeniedError
		if !errors.As(err, &de) || !de.Admission || de.Reason != "Payments to Mallory are blocked" {
			t.Fatalf("err = %v (%+v), want the rule's denial at admission", err, de)
		}
		if called {
			t.Error("OnPending was called for a refused request")
		}
	})
}

// TestExpired: nobody decides; the request's requested expiry passes and
// the SDK returns ErrExpired.
func TestExpired(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.Options{})
	c, rec := agent(t, srv, approvals.NewAgent{}, client.Config{})
	start := time.Now()
	_, err := c.RequestApproval(t.Context(), payment("500.00", "Bob"), client.RequestOptions{LoginHint: testserver.UserEmail, RequestedExpiry: 2 * time.Second})
	if !errors.Is(err, client.ErrExpired) {
		t.Fatalf("err = %v, want ErrExpired", err)
	}
	if d := time.Since(start); d < 2*time.Second || d > 10*time.Second {
		t.Errorf("expired after %s, want about 2 s", d)
	}
	if seq := rec.sequence(); !strings.HasSuffix(seq, "expired_token") || !strings.HasPrefix(seq, "authorization_pending") {
		t.Errorf("token endpoint answered %s", seq)
	}
}

// TestContextCancel: when the caller's context ends, the SDK withdraws the
// request on the server.
func TestContextCancel(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.Options{})
	c, _ := agent(t, srv, approvals.NewAgent{}, client.Config{})
	ctx, cancel := context.WithCancel(t.Context())
	ids := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		_, err := c.RequestApproval(ctx, payment("500.00", "Bob"), client.RequestOptions{LoginHint: testserver.UserEmail,
			OnPending: func(p client.Pending) { ids <- testserver.RequestID(p.ApprovalURL) }})
		done <- err
	}()
	id := <-ids
	srv.AwaitRequest(t, id, "the first poll", func(r approvals.Request) bool { return r.LastPolledAt != nil })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if r := srv.Request(t, id); r.State != approvals.StateCancelled {
		t.Fatalf("request state %s, want cancelled", r.State)
	}
}

// TestInvalidDetails: the server's refusal names the element, path and
// rule; what needs no request type is refused before anything is sent.
func TestInvalidDetails(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.Options{})
	c, rec := agent(t, srv, approvals.NewAgent{}, client.Config{})
	tests := []struct {
		name, details string
		index         int
		path, rule    string
		reachesServer bool
	}{
		{"bad IBAN", `[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"5.00"},"creditorName":"Bob","creditorAccount":{"iban":"DE00370400440532013000"}}]`,
			0, "/creditorAccount/iban", "iban_checksum", true},
		{"negative amount, second element", `[` + string(payment("1.00", "Bob"))[1:len(payment("1.00", "Bob"))-1] + `,{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"-5"},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}]`,
			1, "/instructedAmount/amount", "pattern", true},
		{"missing field", `[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"5.00"},"creditorAccount":{"iban":"DE89370400440532013000"}}]`,
			0, "/creditorName", "required", true},
		{"duplicate key", `[{"type":"payment_initiation","type":"x"}]`, 0, "/type", "duplicate_key", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.RequestApproval(t.Context(), json.RawMessage(tt.details), client.RequestOptions{LoginHint: testserver.UserEmail})
			var ide *client.InvalidDetailsError
			if !errors.Is(err, client.ErrInvalidDetails) || !errors.As(err, &ide) {
				t.Fatalf("err = %v, want an InvalidDetailsError", err)
			}
			if ide.Index != tt.index || ide.Path != tt.path || ide.Rule != tt.rule {
				t.Fatalf("error = %+v, want element %d, path %s, rule %s", ide, tt.index, tt.path, tt.rule)
			}
			var oe *client.Error
			if errors.As(err, &oe) != tt.reachesServer {
				t.Errorf("server's answer %v, want one: %v", oe, tt.reachesServer)
			}
		})
	}
	if n := len(rec.tokenCalls()); n != 0 {
		t.Errorf("%d token requests for refused requests", n)
	}
}

// TestOtherRefusals: the rest of /bc-authorize's refusals arrive as the
// sentinels they are.
func TestOtherRefusals(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.Options{})
	suspended := srv.Agent(t, approvals.NewAgent{Name: "Suspended"})
	if err := srv.Service.Store().SetAgentStatus(context.Background(), suspended.ID, "suspended"); err != nil {
		t.Fatal(err)
	}
	good, _ := agent(t, srv, approvals.NewAgent{}, client.Config{})
	tests := []struct {
		name string
		cfg  client.Config
		opts client.RequestOptions
		want error
	}{
		{"suspended agent", client.Config{ClientID: suspended.ID, ClientSecret: suspended.Secret}, client.RequestOptions{LoginHint: testserver.UserEmail}, client.ErrUnauthorizedClient},
		{"wrong secret", client.Config{ClientID: suspended.ID, ClientSecret: "wrong"}, client.RequestOptions{LoginHint: testserver.UserEmail}, client.ErrInvalidClient},
		{"unknown user", client.Config{}, client.RequestOptions{LoginHint: "nobody@example.com"}, client.ErrUnknownUser},
		{"binding message", client.Config{}, client.RequestOptions{LoginHint: testserver.UserEmail, BindingMessage: "pay \u202egnp.exe"}, client.ErrInvalidBindingMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			if tt.cfg.ClientID != "" {
				tt.cfg.Issuer = srv.URL
				var err error
				if c, err = client.New(tt.cfg); err != nil {
					t.Fatal(err)
				}
			}
			_, err := c.RequestApproval(t.Context(), payment("20.00", "Bob"), tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestClientAuthentication: client_secret_post and private_key_jwt
// authenticate every call of a flow (a rule allows 20 EUR at once).
func TestClientAuthentication(t *testing.T) {
	t.Parallel()
	srv := testserver.New(t, testserver.Options{})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "agent-key-1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		na   approvals.NewAgent
		cfg  client.Config
	}{
		{"client_secret_post", approvals.NewAgent{AuthMethod: approvals.AuthClientSecretPost}, client.Config{AuthMethod: protocol.AuthClientSecretPost}},
		{"private_key_jwt", approvals.NewAgent{AuthMethod: approvals.AuthPrivateKeyJWT, JWKS: pub}, client.Config{Key: &jose.JSONWebKey{Key: key, KeyID: "agent-key-1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, rec := agent(t, srv, tt.na, tt.cfg)
			tok, err := c.RequestApproval(t.Context(), payment("20.00", "Bob"), client.RequestOptions{LoginHint: testserver.UserEmail})
			if err != nil {
				t.Fatal(err)
			}
			if got := rec.sequence(); got != "200" || tok.AccessToken == "" {
				t.Fatalf("token endpoint answered %s", got)
			}
			p, err := c.Start(t.Context(), payment("500.00", "Bob"), client.RequestOptions{LoginHint: testserver.UserEmail})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Cancel(t.Context(), p.AuthReqID); err != nil {
				t.Fatalf("cancel: %v", err)
			}
		})
	}
}

package mcpgate

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/client"
	"github.com/countersign/countersign/internal/testserver"
	"github.com/countersign/countersign/protocol"
)

var testKey = []byte("mcpgate test key, 32 bytes long!")

// payArgs are the arguments of the gated test tool.
type payArgs struct {
	Amount   string `json:"amount"`
	Creditor string `json:"creditor"`
}

func (a payArgs) details() []map[string]any {
	return []map[string]any{{
		"type":             "payment_initiation",
		"instructedAmount": map[string]string{"currency": "EUR", "amount": a.Amount},
		"creditorName":     a.Creditor,
		"creditorAccount":  map[string]string{"iban": "DE89370400440532013000"},
	}}
}

// env is a Countersign test server, a gate registered with it as an agent,
// and an MCP server with the gated tool pay and the ungated tool balance.
type env struct {
	t      *testing.T
	cs     *testserver.Server
	gate   *Gate
	server *mcp.Server
	runs   atomic.Int32 // pay's handler ran
	polls  atomic.Int32 // the gate's polls of /token
}

type envOptions struct {
	pendingWait time.Duration
	expiry      time.Duration
	stateless   bool
	// redeem, when set, replaces the gate's Redeem (r.Redeem).
	redeem func(r *client.Redeemer) func(context.Context, string, any) (*protocol.AccessTokenClaims, error)
}

// polls counts the gate's requests to the token endpoint.
type pollCounter struct{ n *atomic.Int32 }

func (p pollCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == "/token" {
		p.n.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.pendingWait == 0 {
		o.pendingWait = 3 * time.Second
	}
	e := &env{t: t, cs: testserver.New(t, testserver.Options{})}
	ag := e.cs.Agent(t, approvals.NewAgent{})
	c, err := client.New(client.Config{Issuer: e.cs.URL, ClientID: ag.ID, ClientSecret: ag.Secret,
		HTTPClient: &http.Client{Transport: pollCounter{&e.polls}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.NewRedeemer(client.RedeemerConfig{Issuer: e.cs.URL, ClientID: e.cs.RS.ID, ClientSecret: e.cs.RS.Secret})
	if err != nil {
		t.Fatal(err)
	}
	redeem := r.Redeem
	if o.redeem != nil {
		redeem = o.redeem(r)
	}
	e.gate, err = New(Config{Client: c, Redeem: redeem, StateKey: testKey, DefaultUser: testserver.UserEmail,
		PendingWait: o.pendingWait, RequestedExpiry: o.expiry, Stateless: o.stateless})
	if err != nil {
		t.Fatal(err)
	}
	e.server = mcp.NewServer(&mcp.Implementation{Name: "mcpgate-test", Version: "1"}, nil)
	AddTool(e.server, &mcp.Tool{Name: "pay", Description: "pays"}, e.gate, Tool[payArgs]{
		Details: func(_ context.Context, in payArgs) (any, error) { return in.details(), nil },
		Summary: func(in payArgs) string { return fmt.Sprintf("pay %s EUR to %s", in.Amount, in.Creditor) },
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in payArgs) (*mcp.CallToolResult, any, error) {
		claims, ok := ClaimsFromContext(ctx)
		if !ok {
			return nil, nil, fmt.Errorf("no claims")
		}
		e.runs.Add(1)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "paid " + in.Amount + " txn " + claims.Txn}}}, nil, nil
	})
	mcp.AddTool(e.server, &mcp.Tool{Name: "balance"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "balance 1000.00 EUR"}}}, nil, nil
	})
	return e
}

// requests counts the approval requests Countersign holds.
func (e *env) requests() int {
	e.t.Helper()
	var n int
	if err := e.cs.DB.Get(&n, `SELECT count(*) FROM requests`); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) wantRequests(n int) {
	e.t.Helper()
	if got := e.requests(); got != n {
		e.t.Errorf("Countersign holds %d approval requests, want %d", got, n)
	}
}

func (e *env) wantRuns(n int32) {
	e.t.Helper()
	if got := e.runs.Load(); got != n {
		e.t.Errorf("the gated tool ran %d times, want %d", got, n)
	}
}

// transport is how a test client reaches the MCP server.
type transport string

const (
	inMemory   transport = "in-memory"
	streamable transport = "streamable HTTP"
	stateless  transport = "stateless streamable HTTP"
)

// connect connects a go-sdk client at revision over tr. bearer, when set,
// is sent as the Authorization of every HTTP request, which the server
// checks with the go-sdk auth middleware (tokens "alice" and "bob").
func (e *env) connect(tr transport, revision string, opts *mcp.ClientOptions, bearer string) *mcp.ClientSession {
	e.t.Helper()
	ctx := e.t.Context()
	c := mcp.NewClient(&mcp.Implementation{Name: "mcpgate-test-client", Version: "1"}, opts)
	var ct mcp.Transport
	switch tr {
	case inMemory:
		st, mt := mcp.NewInMemoryTransports()
		ss, err := e.server.Connect(ctx, st, nil)
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { _ = ss.Close() })
		ct = mt
	default:
		h := http.Handler(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return e.server },
			&mcp.StreamableHTTPOptions{Stateless: tr == stateless}))
		h = auth.RequireBearerToken(verifyTestToken, &auth.RequireBearerTokenOptions{})(h)
		srv := httptest.NewServer(h)
		e.t.Cleanup(srv.Close)
		if bearer == "" {
			bearer = "alice"
		}
		ct = &mcp.StreamableClientTransport{Endpoint: srv.URL, HTTPClient: &http.Client{Transport: bearerTransport(bearer)}}
	}
	cs, err := c.Connect(ctx, ct, &mcp.ClientSessionOptions{ProtocolVersion: revision})
	if err != nil {
		e.t.Fatalf("connect over %s at %s: %v", tr, revision, err)
	}
	e.t.Cleanup(func() { _ = cs.Close() })
	if got := cs.InitializeResult().ProtocolVersion; got != revision {
		e.t.Fatalf("negotiated %s, want %s", got, revision)
	}
	return cs
}

// verifyTestToken is the MCP server's bearer token check: alice is the test
// server's user, bob is unknown to Countersign.
func verifyTestToken(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
	users := map[string]string{"alice": testserver.UserEmail, "bob": "bob@example.com"}
	u, ok := users[token]
	if !ok {
		return nil, auth.ErrInvalidToken
	}
	return &auth.TokenInfo{UserID: u, Expiration: time.Now().Add(time.Hour)}, nil
}

type bearerTransport string

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}

// urlCapable declares URL-mode elicitation.
func urlCapable(opts *mcp.ClientOptions) *mcp.ClientOptions {
	opts.Capabilities = &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{URL: &mcp.URLElicitationCapabilities{}}}
	if opts.ElicitationHandler == nil {
		opts.ElicitationHandler = func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept"}, nil
		}
	}
	return opts
}

func callParams(a payArgs) *mcp.CallToolParams {
	return &mcp.CallToolParams{Name: "pay", Arguments: a}
}

// text is a result's text content.
func text(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// wantRan checks a result of the tool that ran.
func (e *env) wantRan(res *mcp.CallToolResult, err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("call: %v", err)
	}
	if res.IsError || !strings.HasPrefix(text(res), "paid ") {
		e.t.Fatalf("result %+v %q, want the tool's", res, text(res))
	}
}

// answer is a call's outcome.
type answer struct {
	res *mcp.CallToolResult
	err error
}

func ans(res *mcp.CallToolResult, err error) answer { return answer{res, err} }

// wantToolError checks a tool error result whose text contains each of want.
func (e *env) wantToolError(a answer, want ...string) string {
	e.t.Helper()
	res, err := a.res, a.err
	if err != nil {
		e.t.Fatalf("call: %v, want a tool error", err)
	}
	if !res.IsError {
		e.t.Fatalf("result %q, want a tool error", text(res))
	}
	for _, w := range want {
		if !strings.Contains(text(res), w) {
			e.t.Errorf("tool error %q does not contain %q", text(res), w)
		}
	}
	return text(res)
}

// elicitation is the URL-mode input request of an input_required result.
func (e *env) inputRequest(res *mcp.CallToolResult, err error) *mcp.ElicitParams {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("call: %v", err)
	}
	if !res.NeedsInput() || res.RequestState == "" || len(res.Content) != 0 {
		e.t.Fatalf("result %+v, want input_required with a requestState", res)
	}
	p, ok := res.InputRequests[inputKey].(*mcp.ElicitParams)
	if !ok || len(res.InputRequests) != 1 {
		e.t.Fatalf("input requests %+v, want one elicitation", res.InputRequests)
	}
	e.wantApprovalURL(p)
	if p.ElicitationID != "" {
		e.t.Errorf("a 2026-07-28 input request has elicitationId %q", p.ElicitationID)
	}
	return p
}

func (e *env) wantApprovalURL(p *mcp.ElicitParams) {
	e.t.Helper()
	if p.Mode != "url" || !strings.HasPrefix(p.URL, e.cs.URL+"/approve/") {
		e.t.Fatalf("elicitation %+v, want mode url with the approval URL", p)
	}
	if !strings.Contains(p.Message, "The approval page shows \"MCP ") || !strings.Contains(p.Message, "pay 250.00 EUR to ACME") {
		e.t.Errorf("elicitation message %q lacks the binding message or the summary", p.Message)
	}
}

var human = payArgs{Amount: "250.00", Creditor: "ACME"}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

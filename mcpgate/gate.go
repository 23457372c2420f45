package mcpgate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/countersign/countersign/client"
	"github.com/countersign/countersign/protocol"
)

// Defaults of Config.
const (
	// DefaultPendingWait is how long a retried call waits for a pending
	// decision before it answers again that the approval is pending.
	DefaultPendingWait = 25 * time.Second
	// DefaultMaxPending bounds the approvals a gate waits for at once.
	DefaultMaxPending = 1000
)

// inputKey names the gate's input request in an input_required result.
const inputKey = "countersign_approval"

// Config configures a Gate.
type Config struct {
	// Client is the MCP server's registration as a Countersign agent.
	Client *client.Client
	// Redeem spends an approved call's token for its details at
	// Countersign's /redeem before the tool runs, such as the Redeem
	// method of a client.Redeemer with the resource server's credentials.
	// The tool runs only when it returns the token's claims.
	Redeem func(ctx context.Context, token string, details any) (*protocol.AccessTokenClaims, error)
	// StateKey is the HMAC-SHA256 key of requestStates: at least 32 random
	// bytes, the same on every replica that serves the tools.
	StateKey []byte
	// User names the Countersign user of a call (a login_hint: email or
	// user id). By default the call's authenticated identity — the UserID
	// of the go-sdk auth middleware's TokenInfo — or else DefaultUser.
	User func(ctx context.Context, req *mcp.CallToolRequest) (string, error)
	// DefaultUser is the user of calls without an authenticated identity.
	DefaultUser string
	// PendingWait is how long a retried call waits for a pending decision
	// (default DefaultPendingWait).
	PendingWait time.Duration
	// RequestedExpiry, when set, shortens the life of approval requests
	// below their types' maximum.
	RequestedExpiry time.Duration
	// Stateless says the server cannot send the client requests (a
	// stateless streamable HTTP transport), so 2025-11-25 clients get error
	// -32042 rather than elicitation/create.
	Stateless bool
	// MaxPending bounds the approvals waited for at once (default
	// DefaultMaxPending); a call beyond it is refused.
	MaxPending int

	now func() time.Time // the clock, time.Now by default
}

// Gate asks Countersign before gated tools run. It is safe for concurrent
// use.
type Gate struct {
	cfg    Config
	sealer sealer
	mem    *memory
	now    func() time.Time
}

// New checks cfg and returns a Gate.
func New(cfg Config) (*Gate, error) {
	if cfg.Client == nil {
		return nil, errors.New("mcpgate: Client is required")
	}
	if cfg.Redeem == nil {
		return nil, errors.New("mcpgate: Redeem is required: the tool runs only after its token was redeemed")
	}
	if len(cfg.StateKey) < minKeyLen {
		return nil, fmt.Errorf("mcpgate: StateKey must be at least %d bytes", minKeyLen)
	}
	if cfg.PendingWait <= 0 {
		cfg.PendingWait = DefaultPendingWait
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	return &Gate{cfg: cfg, sealer: sealer{key: append([]byte(nil), cfg.StateKey...)}, mem: newMemory(cfg.MaxPending), now: cfg.now}, nil
}

// Tool says how to gate a tool whose arguments are In.
type Tool[In any] struct {
	// Details derives the authorization_details of a call from its
	// arguments: a JSON array of objects (RFC 9396 §2), or one object, as
	// client.Client.Start takes them. Required.
	Details func(ctx context.Context, in In) (any, error)
	// Summary says in a few words what the call does, for the message that
	// asks the user; by default the tool's name.
	Summary func(in In) string
}

// AddTool adds the tool t to s, as mcp.AddTool does, with h gated by g.
func AddTool[In, Out any](s *mcp.Server, t *mcp.Tool, g *Gate, gt Tool[In], h mcp.ToolHandlerFor[In, Out]) {
	mcp.AddTool(s, t, Wrap(g, gt, h))
}

// Wrap returns h gated by g: it runs once Countersign approved the call and
// its token was redeemed; ClaimsFromContext gives it the token's claims.
func Wrap[In, Out any](g *Gate, gt Tool[In], h mcp.ToolHandlerFor[In, Out]) mcp.ToolHandlerFor[In, Out] {
	if gt.Details == nil {
		panic("mcpgate: Tool.Details is required")
	}
	return func(ctx context.Context, req *mcp.CallToolRequest, in In) (*mcp.CallToolResult, Out, error) {
		var zero Out
		summary := req.Params.Name
		if gt.Summary != nil {
			summary = gt.Summary(in)
		}
		details := func(ctx context.Context) (json.RawMessage, error) {
			d, err := gt.Details(ctx, in)
			if err != nil {
				return nil, err
			}
			if raw, ok := d.(json.RawMessage); ok {
				return raw, nil
			}
			return json.Marshal(d)
		}
		ctx, res, err := g.authorize(ctx, req, details, summary)
		if res != nil || err != nil {
			return res, zero, err
		}
		return h(ctx, req, in)
	}
}

type claimsKey struct{}

// ClaimsFromContext returns the claims of the redeemed token of the call
// that a gated tool handler serves.
func ClaimsFromContext(ctx context.Context) (*protocol.AccessTokenClaims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*protocol.AccessTokenClaims)
	return c, ok
}

// call is one gated tool call.
type call struct {
	req     *mcp.CallToolRequest
	form    form
	user    string
	digest  string
	details json.RawMessage
	summary string
}

func (c *call) key() string { return c.user + "\x00" + c.digest }

// authorize decides whether the call may run. It returns the context to
// run the tool with, or the result or error to answer instead: an
// input_required result, a tool error (a plain error, which the SDK puts
// in an isError result) or a JSON-RPC error (*jsonrpc.Error).
func (g *Gate) authorize(ctx context.Context, req *mcp.CallToolRequest, details func(context.Context) (json.RawMessage, error), summary string) (context.Context, *mcp.CallToolResult, error) {
	revision, caps := revisionOf(req)
	f, err := formFor(revision, caps, !g.cfg.Stateless)
	if err != nil {
		return ctx, nil, err
	}
	c := &call{req: req, form: f, summary: summary}
	if c.user, err = g.user(ctx, req); err != nil {
		return ctx, nil, err
	}
	if c.digest, err = callDigest(req.Params.Name, req.Params.Arguments); err != nil {
		return ctx, nil, err
	}
	if c.details, err = details(ctx); err != nil {
		return ctx, nil, fmt.Errorf("mcpgate: authorization_details: %w", err)
	}
	now := g.now()

	if raw := req.Params.RequestState; raw != "" {
		a, err := g.resumeState(c, raw, now)
		if err != nil {
			return ctx, nil, err
		}
		if declined(req.Params.InputResponses) {
			return ctx, nil, g.withdraw(ctx, a)
		}
		tok, err := g.wait(ctx, a, now.Add(g.cfg.PendingWait))
		return g.settle(ctx, c, a, tok, err)
	}

	unlock := g.mem.lock(c.key())
	a := g.mem.find(c.key())
	deadline := now.Add(g.cfg.PendingWait)
	if a == nil {
		a, err = g.start(ctx, c, now)
		deadline = now // one poll: allowed at once, or a person decides
	}
	unlock()
	if err != nil {
		return ctx, nil, err
	}
	if f == formElicit {
		return g.elicit(ctx, c, a)
	}
	tok, err := g.wait(ctx, a, deadline)
	return g.settle(ctx, c, a, tok, err)
}

// resumeState opens the requestState of a retried call: it must be the
// gate's, unexpired, and issued for this user's call.
func (g *Gate) resumeState(c *call, raw string, now time.Time) (*approval, error) {
	if c.form != formInputRequired {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "mcpgate: requestState is not part of this protocol revision"}
	}
	s, err := g.sealer.open(raw, now)
	if errors.Is(err, ErrStateExpired) {
		return nil, err // a tool error: the request expired, ask again
	}
	if err == nil {
		err = s.check(c.user, c.digest)
	}
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error()}
	}
	a, err := g.mem.resume(s, raw, c.key(), now)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// start asks Countersign to approve the call.
func (g *Gate) start(ctx context.Context, c *call, now time.Time) (*approval, error) {
	if err := g.mem.admit(now); err != nil {
		return nil, err
	}
	binding := bindingMessage()
	p, err := g.cfg.Client.Start(ctx, c.details, client.RequestOptions{
		LoginHint:       c.user,
		BindingMessage:  binding,
		RequestedExpiry: g.cfg.RequestedExpiry,
	})
	if err != nil {
		return nil, outcomeError(err)
	}
	s := state{AuthReqID: p.AuthReqID, User: c.user, Call: c.digest, Expiry: p.ExpiresAt.Unix(),
		ApprovalURL: p.ApprovalURL, Binding: binding, Interval: int64(p.Interval / time.Second), ElicitID: randomID()}
	a := newApproval(s, c.key())
	a.summary = c.summary
	a.sealed = g.sealer.seal(s)
	if err := g.mem.add(a, now); err != nil {
		_ = g.cfg.Client.Cancel(context.WithoutCancel(ctx), p.AuthReqID)
		return nil, err
	}
	return a, nil
}

// elicit asks the user with elicitation/create, mode url, and waits for
// the decision (2025-11-25).
func (g *Gate) elicit(ctx context.Context, c *call, a *approval) (context.Context, *mcp.CallToolResult, error) {
	if tok, err := g.wait(ctx, a, g.now()); tok != nil || err != nil {
		return g.settle(ctx, c, a, tok, err)
	}
	if err := checkApprovalURL(a.ApprovalURL); err != nil {
		return ctx, nil, err
	}
	res, err := c.req.Session.Elicit(ctx, a.elicitParams(c, true))
	if err != nil {
		return ctx, nil, fmt.Errorf("mcpgate: asking the user to approve at %s failed: %w", a.ApprovalURL, err)
	}
	if res.Action != "accept" {
		return ctx, nil, g.withdraw(ctx, a)
	}
	// Polls up to the request's expiry, so the last poll learns it expired.
	tok, err := g.wait(ctx, a, a.expiresAt().Add(2*a.interval))
	if tok != nil || (err != nil && ctx.Err() == nil) {
		// SEP-1036: the out-of-band interaction has finished either way.
		_ = c.req.Session.NotifyElicitationComplete(ctx, &mcp.ElicitationCompleteParams{ElicitationID: a.ElicitID})
	}
	return g.settle(ctx, c, a, tok, err)
}

// settle turns a wait's outcome into the call's answer: run the tool with
// the redeemed token, an error saying why not, or the approval pending in
// the call's form.
func (g *Gate) settle(ctx context.Context, c *call, a *approval, tok *client.Token, err error) (context.Context, *mcp.CallToolResult, error) {
	switch {
	case err != nil && ctx.Err() != nil:
		return ctx, nil, context.Cause(ctx)
	case err != nil:
		return ctx, nil, outcomeError(err)
	case tok != nil:
		claims, err := g.cfg.Redeem(ctx, tok.AccessToken, c.details)
		if err != nil {
			return ctx, nil, fmt.Errorf("mcpgate: the call was approved, but redeeming its token failed, so it did not run: %w", err)
		}
		return context.WithValue(ctx, claimsKey{}, claims), nil, nil
	}
	if ctx.Err() != nil {
		return ctx, nil, context.Cause(ctx)
	}
	if err := checkApprovalURL(a.ApprovalURL); err != nil {
		return ctx, nil, err
	}
	switch c.form {
	case formInputRequired:
		return ctx, &mcp.CallToolResult{
			InputRequests: mcp.InputRequestMap{inputKey: a.elicitParams(c, false)},
			RequestState:  a.sealed,
		}, nil
	case formURLRequired:
		data, _ := json.Marshal(map[string]any{"elicitations": []*mcp.ElicitParams{a.elicitParams(c, true)}})
		return ctx, nil, &jsonrpc.Error{Code: mcp.CodeURLElicitationRequired, Data: data,
			Message: fmt.Sprintf("URL elicitation required: approve or deny at %s (the page shows %q), then call %s again with the same arguments",
				a.ApprovalURL, a.Binding, c.req.Params.Name)}
	}
	return ctx, nil, &PendingError{ApprovalURL: a.ApprovalURL, BindingMessage: a.Binding, Summary: a.summaryOr(c), Tool: c.req.Params.Name}
}

// elicitParams is the URL-mode elicitation that asks the user to decide;
// 2026-07-28 input requests carry no elicitationId.
func (a *approval) elicitParams(c *call, withID bool) *mcp.ElicitParams {
	p := &mcp.ElicitParams{Mode: "url", URL: a.ApprovalURL,
		Message: fmt.Sprintf("Countersign asks you to approve or deny: %s. The approval page shows %q.", a.summaryOr(c), a.Binding)}
	if withID {
		p.ElicitationID = a.ElicitID
	}
	return p
}

func (a *approval) summaryOr(c *call) string {
	if a.summary != "" {
		return a.summary
	}
	return c.summary
}

// checkApprovalURL refuses to send the user anywhere but to an absolute
// http(s) URL, which only Countersign's answer supplies.
func checkApprovalURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("mcpgate: Countersign answered no usable approval_url (%q), so nobody can be asked and the call did not run", raw)
	}
	return nil
}

// withdraw cancels an approval the user declined to open.
func (g *Gate) withdraw(ctx context.Context, a *approval) error {
	g.mem.forget(a)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pollTimeout)
	defer cancel()
	if err := g.cfg.Client.Cancel(cctx, a.AuthReqID); err != nil && !errors.Is(err, client.ErrInvalidGrant) {
		return fmt.Errorf("mcpgate: the user declined; withdrawing the approval request failed: %w", err)
	}
	return errors.New("mcpgate: the user declined to review the call, so it did not run; the approval request was withdrawn")
}

// declined reports whether the retry's answer to the gate's input request
// is the user's no.
func declined(responses mcp.InputResponseMap) bool {
	r, ok := responses[inputKey].(*mcp.ElicitResult)
	return ok && r.Action != "accept"
}

// PendingError is the tool error of a call whose approval is pending, for a
// client without URL elicitation: its text gives the approval URL and the
// binding message to a person reading the conversation.
type PendingError struct {
	ApprovalURL, BindingMessage, Summary, Tool string
}

func (e *PendingError) Error() string {
	return fmt.Sprintf("mcpgate: approval needed before %s runs: %s. Open %s to approve or deny; the page shows the binding message %q. Then call %s again with the same arguments.",
		e.Tool, e.Summary, e.ApprovalURL, e.BindingMessage, e.Tool)
}

// outcomeError says why an approval ended without a token.
func outcomeError(err error) error {
	var denied *client.DeniedError
	switch {
	case errors.As(err, &denied):
		return fmt.Errorf("mcpgate: Countersign denied the call, so it did not run: %s", denied.Reason)
	case errors.Is(err, client.ErrExpired):
		return errors.New("mcpgate: the approval request expired before anyone decided it, so the call did not run")
	case errors.Is(err, errNotPending), errors.Is(err, errFull):
		return err
	}
	return fmt.Errorf("mcpgate: asking Countersign failed, so the call did not run: %w", err)
}

// revisionOf returns the protocol revision of the call and the client's
// capabilities: per request (SEP-2575 _meta) from 2026-07-28, else the
// session's.
func revisionOf(req *mcp.CallToolRequest) (string, *mcp.ClientCapabilities) {
	ip := req.Session.InitializeParams()
	var caps *mcp.ClientCapabilities
	revision := ""
	if ip != nil {
		revision, caps = ip.ProtocolVersion, ip.Capabilities
	}
	if v, ok := req.Params.Meta[mcp.MetaKeyProtocolVersion].(string); ok && v >= rev20260728 {
		revision = v
	}
	return revision, caps
}

// user names the call's Countersign user.
func (g *Gate) user(ctx context.Context, req *mcp.CallToolRequest) (string, error) {
	if g.cfg.User != nil {
		u, err := g.cfg.User(ctx, req)
		if err == nil && u == "" {
			err = errors.New("mcpgate: the call names no user")
		}
		return u, err
	}
	if req.Extra != nil && req.Extra.TokenInfo != nil && req.Extra.TokenInfo.UserID != "" {
		return req.Extra.TokenInfo.UserID, nil
	}
	if ti := auth.TokenInfoFromContext(ctx); ti != nil && ti.UserID != "" {
		return ti.UserID, nil
	}
	if g.cfg.DefaultUser != "" {
		return g.cfg.DefaultUser, nil
	}
	return "", errors.New("mcpgate: the call names no user: it carries no authenticated identity and the gate has no DefaultUser")
}

// bindingMessage returns a short random code that the approval page shows
// and the elicitation names, so the user can tell the two belong together
// (CIBA §7.1 binding_message).
func bindingMessage() string {
	const alphabet = "BCDFGHJKLMNPQRSTVWXZ23456789" // no vowels, no 0/1/O/I
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "MCP " + string(b[:4]) + "-" + string(b[4:])
}

// randomID returns 128 random bits, hex.
func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

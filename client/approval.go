package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/countersign/countersign/protocol"
	"github.com/countersign/countersign/rar/canonical"
)

// Waiting rules (the poll interval and slow_down step are protocol's).
const (
	// pingBackstop is how long a ping-mode wait goes without a poll: a
	// lost or misrouted ping (or a request joined by an identical one,
	// whose pings go to the first caller's token) then costs this much.
	pingBackstop = 30 * time.Second
	// cancelTimeout bounds the /bc-cancel sent after the caller's context
	// ended.
	cancelTimeout = 10 * time.Second
)

// RequestOptions are the parameters of a backchannel authentication
// request (CIBA §7.1) besides the authorization_details.
type RequestOptions struct {
	// LoginHint names the user: an email or a user id. Exactly one of
	// LoginHint, IDTokenHint and LoginHintToken is required.
	LoginHint      string
	IDTokenHint    string
	LoginHintToken string
	// BindingMessage is shown to the user with the request and should be
	// shown by the agent too, so the user can tell the two belong
	// together: at most 64 characters.
	BindingMessage string
	// UserCode is the user's code, for a user who set one.
	UserCode string
	// Scope is "openid" when empty; it must contain openid.
	Scope string
	// ACRValues ask for at least this much (RFC 9470), such as
	// protocol.ACRStepUp for a fresh passkey check.
	ACRValues []string
	// RequestedExpiry shortens the request's life below its types' maximum.
	RequestedExpiry time.Duration
	// Resources are the resource servers the token is for (RFC 8707);
	// by default those registered for the request's types.
	Resources []string
	// OnPending, when set, is called once the request is accepted, before
	// any waiting: the place to show the user the approval URL and the
	// binding message. It is called for every accepted request, also one
	// that a rule approves at once.
	OnPending func(Pending)
}

// Pending is an accepted backchannel authentication request.
type Pending struct {
	AuthReqID string
	// ApprovalURL is the session-bound consent page where the user decides.
	ApprovalURL    string
	BindingMessage string
	ExpiresAt      time.Time
	// Interval is the wait between polls the server asked for.
	Interval time.Duration

	waiter   *pingWaiter // ping mode
	lastPoll time.Time
}

// Token is what an approved request yields: the single-transaction access
// token and the rest of the token response (CIBA §11).
type Token struct {
	protocol.TokenResponse
	AuthReqID string
	// ExpiresAt is when the access token expires, by this machine's clock.
	ExpiresAt time.Time
}

// RequestApproval asks Countersign to approve details — a JSON array of
// authorization_details objects (RFC 9396 §2): a json.RawMessage or []byte
// as it is, any other value as encoding/json writes it — and waits for the
// decision, by ping when the Client has a PingReceiver, else by polling.
// It returns the token, or an error that matches ErrDenied (a
// *DeniedError), ErrExpired, ErrInvalidDetails (an *InvalidDetailsError),
// ErrUnauthorizedClient or another of the package's errors. When ctx ends
// first, the request is withdrawn on the server (/bc-cancel) and ctx's
// error is returned.
func (c *Client) RequestApproval(ctx context.Context, details any, opts RequestOptions) (*Token, error) {
	p, err := c.Start(ctx, details, opts)
	if err != nil {
		return nil, err
	}
	if opts.OnPending != nil {
		opts.OnPending(*p)
	}
	tok, err := c.Wait(ctx, p)
	if err != nil && ctx.Err() != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
		defer cancel()
		if cerr := c.Cancel(cctx, p.AuthReqID); cerr != nil {
			return nil, fmt.Errorf("client: %w; withdrawing the request failed: %v", context.Cause(ctx), cerr)
		}
		return nil, context.Cause(ctx)
	}
	return tok, err
}

// Start sends the backchannel authentication request and returns it
// accepted; Wait (or Cancel) must follow. RequestApproval is Start,
// OnPending and Wait.
func (c *Client) Start(ctx context.Context, details any, opts RequestOptions) (*Pending, error) {
	raw, err := detailsJSON(details)
	if err != nil {
		return nil, err
	}
	md, err := c.meta.get(ctx)
	if err != nil {
		return nil, err
	}
	scope := opts.Scope
	if scope == "" {
		scope = "openid"
	}
	form := url.Values{"scope": {scope}, "authorization_details": {string(raw)}}
	for k, v := range map[string]string{"login_hint": opts.LoginHint, "id_token_hint": opts.IDTokenHint,
		"login_hint_token": opts.LoginHintToken, "binding_message": opts.BindingMessage, "user_code": opts.UserCode} {
		if v != "" {
			form.Set(k, v)
		}
	}
	if len(opts.ACRValues) > 0 {
		form.Set("acr_values", strings.Join(opts.ACRValues, " "))
	}
	if opts.RequestedExpiry > 0 {
		form.Set("requested_expiry", strconv.Itoa(int((opts.RequestedExpiry+time.Second-1)/time.Second)))
	}
	for _, r := range opts.Resources {
		form.Add("resource", r)
	}
	var w *pingWaiter
	if c.cfg.Ping != nil {
		// Registered before the request: a request a rule approves at once
		// is pinged at once, maybe before its answer arrives here.
		w = c.cfg.Ping.register(randomToken())
		form.Set("client_notification_token", w.token)
	}
	sent := time.Now()
	var ar protocol.AuthorizeResponse
	if err := postForm(ctx, c.http, md.BackchannelAuthenticationEndpoint, form, c.authFor(md), &ar); err != nil {
		if w != nil {
			c.cfg.Ping.unregister(w)
		}
		return nil, typed(err, true)
	}
	if ar.AuthReqID == "" {
		if w != nil {
			c.cfg.Ping.unregister(w)
		}
		return nil, errors.New("client: /bc-authorize answered without an auth_req_id")
	}
	if w != nil {
		c.cfg.Ping.bind(w, ar.AuthReqID)
	}
	interval := time.Duration(ar.Interval) * time.Second
	if interval <= 0 {
		interval = protocol.DefaultPollInterval
	}
	return &Pending{AuthReqID: ar.AuthReqID, ApprovalURL: ar.ApprovalURL, BindingMessage: opts.BindingMessage,
		ExpiresAt: sent.Add(time.Duration(ar.ExpiresIn) * time.Second), Interval: interval, waiter: w}, nil
}

// Wait waits for the decision of p: by ping when p was started with a
// PingReceiver, else by polling every p.Interval, slowing down as slow_down
// and Retry-After say. Unlike RequestApproval it does not withdraw the
// request when ctx ends, so a caller can wait a while, answer someone, and
// wait again with the same p.
func (c *Client) Wait(ctx context.Context, p *Pending) (*Token, error) {
	if p.waiter != nil {
		return c.waitPing(ctx, p)
	}
	return c.waitPoll(ctx, p)
}

// waitPoll polls: at once the first time (a request's first poll is never
// too soon), then every interval.
func (c *Client) waitPoll(ctx context.Context, p *Pending) (*Token, error) {
	for {
		if tok, _, err := c.pollStep(ctx, p); tok != nil || err != nil {
			return tok, err
		}
	}
}

// pollStep waits until p's interval since the last poll has passed (none
// before the first) and polls once. It returns the token, or an error that
// ends the wait, or neither: the request is pending, the server asked to
// slow down (the interval grows), or the server or the network is having a
// bad moment (transient; the request is kept, the decision will still be
// there).
func (c *Client) pollStep(ctx context.Context, p *Pending) (tok *Token, transient bool, err error) {
	if !p.lastPoll.IsZero() {
		if err := sleep(ctx, time.Until(p.lastPoll.Add(p.Interval))); err != nil {
			return nil, false, err
		}
	}
	tok, err = c.poll(ctx, p)
	switch {
	case err == nil:
		return tok, false, nil
	case errors.Is(err, ErrPending):
		return nil, false, nil
	case errors.Is(err, ErrSlowDown):
		c.slowDown(p, err)
		return nil, false, nil
	case retryable(err) && time.Now().Before(p.ExpiresAt):
		p.Interval = max(p.Interval, retryAfterOf(err))
		return nil, true, nil
	default:
		return nil, false, err
	}
}

// slowDown applies CIBA §11 / RFC 8628 §3.5: the interval grows by 5 s
// for this and every later poll; a Retry-After beyond that is honoured.
func (c *Client) slowDown(p *Pending, err error) {
	p.Interval += protocol.SlowDownStep
	p.Interval = max(p.Interval, retryAfterOf(err))
}

// waitPing waits for the ping of p's request, then collects the token. It
// polls without one too, every pingBackstop (or the interval, when that is
// longer), and once the request has expired, to learn so.
func (c *Client) waitPing(ctx context.Context, p *Pending) (*Token, error) {
	defer c.cfg.Ping.unregister(p.waiter)
	for {
		t := time.NewTimer(min(max(pingBackstop, p.Interval), time.Until(p.ExpiresAt)))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, context.Cause(ctx)
		case <-p.waiter.ch:
			t.Stop()
		case <-t.C:
		}
		// Never sooner than the interval, even for a ping.
		tok, transient, err := c.pollStep(ctx, p)
		if tok != nil || err != nil {
			return tok, err
		}
		if transient {
			p.waiter.signal() // the ping is spent: poll again after the interval
		}
	}
}

// Poll asks the token endpoint once for the token of authReqID. Besides
// the errors of RequestApproval it returns ErrPending and ErrSlowDown
// (*Error values whose RetryAfter says when to ask again).
func (c *Client) Poll(ctx context.Context, authReqID string) (*Token, error) {
	return c.poll(ctx, &Pending{AuthReqID: authReqID})
}

func (c *Client) poll(ctx context.Context, p *Pending) (*Token, error) {
	md, err := c.meta.get(ctx)
	if err != nil {
		return nil, err
	}
	p.lastPoll = time.Now()
	var tr protocol.TokenResponse
	err = postForm(ctx, c.http, md.TokenEndpoint, url.Values{"grant_type": {protocol.GrantTypeCIBA}, "auth_req_id": {p.AuthReqID}}, c.authFor(md), &tr)
	if err != nil {
		return nil, typed(err, false)
	}
	if tr.AccessToken == "" {
		return nil, errors.New("client: /token answered without an access_token")
	}
	return &Token{TokenResponse: tr, AuthReqID: p.AuthReqID, ExpiresAt: p.lastPoll.Add(time.Duration(tr.ExpiresIn) * time.Second)}, nil
}

// Cancel withdraws a pending request (Countersign's /bc-cancel).
func (c *Client) Cancel(ctx context.Context, authReqID string) error {
	if c.cfg.Ping != nil {
		c.cfg.Ping.unregisterID(authReqID)
	}
	md, err := c.meta.get(ctx)
	if err != nil {
		return err
	}
	if md.BackchannelCancelEndpoint == "" {
		return errors.New("client: the server names no backchannel_cancel_endpoint")
	}
	return typed(postForm(ctx, c.http, md.BackchannelCancelEndpoint, url.Values{"auth_req_id": {authReqID}}, c.authFor(md), nil), false)
}

// authFor authenticates requests to md's endpoints; private_key_jwt
// assertions name the issuer as their audience (RFC 7523 §3).
func (c *Client) authFor(md *protocol.ProviderMetadata) func(*http.Request, url.Values) error {
	return func(req *http.Request, form url.Values) error { return c.auth(req, form, md.Issuer) }
}

// detailsJSON returns the authorization_details to send, refusing here what
// the server would refuse whatever its types say.
func detailsJSON(details any) ([]byte, error) {
	var raw []byte
	switch d := details.(type) {
	case json.RawMessage:
		raw = d
	case []byte:
		raw = d
	default:
		b, err := json.Marshal(details)
		if err != nil {
			return nil, fmt.Errorf("client: authorization_details: %w", err)
		}
		raw = b
	}
	if _, err := canonical.Decode(raw); err != nil {
		var fe *canonical.FieldError
		if errors.As(err, &fe) {
			return nil, &InvalidDetailsError{Index: fe.Index, Path: fe.Path, Rule: fe.Rule, Message: fe.Message, err: fe}
		}
		return nil, err
	}
	return raw, nil
}

// retryable reports an error after which the same call may succeed.
func retryable(err error) bool {
	var e *Error
	var te *transportError
	return errors.As(err, &te) || (errors.As(err, &e) && e.transient())
}

func retryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

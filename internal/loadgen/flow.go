package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/lib/pq"

	"github.com/countersign/countersign/approvals"
)

// grantTypeCIBA is the CIBA grant type (CIBA §10.1).
const grantTypeCIBA = "urn:openid:params:grant-type:ciba"

// DefaultPingWait bounds the wait for one ping.
const DefaultPingWait = 30 * time.Second

// flowError is why a flow failed. Kind, "<step>: <what>", groups the errors
// a Summary counts: an OAuth error code, an HTTP status, a kind of transport
// failure, never anything that differs from flow to flow.
type flowError struct {
	Kind string
	Err  error
}

func (e *flowError) Error() string { return e.Err.Error() }

// errStopped: the run was stopped (Ctrl-C, --timeout) while the flow was in
// flight; such a flow is neither a flow nor an error.
var errStopped = &flowError{Kind: "stopped", Err: errors.New("loadgen: stopped")}

// runner runs flows against one server.
type runner struct {
	cfg  Config
	http *http.Client
}

// flow runs flow number i of the run, recording each step's latency in rec.
func (r *runner) flow(ctx context.Context, i int, rec *recorder) *flowError {
	agent := r.cfg.Agents[i%len(r.cfg.Agents)]
	user := r.cfg.Users[i%len(r.cfg.Users)]
	details := r.cfg.Scenario.DetailsFor(i)
	ping := r.cfg.Scenario == Human && r.cfg.Delivery == DeliveryPing

	form := url.Values{"scope": {"openid"}, "login_hint": {user.Hint}, "authorization_details": {details},
		"resource": {r.cfg.Audience}}
	var bearer string
	if ping {
		bearer = newBearer()
		form.Set("client_notification_token", bearer)
	}
	var created struct {
		AuthReqID   string `json:"auth_req_id"`
		ApprovalURL string `json:"approval_url"`
	}
	if err := r.call(ctx, rec, StepAuthorize, agent, form, &created); err != nil {
		return err
	}
	if created.AuthReqID == "" {
		return &flowError{StepAuthorize + ": no auth_req_id", errors.New("loadgen: bc-authorize answered no auth_req_id")}
	}

	if r.cfg.Scenario == Human {
		// The consent page's URL ends with the request id, which the
		// approver's review names.
		requestID := created.ApprovalURL[strings.LastIndex(created.ApprovalURL, "/")+1:]
		var pinged <-chan error
		if ping {
			// Registered before the review: the ping may come at once.
			pinged = r.cfg.Pings.expect(created.AuthReqID, bearer)
			defer r.cfg.Pings.forget(created.AuthReqID)
		}
		t := time.Now()
		if err := r.cfg.Review(ctx, requestID, user.ID); err != nil {
			if ctx.Err() != nil {
				return errStopped
			}
			return &flowError{StepReview + ": " + reviewKind(err), err}
		}
		rec.add(StepReview, time.Since(t))
		if ping {
			t = time.Now()
			wait := time.NewTimer(r.cfg.PingWait)
			defer wait.Stop()
			select {
			case err := <-pinged:
				if err != nil {
					return &flowError{StepPing + ": wrong bearer token", err}
				}
			case <-wait.C:
				return &flowError{StepPing + ": timeout", fmt.Errorf("loadgen: no ping within %s (the server delivers plain http to loopback only in --dev mode)", r.cfg.PingWait)}
			case <-ctx.Done():
				return errStopped
			}
			rec.add(StepPing, time.Since(t))
		}
	}

	// The first poll of a request is never too soon (CIBA §7.3): an allowed
	// request, and a reviewed one, answer with the token at once.
	var token struct {
		AccessToken string `json:"access_token"`
	}
	if err := r.call(ctx, rec, StepToken, agent, url.Values{"grant_type": {grantTypeCIBA}, "auth_req_id": {created.AuthReqID}}, &token); err != nil {
		return err
	}
	if token.AccessToken == "" {
		return &flowError{StepToken + ": no access_token", errors.New("loadgen: the token response has no access_token")}
	}

	if r.cfg.Scenario == AutoRedeem {
		var redeemed struct {
			Active bool   `json:"active"`
			Reason string `json:"reason"`
		}
		if err := r.call(ctx, rec, StepRedeem, r.cfg.RS, url.Values{"token": {token.AccessToken}, "authorization_details": {details}}, &redeemed); err != nil {
			return err
		}
		if !redeemed.Active {
			return &flowError{StepRedeem + ": " + redeemed.Reason, fmt.Errorf("loadgen: redeem answered active false: %s", redeemed.Reason)}
		}
	}
	return nil
}

// call POSTs form to endpoint step as client c and decodes a 200 answer into
// out. The latency of every answered call is recorded.
func (r *runner) call(ctx context.Context, rec *recorder, step string, c Client, form url.Values, out any) *flowError {
	if c.Post {
		form.Set("client_id", c.ID)
		form.Set("client_secret", c.Secret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.BaseURL+step, strings.NewReader(form.Encode()))
	if err != nil {
		return &flowError{step + ": request", err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if !c.Post {
		// RFC 6749 §2.3.1: the credentials are form-encoded first.
		req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	}
	t := time.Now()
	resp, err := r.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return errStopped
		}
		return &flowError{step + ": " + transportKind(err), err}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		if ctx.Err() != nil {
			return errStopped
		}
		return &flowError{step + ": " + transportKind(err), err}
	}
	rec.add(step, time.Since(t))
	if resp.StatusCode != http.StatusOK {
		var oauth struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		kind := fmt.Sprintf("%s: HTTP %d", step, resp.StatusCode)
		if json.Unmarshal(body, &oauth) == nil && oauth.Error != "" {
			kind = step + ": " + oauth.Error
		}
		return &flowError{kind, fmt.Errorf("loadgen: %s answered %d: %.300s", step, resp.StatusCode, body)}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return &flowError{step + ": malformed answer", fmt.Errorf("loadgen: %s: %w", step, err)}
	}
	return nil
}

// transportKind names a failed HTTP exchange without its addresses.
func transportKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, ErrNotLoopback):
		return "not loopback"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "transport error"
}

// reviewKind names why the domain refused a review, or what PostgreSQL
// said (deadlock_detected, serialization_failure, …).
func reviewKind(err error) string {
	var pe *pq.Error
	if errors.As(err, &pe) {
		return pe.Code.Name()
	}
	for _, k := range []struct {
		err  error
		name string
	}{
		{approvals.ErrNotFound, "not found"},
		{approvals.ErrAlreadyDecided, "already decided"},
		{approvals.ErrWrongState, "wrong state"},
		{approvals.ErrExpired, "expired"},
		{approvals.ErrConflict, "conflict"},
		{approvals.ErrNotAllowed, "not allowed"},
	} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "error"
}

// newBearer returns a fresh client_notification_token: 128 random bits, in
// the b64token syntax of RFC 6750 §2.1.
func newBearer() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

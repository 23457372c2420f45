package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/countersign/countersign/protocol"
)

// ping sends the CIBA ping callback of r (CIBA §10.2):
//
//	POST <client_notification_endpoint>
//	Authorization: Bearer <client_notification_token>
//	Content-Type: application/json
//
//	{"auth_req_id": "…"}
//
// "The Client MUST NOT return an HTTP 3xx code. The OP MUST NOT follow
// redirects." A 3xx is therefore dropped like any other 4xx: the endpoint is
// misconfigured and retrying will not change that. 5xx, timeouts and
// connection failures are retried; CIBA leaves them to the OP.
func (w *Worker) ping(ctx context.Context, r row) outcome {
	if r.Bearer == nil || *r.Bearer == "" {
		return outcome{drop: DropInvalid, err: "no client_notification_token"}
	}
	u, err := w.policy.CheckURL(r.Target)
	if err != nil {
		return outcome{drop: DropForbidden, err: err.Error()}
	}
	handle, err := w.authReqID(r.RequestID)
	if err != nil {
		return outcome{drop: DropInvalid, err: err.Error()}
	}
	body, err := json.Marshal(protocol.PingNotification{AuthReqID: handle})
	if err != nil {
		return outcome{drop: DropInvalid, err: err.Error()}
	}
	// The send is not cut short when the worker is told to stop: a request
	// that reached the client is better recorded than sent again.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(sctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return outcome{drop: DropInvalid, err: err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+*r.Bearer)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "countersign")
	resp, err := w.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrForbiddenTarget) {
			return outcome{drop: DropForbidden, err: sendError(err)}
		}
		return outcome{err: sendError(err)}
	}
	// CIBA §10.2: any body in the response is ignored.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	o := outcome{status: resp.StatusCode}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		o.delivered = true
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		o.drop, o.err = DropRedirected, fmt.Sprintf("HTTP %d: redirects are not followed", resp.StatusCode)
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		o.drop, o.err = DropRejected, fmt.Sprintf("HTTP %d", resp.StatusCode)
	default:
		o.err = fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	return o
}

// sendError describes a failed send without the URL that *url.Error repeats.
func sendError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return "timeout: " + ue.Err.Error()
		}
		return ue.Err.Error()
	}
	return err.Error()
}

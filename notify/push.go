package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	webpush "github.com/SherClockHolmes/webpush-go"

	"github.com/countersign/countersign/approvals"
)

// Push-specific reasons a row is dropped.
const (
	DropGone       = "gone"       // the push service answered 404 or 410: the subscription is removed
	DropSuperseded = "superseded" // the request was decided before its "new" push went out
)

// VAPID returns the server's Web Push keys (approvals.KeyStore.VAPID).
type VAPID func(ctx context.Context) (public, private string, err error)

// maxRetryAfter bounds how long a push service's Retry-After can hold a row
// back (it still expires with its request).
const maxRetryAfter = 10 * time.Minute

// push sends the Web Push message of r (RFC 8030 §5) to its subscription's
// push service, encrypted for the device (RFC 8291, aes128gcm) and signed
// with VAPID (RFC 8292): TTL the request's remaining life, Urgency high for
// a new request, Topic the request id, so that a newer message for the same
// request (its "decided") replaces one that still waits. The endpoint was
// chosen by a browser: it gets the outbound rules of ping callbacks (https,
// public addresses unless allowed, checked at connect time, no redirects).
// 404 and 410 remove the subscription; 429 and 5xx are retried, no sooner
// than the push service's Retry-After.
func (w *Worker) push(ctx context.Context, r row) outcome {
	if w.vapid == nil {
		return outcome{drop: DropInvalid, err: "no VAPID keys configured"}
	}
	if r.SubscriptionID == nil {
		return outcome{drop: DropGone, err: "the subscription was removed"}
	}
	var sub struct {
		P256dh string `db:"p256dh"`
		Auth   string `db:"auth"`
	}
	if err := w.db.GetContext(ctx, &sub, `SELECT p256dh, auth FROM push_subscriptions WHERE id = $1`, *r.SubscriptionID); err != nil {
		return outcome{drop: DropGone, err: "the subscription was removed"}
	}
	if _, err := w.policy.CheckURL(r.Target); err != nil {
		return outcome{drop: DropForbidden, err: err.Error()}
	}
	ttl := int(time.Until(r.ExpiresAt) / time.Second)
	if ttl <= 0 {
		return outcome{drop: DropExpired, err: "the request expired"}
	}
	public, private, err := w.vapid(ctx)
	if err != nil {
		return outcome{err: "VAPID keys: " + err.Error()}
	}
	var msgType struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(r.Payload, &msgType); err != nil {
		return outcome{drop: DropInvalid, err: "the message is not JSON"}
	}
	urgency := webpush.UrgencyHigh // RFC 8030 §5.3: a person is waited for
	if msgType.Type == "decided" {
		urgency = webpush.UrgencyNormal
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.timeout)
	defer cancel()
	// webpush-go pads the message in its buffer: it gets a copy.
	msg := append([]byte(nil), r.Payload...)
	resp, err := webpush.SendNotificationWithContext(sctx, msg, &webpush.Subscription{Endpoint: r.Target,
		Keys: webpush.Keys{P256dh: sub.P256dh, Auth: sub.Auth}}, &webpush.Options{
		HTTPClient: w.client, Subscriber: w.subscriber, VAPIDPublicKey: public, VAPIDPrivateKey: private,
		TTL: ttl, Urgency: urgency, Topic: pushTopic(r.RequestID), VapidExpiration: time.Now().Add(12 * time.Hour),
	})
	if err != nil {
		if errors.Is(err, ErrForbiddenTarget) {
			return outcome{drop: DropForbidden, err: sendError(err)}
		}
		return outcome{err: sendError(err)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	o := outcome{status: resp.StatusCode}
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		o.delivered = true
		_, _ = w.db.ExecContext(ctx, `UPDATE push_subscriptions SET last_pushed_at = now() WHERE id = $1`, *r.SubscriptionID)
	case s == http.StatusNotFound || s == http.StatusGone:
		// RFC 8030 §7.3: the subscription has expired or was unsubscribed.
		o.drop, o.err = DropGone, fmt.Sprintf("HTTP %d: the subscription is gone", s)
		if _, err := w.db.ExecContext(ctx, removeGoneSQL, *r.SubscriptionID, s); err == nil {
			w.logger.InfoContext(ctx, "push subscription removed: the push service no longer knows it", "device", *r.SubscriptionID, "status", s)
		}
	case s == http.StatusTooManyRequests || s >= 500:
		o.err = fmt.Sprintf("HTTP %d", s)
		o.retryIn = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	case s >= 300 && s < 400:
		o.drop, o.err = DropRedirected, fmt.Sprintf("HTTP %d: redirects are not followed", s)
	default:
		o.drop, o.err = DropRejected, fmt.Sprintf("HTTP %d", s)
	}
	return o
}

// removeGoneSQL removes subscription $1, which its push service no longer
// knows (it answered $2), with its event.
const removeGoneSQL = `
WITH d AS (DELETE FROM push_subscriptions WHERE id = $1 RETURNING id, user_id)
INSERT INTO audit_events (kind, actor, user_id, body)
SELECT '` + approvals.KindPushRemoved + `', '` + approvals.ActorNotify + `', d.user_id,
	jsonb_build_object('device', d.id, 'reason', 'gone', 'status', $2::int)
FROM d`

// pushTopic is the Topic of request id's messages (RFC 8030 §5.4: at most
// 32 characters of the base64url alphabet): the id's hex digits.
func pushTopic(id string) string { return strings.ReplaceAll(id, "-", "") }

// retryAfter reads a Retry-After header (RFC 9110 §10.2.3: seconds or an
// HTTP date); 0 when there is none or it cannot be read, at most
// maxRetryAfter.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

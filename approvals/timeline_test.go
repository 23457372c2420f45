package approvals

import (
	"encoding/json"
	"testing"
)

// TestDescribe: each kind of a request's timeline reads as one line that
// says what its body holds.
func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		kind, body, want string
	}{
		{KindRequestCreated, `{"types":["payment_initiation"],"policy_version":3,"rule":"small","outcome":"allow","reason":"Small"}`,
			`asked for payment_initiation; policy version 3, rule "small": allow (Small)`},
		{KindRequestCreated, `{"types":["payment_initiation"],"policy_version":0,"outcome":"deny","reason":"no policy"}`,
			`asked for payment_initiation; decided without a policy rule: deny (no policy)`},
		{KindNotificationQueued, `{"channel":"push","message":"new","device":"dev_1","outbox_id":7}`, `push "new" queued for device dev_1 (outbox row 7)`},
		{KindNotificationSent, `{"channel":"ping","attempt":2,"status":204,"outbox_id":7}`, `ping delivered, attempt 2, HTTP 204 (outbox row 7)`},
		{KindNotificationFailed, `{"channel":"ping","attempt":1,"status":503,"error":"http_status","final":false,"retry_in_seconds":2,"outbox_id":7}`,
			`ping failed, attempt 1: http_status (HTTP 503), retry in 2 s (outbox row 7)`},
		{KindNotificationFailed, `{"channel":"push","attempt":1,"status":410,"error":"gone","final":true,"reason":"gone","outbox_id":8}`,
			`push failed, attempt 1: gone (HTTP 410), given up: gone (outbox row 8)`},
		{KindNotificationDropped, `{"channel":"push","reason":"superseded","attempts":0,"outbox_id":9}`, `push dropped unsent: superseded (outbox row 9)`},
		{KindTokenRevoked, `{"jti":"j1","reason":"agent suspended"}`, `token revoked, jti j1: agent suspended`},
		{KindAgentReported, `{"request_id":"r","suspended":true,"denied":["a","b"]}`,
			`reported as not theirs ("this wasn't me"); the agent was suspended; 2 pending request(s) denied`},
		{"type.created", `{"x":1}`, `type.created {"x":1}`},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			got := Describe(TimelineEvent{Event: Event{Kind: tc.kind, Body: json.RawMessage(tc.body)}})
			if got != tc.want {
				t.Errorf("Describe(%s %s)\n got %s\nwant %s", tc.kind, tc.body, got, tc.want)
			}
		})
	}
}

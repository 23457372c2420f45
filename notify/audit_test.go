package notify

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign/approvals"
)

// notification is one notification.* audit event of a request, its body
// decoded.
type notification struct {
	Kind, Actor string
	Body        map[string]any
	raw         string
}

// notifications are request id's notification events, oldest first. Each
// must be by the notifier, about the request's agent and user, and hold no
// target, bearer or payload.
func (f *fixture) notifications(t *testing.T, id string, secrets ...string) []notification {
	t.Helper()
	var rows []struct {
		Kind    string  `db:"kind"`
		Actor   string  `db:"actor"`
		AgentID *string `db:"agent_id"`
		UserID  *string `db:"user_id"`
		Body    string  `db:"body"`
	}
	if err := f.db.Select(&rows, `SELECT kind, actor, agent_id, user_id, body FROM audit_events
		WHERE request_id = $1 AND kind LIKE 'notification.%' ORDER BY id`, id); err != nil {
		t.Fatal(err)
	}
	out := make([]notification, 0, len(rows))
	for _, r := range rows {
		n := notification{Kind: r.Kind, Actor: r.Actor, raw: r.Body}
		if err := json.Unmarshal([]byte(r.Body), &n.Body); err != nil {
			t.Fatal(err)
		}
		if r.Actor != approvals.ActorNotify || r.AgentID == nil || r.UserID == nil || *r.UserID != f.user.ID {
			t.Errorf("%s by %s about agent %v, user %v", r.Kind, r.Actor, r.AgentID, r.UserID)
		}
		for _, k := range []string{"target", "bearer", "payload", "url", "endpoint"} {
			if _, ok := n.Body[k]; ok {
				t.Errorf("%s body has %s: %s", r.Kind, k, r.Body)
			}
		}
		for _, s := range append(secrets, "http://", "https://", "127.0.0.1") {
			if strings.Contains(r.Body, s) {
				t.Errorf("%s body holds %q: %s", r.Kind, s, r.Body)
			}
		}
		out = append(out, n)
	}
	return out
}

// kinds are the kinds of ns in order, each with its attempt's status or
// class: "sent 204", "failed 503", "failed timeout", "dropped expired".
func kinds(ns []notification) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		s := strings.TrimPrefix(n.Kind, "notification.")
		switch {
		case n.Body["status"] != nil:
			s += " " + strings.TrimSuffix(strings.TrimSuffix(jsonText(n.Body["status"]), ".0"), "")
		case n.Body["error"] != nil:
			s += " " + jsonText(n.Body["error"])
		case n.Body["reason"] != nil:
			s += " " + jsonText(n.Body["reason"])
		}
		out[i] = s
	}
	return out
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return strings.Trim(string(b), `"`)
}

// wantNotifications checks request id's notification events against want
// (as kinds gives them).
func (f *fixture) wantNotifications(t *testing.T, id string, want []string, secrets ...string) []notification {
	t.Helper()
	ns := f.notifications(t, id, secrets...)
	if got := kinds(ns); !slices.Equal(got, want) {
		t.Errorf("notification events %v, want %v", got, want)
	}
	return ns
}

package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/pgtest"
)

// oauthEndpoints are the OAuth endpoints by the method each accepts.
var oauthEndpoints = map[string][]string{
	http.MethodGet:  {"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/jwks.json"},
	http.MethodPost: {"/bc-authorize", "/bc-cancel", "/token", "/introspect", "/redeem", "/revoke"},
}

// TestOAuthHeadersTooLarge: request headers beyond MaxHeaderBytes are
// answered 431 in OAuth JSON at every OAuth endpoint.
func TestOAuthHeadersTooLarge(t *testing.T) {
	e := newTestEnv(t)
	for accepted, paths := range oauthEndpoints {
		for _, path := range paths {
			t.Run(path, func(t *testing.T) {
				req, err := http.NewRequest(accepted, e.srv.URL+path, strings.NewReader(""))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.Header.Set("X-Padding", strings.Repeat("a", MaxHeaderBytes))
				wantOAuthError(t, e.do(req), http.StatusRequestHeaderFieldsTooLarge, "invalid_request")
			})
		}
	}
	// Headers just under the limit are served.
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/jwks.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Padding", strings.Repeat("a", MaxHeaderBytes-1024))
	if r := e.do(req); r.Status != http.StatusOK {
		t.Fatalf("headers under the limit: %d %s", r.Status, r.Body)
	}
}

// logBuffer collects a server's JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestClientGoneIsNotAnInternalError: a client that hangs up while its
// request waits on the database is logged as gone, at debug level, and not
// as an internal error.
func TestClientGoneIsNotAnInternalError(t *testing.T) {
	db := pgtest.New(t)
	var logs logBuffer
	e := newTestEnvOn(t, db, nil, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))

	// Client authentication reads agents: the request waits on this lock.
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`LOCK TABLE agents IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := e.formRequest("/bc-authorize", &e.agent, url.Values{"scope": {"openid"}, "login_hint": {"alice@example.com"},
		"authorization_details": {paymentEUR}}).WithContext(ctx)
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	waitFor(t, 10*time.Second, "the request to wait on the lock", func() bool {
		var n int
		err := db.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)
		return err == nil && n > 0
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v, want context.Canceled", err)
	}
	waitFor(t, 10*time.Second, "the server to log the abandoned request", func() bool {
		return strings.Contains(logs.String(), `"path":"/bc-authorize"`)
	})
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec struct{ Level, Msg string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if strings.HasPrefix(rec.Msg, "passkeys unavailable") {
			continue // the start-up warning of a test server whose issuer is an IP address
		}
		if rec.Level == "ERROR" || rec.Level == "WARN" || strings.Contains(rec.Msg, "internal error") {
			t.Errorf("a client hanging up was logged as %s %q:\n%s", rec.Level, rec.Msg, line)
		}
	}
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

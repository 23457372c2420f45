package web

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// postJSON POSTs body to path as the page's script does: the session
// cookie, its form token in X-CSRF-Token (csrf "": none).
func (e *testEnv) postJSON(path string, c *http.Cookie, csrf string, body any) response {
	e.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if csrf != "" {
		req.Header.Set("X-CSRF-Token", csrf)
	}
	req.AddCookie(c)
	return e.noRedirect(req)
}

func TestPushSubscriptionEndpoints(t *testing.T) {
	e := newTestEnv(t)
	if r := e.page("/push/key", nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("signed-out /push/key: %d", r.Status)
	}
	alice, csrf := e.pageSession(e.user)
	r := e.page("/push/key", alice)
	var key struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal(r.Body, &key); err != nil || r.Status != http.StatusOK {
		t.Fatalf("/push/key: %d %s", r.Status, r.Body)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(key.PublicKey); err != nil || len(raw) != 65 || raw[0] != 4 {
		t.Fatalf("the application server key %q is not an uncompressed P-256 point", key.PublicKey)
	}
	if again := e.page("/push/key", alice); !bytes.Contains(again.Body, []byte(key.PublicKey)) {
		t.Error("the VAPID key changed between two reads")
	}

	dev, _ := ecdh.P256().GenerateKey(rand.Reader)
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	sub := func(endpoint string) map[string]any {
		return map[string]any{"name": "Phone", "subscription": map[string]any{"endpoint": endpoint,
			"keys": map[string]string{"p256dh": base64.RawURLEncoding.EncodeToString(dev.PublicKey().Bytes()), "auth": base64.RawURLEncoding.EncodeToString(secret)}}}
	}
	if r := e.postJSON("/push/subscriptions", alice, "", sub("https://push.example.com/s/1")); r.Status != http.StatusForbidden {
		t.Errorf("without the form token: %d", r.Status)
	}
	for _, bad := range []string{"http://push.example.com/s/1", "https://", "not a url"} {
		if r := e.postJSON("/push/subscriptions", alice, csrf, sub(bad)); r.Status != http.StatusUnprocessableEntity || !strings.Contains(string(r.Body), "https") {
			t.Errorf("endpoint %q: %d %s, want 422 saying why", bad, r.Status, r.Body)
		}
	}
	badKey := sub("https://push.example.com/s/1")
	badKey["subscription"].(map[string]any)["keys"] = map[string]string{"p256dh": "AAAA", "auth": "short"}
	if r := e.postJSON("/push/subscriptions", alice, csrf, badKey); r.Status != http.StatusUnprocessableEntity || !strings.Contains(string(r.Body), "p256dh") {
		t.Errorf("bad keys: %d %s", r.Status, r.Body)
	}
	r = e.postJSON("/push/subscriptions", alice, csrf, sub("https://push.example.com/s/1"))
	if r.Status != http.StatusCreated || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("subscribe: %d %v %s", r.Status, r.Header, r.Body)
	}
	devices, err := e.svc.Store().PushSubscriptions(t.Context(), e.user.ID)
	if err != nil || len(devices) != 1 || devices[0].Name != "Phone" {
		t.Fatalf("devices: %+v %v", devices, err)
	}
	if p := e.page("/settings", alice); !bytes.Contains(p.Body, []byte("Phone")) || !bytes.Contains(p.Body, []byte(`id="enable-push"`)) {
		t.Errorf("settings do not list the device:\n%s", p.Body)
	}

	// Bob cannot remove alice's device; alice can.
	bob, bobCSRF := e.pageSession(e.newUser("bob@example.com", ""))
	if r := e.submit("/settings/devices/remove", bob, url.Values{"csrf": {bobCSRF}, "id": {devices[0].ID}}); r.Status != http.StatusNotFound {
		t.Errorf("bob removing alice's device: %d", r.Status)
	}
	if r := e.submit("/settings/devices/remove", alice, url.Values{"csrf": {csrf}, "id": {devices[0].ID}}); r.Status != http.StatusSeeOther {
		t.Errorf("alice removing her device: %d %s", r.Status, r.Body)
	}
	if d, _ := e.svc.Store().PushSubscriptions(t.Context(), e.user.ID); len(d) != 0 {
		t.Errorf("devices after removal: %+v", d)
	}
}

func TestPWAFiles(t *testing.T) {
	e := newTestEnv(t)
	sw := e.page("/sw.js", nil)
	if sw.Status != http.StatusOK || !strings.HasPrefix(sw.Header.Get("Content-Type"), "text/javascript") || !bytes.Contains(sw.Body, []byte(`addEventListener("push"`)) {
		t.Fatalf("/sw.js: %d %v", sw.Status, sw.Header)
	}
	if bytes.Contains(sw.Body, []byte(`addEventListener("fetch"`)) {
		t.Error("the service worker handles fetches; it should do push and clicks only")
	}
	m := e.page("/manifest.webmanifest", nil)
	var manifest struct {
		Name, StartURL, Display string
		Icons                   []struct{ Src, Sizes, Type string }
	}
	if err := json.Unmarshal(m.Body, &manifest); err != nil || m.Header.Get("Content-Type") != "application/manifest+json" || len(manifest.Icons) != 2 {
		t.Fatalf("manifest: %v %v %s", err, m.Header, m.Body)
	}
	for _, ic := range manifest.Icons {
		if r := e.page(ic.Src, nil); r.Status != http.StatusOK || r.Header.Get("Content-Type") != "image/png" {
			t.Errorf("icon %s: %d %s", ic.Src, r.Status, r.Header.Get("Content-Type"))
		}
	}
	if csp := e.page("/signin", nil).Header.Get("Content-Security-Policy"); !strings.Contains(csp, "worker-src 'self'") {
		t.Errorf("CSP %q does not allow the service worker", csp)
	}
}

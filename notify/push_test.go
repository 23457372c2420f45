package notify

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ece "github.com/crow-misia/http-ece"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/countersign/countersign/approvals"
)

// pushService stands in for a browser vendor's push service (RFC 8030): it
// checks each message's VAPID authorization (RFC 8292) against the server's
// published key, decrypts the aes128gcm body (RFC 8291) with the device's
// private key and authentication secret, and records what it got. answer
// says the status (and Retry-After) of the n-th message (1-based) to a
// device's path.
type pushService struct {
	t      testing.TB
	srv    *httptest.Server
	vapid  string // the application server key browsers were given
	mu     sync.Mutex
	got    []pushed
	bad    []string // what failed verification
	answer func(path string, n int) (int, string)
	count  map[string]int
	// lookup finds the device at a path beyond those it was made with.
	lookup func(path string) (device, bool)
}

// pushed is one message as the push service received and decrypted it.
type pushed struct {
	Path, TTL, Urgency, Topic string
	Message                   approvals.PushMessage
	Plaintext                 string
}

// device is a browser's push subscription: its P-256 key and secret.
type device struct {
	key  *ecdh.PrivateKey
	auth []byte
}

func newDevice(t testing.TB) device {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := make([]byte, 16)
	_, _ = rand.Read(auth)
	return device{key: k, auth: auth}
}

func (d device) subscription(userID, endpoint, name string) approvals.PushSubscription {
	return approvals.PushSubscription{UserID: userID, Endpoint: endpoint, Name: name,
		P256dh: base64.RawURLEncoding.EncodeToString(d.key.PublicKey().Bytes()), Auth: base64.RawURLEncoding.EncodeToString(d.auth)}
}

func newPushService(t testing.TB, vapidPublic string, devices map[string]device) *pushService {
	t.Helper()
	ps := &pushService{t: t, vapid: vapidPublic, count: map[string]int{},
		answer: func(string, int) (int, string) { return http.StatusCreated, "" }}
	ps.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p, problem := ps.verify(r, body, devices)
		ps.mu.Lock()
		if problem != "" {
			ps.bad = append(ps.bad, problem)
			ps.mu.Unlock()
			http.Error(w, problem, http.StatusUnauthorized)
			return
		}
		ps.got = append(ps.got, p)
		ps.count[r.URL.Path]++
		n := ps.count[r.URL.Path]
		answer := ps.answer
		ps.mu.Unlock()
		status, retry := answer(r.URL.Path, n)
		if retry != "" {
			w.Header().Set("Retry-After", retry)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(ps.srv.Close)
	return ps
}

// verify checks one message and decrypts it, or says what is wrong.
func (ps *pushService) verify(r *http.Request, body []byte, devices map[string]device) (pushed, string) {
	// RFC 8292 §3: Authorization: vapid t=<JWT>, k=<public key>.
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "vapid ") {
		return pushed{}, "no vapid authorization: " + auth
	}
	params := map[string]string{}
	for _, part := range strings.Split(strings.TrimPrefix(auth, "vapid "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		params[k] = v
	}
	if params["k"] != ps.vapid {
		return pushed{}, "k is not the published VAPID key: " + params["k"]
	}
	raw, err := base64.RawURLEncoding.DecodeString(params["k"])
	if err != nil {
		return pushed{}, "k: " + err.Error()
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return pushed{}, "k: " + err.Error()
	}
	tok, err := jwt.ParseSigned(params["t"], []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return pushed{}, "t: " + err.Error()
	}
	var claims jwt.Claims
	if err := tok.Claims(pub, &claims); err != nil {
		return pushed{}, "t's signature: " + err.Error()
	}
	if !claims.Audience.Contains(ps.srv.URL) {
		return pushed{}, fmt.Sprintf("aud %v, want the push service's origin %s", claims.Audience, ps.srv.URL)
	}
	if claims.Expiry == nil || !claims.Expiry.Time().After(time.Now()) || claims.Expiry.Time().After(time.Now().Add(24*time.Hour)) {
		return pushed{}, "exp must be in the next 24 hours (RFC 8292 §2)"
	}
	if claims.Subject == "" {
		return pushed{}, "no sub"
	}
	if r.Header.Get("Content-Encoding") != "aes128gcm" {
		return pushed{}, "Content-Encoding " + r.Header.Get("Content-Encoding")
	}
	d, ok := devices[r.URL.Path]
	if !ok && ps.lookup != nil {
		d, ok = ps.lookup(r.URL.Path)
	}
	if !ok {
		return pushed{}, "no device at " + r.URL.Path
	}
	plain, err := ece.Decrypt(body, ece.WithEncoding(ece.AES128GCM), ece.WithPrivate(d.key.Bytes()), ece.WithAuthSecret(d.auth))
	if err != nil {
		return pushed{}, "decrypt: " + err.Error()
	}
	p := pushed{Path: r.URL.Path, TTL: r.Header.Get("TTL"), Urgency: r.Header.Get("Urgency"), Topic: r.Header.Get("Topic"), Plaintext: string(plain)}
	if err := json.Unmarshal(plain, &p.Message); err != nil {
		return pushed{}, "the message is not JSON: " + string(plain)
	}
	return p, ""
}

func (ps *pushService) received() ([]pushed, []string) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]pushed(nil), ps.got...), append([]string(nil), ps.bad...)
}

// pushFixture is a fixture with the server's VAPID keys, alice's two
// devices subscribed at the push service, and a worker that may reach it.
type pushFixture struct {
	*fixture
	ps      *pushService
	worker  *Worker
	devices map[string]device
	subs    map[string]approvals.PushSubscription // by path
}

func newPushFixture(t testing.TB) *pushFixture {
	t.Helper()
	f := newFixture(t)
	keys, err := approvals.NewKeyStore(f.db, testKEK, nil)
	if err != nil {
		t.Fatal(err)
	}
	vapid, err := keys.VAPID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pf := &pushFixture{fixture: f, devices: map[string]device{"/push/phone": newDevice(t), "/push/laptop": newDevice(t)},
		subs: map[string]approvals.PushSubscription{}}
	pf.ps = newPushService(t, vapid.Public, pf.devices)
	for path, d := range pf.devices {
		s, err := f.store.AddPushSubscription(context.Background(), d.subscription(f.user.ID, pf.ps.srv.URL+path, strings.TrimPrefix(path, "/push/")))
		if err != nil {
			t.Fatal(err)
		}
		pf.subs[path] = s
	}
	pool := x509.NewCertPool()
	pool.AddCert(pf.ps.srv.Certificate())
	pf.worker = f.worker(Policy{Allow: loopback}, func(c *Config) {
		c.RootCAs, c.Subscriber = pool, "https://countersign.test"
		c.VAPID = func(ctx context.Context) (string, string, error) {
			k, err := keys.VAPID(ctx)
			return k.Public, k.Private, err
		}
	})
	return pf
}

func TestPushNewAndDecided(t *testing.T) {
	t.Parallel()
	f := newPushFixture(t)
	id := f.request(f.agent(""), "")
	if n := f.runOnce(f.worker); n != 2 {
		t.Fatalf("claimed %d rows, want a push to each of alice's 2 devices", n)
	}
	got, bad := f.ps.received()
	if len(bad) != 0 || len(got) != 2 {
		t.Fatalf("push service got %d messages, refused %v", len(got), bad)
	}
	paths := map[string]bool{}
	for _, p := range got {
		paths[p.Path] = true
		m := p.Message
		if m.Type != "new" || m.RequestID != id || !strings.Contains(m.Summary, "Bob") || m.Need != "approve" || m.URL != "/approve/"+id {
			t.Errorf("new-request message %+v", m)
		}
		if strings.Contains(p.Plaintext, "DE89370400440532013000") || strings.Contains(p.Plaintext, "token") {
			t.Errorf("the message carries more than it should: %s", p.Plaintext)
		}
		ttl, err := strconv.Atoi(p.TTL)
		if err != nil || ttl <= 0 || ttl > 3600 {
			t.Errorf("TTL %q, want the request's remaining life", p.TTL)
		}
		if p.Urgency != "high" || p.Topic != strings.ReplaceAll(id, "-", "") {
			t.Errorf("Urgency %q Topic %q", p.Urgency, p.Topic)
		}
	}
	if !paths["/push/phone"] || !paths["/push/laptop"] {
		t.Errorf("pushed to %v, want both devices", paths)
	}
	if n := f.runOnce(f.worker); n != 0 {
		t.Errorf("a delivered push was claimed again (%d)", n)
	}

	// The decision closes the notification on both devices.
	f.decide(id, true)
	if n := f.runOnce(f.worker); n != 2 {
		t.Fatalf("claimed %d decided pushes, want 2", n)
	}
	got, _ = f.ps.received()
	for _, p := range got[2:] {
		if p.Message.Type != "decided" || p.Message.RequestID != id || p.Message.Summary != "" || p.Urgency != "normal" || p.Topic != strings.ReplaceAll(id, "-", "") {
			t.Errorf("decided message %+v (Urgency %q Topic %q)", p.Message, p.Urgency, p.Topic)
		}
	}
}

func TestPushGoneRetryAndRetryAfter(t *testing.T) {
	t.Parallel()
	f := newPushFixture(t)
	answers := map[string][]struct {
		status int
		retry  string
	}{
		"/push/phone":  {{http.StatusGone, ""}},
		"/push/laptop": {{http.StatusTooManyRequests, "120"}, {http.StatusInternalServerError, ""}, {http.StatusCreated, ""}},
	}
	f.ps.mu.Lock()
	f.ps.answer = func(path string, n int) (int, string) {
		a := answers[path]
		if n > len(a) {
			return http.StatusCreated, ""
		}
		return a[n-1].status, a[n-1].retry
	}
	f.ps.mu.Unlock()
	id := f.request(f.agent(""), "")
	f.runOnce(f.worker)

	// 410: the phone's subscription is gone, and so is its row.
	subs, err := f.store.PushSubscriptions(context.Background(), f.user.ID)
	if err != nil || len(subs) != 1 || subs[0].ID != f.subs["/push/laptop"].ID {
		t.Fatalf("subscriptions after a 410: %+v %v, want only the laptop's", subs, err)
	}
	var rows []struct {
		Device  *string   `db:"subscription_id"`
		Reason  string    `db:"drop_reason"`
		Next    time.Time `db:"next_attempt_at"`
		Retried bool      `db:"retried"`
	}
	if err := f.db.Select(&rows, `SELECT subscription_id, drop_reason, next_attempt_at, delivered_at IS NULL AND dropped_at IS NULL AS retried
		FROM outbox WHERE request_id = $1 AND kind = 'push' ORDER BY id`, id); err != nil {
		t.Fatal(err)
	}
	var dropped, waiting int
	for _, r := range rows {
		switch {
		case r.Reason == DropGone && r.Device == nil:
			dropped++
		case r.Retried:
			waiting++
			// 429 with Retry-After: 120 holds the row back that long.
			if d := time.Until(r.Next); d < 100*time.Second || d > 121*time.Second {
				t.Errorf("after 429 Retry-After 120 the next attempt is in %v", d)
			}
		}
	}
	if dropped != 1 || waiting != 1 {
		t.Fatalf("push rows after 410 and 429: %+v", rows)
	}
	// The removal and both attempts are on the record, by the notifier.
	var removed int
	if err := f.db.Get(&removed, `SELECT count(*) FROM audit_events WHERE kind = $1 AND actor = $2 AND user_id = $3
		AND body->>'device' = $4 AND body->>'reason' = 'gone' AND (body->>'status')::int = 410`,
		approvals.KindPushRemoved, approvals.ActorNotify, f.user.ID, f.subs["/push/phone"].ID); err != nil || removed != 1 {
		t.Errorf("%d push.removed events for the gone device (%v), want 1", removed, err)
	}
	got := kinds(f.notifications(t, id, "/push/phone", "/push/laptop"))
	slices.Sort(got)
	if want := []string{"failed 410", "failed 429", "queued", "queued"}; !slices.Equal(got, want) {
		t.Errorf("notification events %v, want %v", got, want)
	}

	// 500 is retried, then delivered.
	if _, err := f.db.Exec(`UPDATE outbox SET next_attempt_at = now() WHERE request_id = $1 AND kind = 'push'`, id); err != nil {
		t.Fatal(err)
	}
	f.runOnce(f.worker) // 500
	if _, err := f.db.Exec(`UPDATE outbox SET next_attempt_at = now() WHERE request_id = $1 AND kind = 'push'`, id); err != nil {
		t.Fatal(err)
	}
	f.runOnce(f.worker) // 201
	var delivered int
	if err := f.db.Get(&delivered, `SELECT count(*) FROM outbox WHERE request_id = $1 AND kind = 'push' AND delivered_at IS NOT NULL`, id); err != nil || delivered != 1 {
		t.Errorf("%d pushes delivered after 429, 500, 201 (%v), want 1", delivered, err)
	}
	f.ps.mu.Lock()
	defer f.ps.mu.Unlock()
	if f.ps.count["/push/laptop"] != 3 || f.ps.count["/push/phone"] != 1 || len(f.ps.bad) != 0 {
		t.Errorf("attempts by device: %v; refused: %v", f.ps.count, f.ps.bad)
	}
}

// At most PushesPerMinute new-request pushes a minute reach one person;
// the requests past it wait in the inbox unannounced.
func TestPushRateLimit(t *testing.T) {
	t.Parallel()
	f := newPushFixture(t)
	svc := approvals.NewService(f.store, f.svc.Types(), nil, approvals.Config{KEK: testKEK, Fatigue: &approvals.Fatigue{PushesPerMinute: 2}})
	agent := f.agent("")
	for i := range 3 {
		if _, err := svc.Authorize(context.Background(), agent, approvals.AuthRequest{Scope: "openid", LoginHint: f.user.Email,
			AuthorizationDetails: []byte(fmt.Sprintf(`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"%d.00"},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}]`, 10+i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Two devices: a request's push goes to both, and the limit counts what
	// the person's devices got.
	var perRequest []int
	if err := f.db.Select(&perRequest, `SELECT count(o.id) FROM requests r LEFT JOIN outbox o ON o.request_id = r.id AND o.kind = 'push'
		WHERE r.agent_id = $1 GROUP BY r.id, r.created_at ORDER BY r.created_at`, agent.ID); err != nil {
		t.Fatal(err)
	}
	if len(perRequest) != 3 || perRequest[0] != 2 || perRequest[1] != 2 || perRequest[2] != 0 {
		t.Errorf("pushes per request under a limit of 2 a minute: %v, want [2 2 0] (two requests, each to both devices)", perRequest)
	}
}

// TestSlowPushTargetDoesNotHoldOthers: one of alice's devices has a push
// endpoint that never answers; her other device still gets every push
// while the slow one has answered none, and the slow one never has more
// than PerTarget sends in flight.
func TestSlowPushTargetDoesNotHoldOthers(t *testing.T) {
	t.Parallel()
	f := newPushFixture(t)
	hold := make(chan struct{})
	var mu sync.Mutex
	slowNow, slowMax := 0, 0
	fast := make(chan struct{}, 16)
	f.ps.answer = func(path string, _ int) (int, string) {
		if path == "/push/phone" {
			fast <- struct{}{}
			return http.StatusCreated, ""
		}
		mu.Lock()
		slowNow++
		slowMax = max(slowMax, slowNow)
		mu.Unlock()
		<-hold // the laptop's push service never answers (until the test ends)
		mu.Lock()
		slowNow--
		mu.Unlock()
		return http.StatusCreated, ""
	}
	agent := f.agent("")
	const n = 6
	for i := range n {
		details := fmt.Sprintf(`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"%d.00"},"creditorName":"Bob","creditorAccount":{"iban":"DE89370400440532013000"}}]`, 5+i)
		if _, err := f.svc.Authorize(context.Background(), agent, approvals.AuthRequest{Scope: "openid", LoginHint: f.user.Email,
			AuthorizationDetails: []byte(details)}); err != nil {
			t.Fatal(err)
		}
	}
	w := f.worker // the default slots: 8 in all, 2 per target
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { w.Run(ctx); close(stopped) }()
	defer func() { close(hold); cancel(); <-stopped }()

	deadline := time.After(30 * time.Second)
	for got := 0; got < n; got++ {
		select {
		case <-fast:
		case <-deadline:
			t.Fatalf("the phone got %d of %d pushes while the laptop's endpoint held its sends", got, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if slowMax > 2 || slowMax == 0 {
		t.Errorf("%d sends to the silent endpoint at once, want 1 or 2 (PerTarget)", slowMax)
	}
}

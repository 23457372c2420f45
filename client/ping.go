package client

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/protocol"
)

// PingReceiver takes Countersign's ping callbacks (CIBA §10.2): a POST of
// {"auth_req_id": …} to the agent's registered notification endpoint,
// authenticated by the client_notification_token of the request as a
// Bearer credential (RFC 6750 §2.1). Give it to Config.Ping and serve it at
// that endpoint, mounted in the agent's own server or by ListenPing.
//
// Each waiting request has a token of its own, 256 random bits, so a ping
// that does not carry one of them is refused (401) and wakes nothing.
type PingReceiver struct {
	mu      sync.Mutex
	waiters map[string]*pingWaiter // by token
	srv     *http.Server
	l       net.Listener
}

type pingWaiter struct {
	token     string
	authReqID string // "" until /bc-authorize answers
	ch        chan struct{}
}

func (w *pingWaiter) signal() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// NewPingReceiver returns a PingReceiver to mount at the notification
// endpoint.
func NewPingReceiver() *PingReceiver {
	return &PingReceiver{waiters: map[string]*pingWaiter{}}
}

// ListenPing serves a new PingReceiver on addr (such as 127.0.0.1:9999),
// at every path, until Close. Countersign delivers over plain http only to
// loopback and only in dev mode; elsewhere the endpoint is https.
func ListenPing(addr string) (*PingReceiver, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := NewPingReceiver()
	p.l = l
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

// Addr is where ListenPing listens (nil for NewPingReceiver's).
func (p *PingReceiver) Addr() net.Addr {
	if p.l == nil {
		return nil
	}
	return p.l.Addr()
}

// Close stops what ListenPing started.
func (p *PingReceiver) Close() error {
	if p.srv == nil {
		return nil
	}
	return p.srv.Close()
}

// ServeHTTP takes one ping. CIBA §10.2: the client answers 2xx (204 here),
// and never 3xx; the body of the answer is ignored.
func (p *PingReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	waiter := p.lookup(token)
	if !strings.EqualFold(scheme, "Bearer") || waiter == nil {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, "unknown client_notification_token", http.StatusUnauthorized)
		return
	}
	var n protocol.PingNotification
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<10)).Decode(&n); err != nil || n.AuthReqID == "" {
		http.Error(w, "the body must be {\"auth_req_id\": …}", http.StatusBadRequest)
		return
	}
	if err := p.wake(waiter, n.AuthReqID); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// lookup finds the waiter of token, comparing in constant time.
func (p *PingReceiver) lookup(token string) *pingWaiter {
	if token == "" {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.waiters[token]
	if w == nil || subtle.ConstantTimeCompare([]byte(w.token), []byte(token)) != 1 {
		return nil
	}
	return w
}

// wake signals the waiter of an authenticated ping, and every other waiter
// of the same request: a request joined by an identical one is pinged with
// the first caller's token only.
func (p *PingReceiver) wake(w *pingWaiter, authReqID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.authReqID != "" && w.authReqID != authReqID {
		return errors.New("auth_req_id is not this token's")
	}
	w.signal()
	for _, o := range p.waiters {
		if o.authReqID == authReqID {
			o.signal()
		}
	}
	return nil
}

func (p *PingReceiver) register(token string) *pingWaiter {
	w := &pingWaiter{token: token, ch: make(chan struct{}, 1)}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waiters[token] = w
	return w
}

func (p *PingReceiver) bind(w *pingWaiter, authReqID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.authReqID = authReqID
}

func (p *PingReceiver) unregister(w *pingWaiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.waiters, w.token)
}

func (p *PingReceiver) unregisterID(authReqID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for t, w := range p.waiters {
		if w.authReqID == authReqID {
			delete(p.waiters, t)
		}
	}
}

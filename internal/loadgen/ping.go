package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Receiver is the simulated agents' client_notification_endpoint (CIBA
// §10.2): an HTTP server on loopback that hands each ping to the flow
// waiting for it.
type Receiver struct {
	ln   net.Listener
	srv  *http.Server
	path string

	mu      sync.Mutex
	waiting map[string]waiter // by auth_req_id
}

type waiter struct {
	bearer string
	got    chan error
}

// errWrongBearer: a ping did not carry the client_notification_token of its
// request (CIBA §10.2).
var errWrongBearer = errors.New("loadgen: ping without the request's client_notification_token")

// ListenPings starts a Receiver on addr (a loopback host:port; port 0 picks
// one) answering pings at path.
func ListenPings(addr, path string) (*Receiver, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || !loopbackHost(host) {
		return nil, fmt.Errorf("loadgen: the ping receiver must listen on loopback, not %q", addr)
	}
	if path == "" {
		path = "/"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("loadgen: ping receiver: %w", err)
	}
	p := &Receiver{ln: ln, path: path, waiting: map[string]waiter{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+path, p.receive)
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// ListenPingsAt starts a Receiver where notifyURL points: a registered
// agent's client_notification_endpoint, plain http to loopback.
func ListenPingsAt(notifyURL string) (*Receiver, error) {
	u, err := url.Parse(notifyURL)
	if err != nil || u.Scheme != "http" || !loopbackHost(u.Hostname()) || u.Port() == "" {
		return nil, fmt.Errorf("loadgen: the agent's client_notification_endpoint %q is not plain http to a loopback port, where this command could receive its pings", notifyURL)
	}
	return ListenPings(u.Host, u.EscapedPath())
}

// URL is the endpoint to register for the agents.
func (p *Receiver) URL() string { return "http://" + p.ln.Addr().String() + p.path }

// Close stops the receiver.
func (p *Receiver) Close() error { return p.srv.Close() }

// expect registers a flow waiting for the ping of authReqID, which must carry
// bearer; the channel gets nil, or errWrongBearer, once it arrives.
func (p *Receiver) expect(authReqID, bearer string) <-chan error {
	w := waiter{bearer: bearer, got: make(chan error, 1)}
	p.mu.Lock()
	p.waiting[authReqID] = w
	p.mu.Unlock()
	return w.got
}

// forget drops a flow that stopped waiting.
func (p *Receiver) forget(authReqID string) {
	p.mu.Lock()
	delete(p.waiting, authReqID)
	p.mu.Unlock()
}

func (p *Receiver) receive(w http.ResponseWriter, r *http.Request) {
	var body struct {
		AuthReqID string `json:"auth_req_id"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<10)).Decode(&body); err != nil {
		http.Error(w, "want {\"auth_req_id\": …}", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	wt, ok := p.waiting[body.AuthReqID]
	delete(p.waiting, body.AuthReqID)
	p.mu.Unlock()
	if ok {
		if r.Header.Get("Authorization") == "Bearer "+wt.bearer {
			wt.got <- nil
		} else {
			wt.got <- errWrongBearer
		}
	}
	// A ping nobody waits for any more (its flow gave up) is acknowledged
	// too, so that the server does not retry it.
	w.WriteHeader(http.StatusNoContent)
}

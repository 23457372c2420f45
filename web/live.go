package web

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/countersign/countersign/approvals"
)

// Live updates: an open inbox or consent page keeps a WebSocket to
// /live, authenticated by the session cookie. When a request a person may
// see changes, on any replica, the event listener tells this process and
// the socket carries {"type":"changed","request_id":…}: ids only, the page
// re-reads what it shows. After the listener lost its connection (and so
// maybe events) every socket gets {"type":"resync"}.

const (
	livePing      = 25 * time.Second // server pings; the browser answers
	liveWait      = 60 * time.Second // a socket silent this long is gone
	liveRecheck   = 30 * time.Second // how often a socket's session is checked
	liveWriteWait = 10 * time.Second
)

// liveMessage is what a socket carries.
type liveMessage struct {
	Type      string `json:"type"` // changed, resync
	RequestID string `json:"request_id,omitempty"`
}

// hub is this process's open sockets, fed by the event listener.
type hub struct {
	svc    *approvals.Service
	mu     sync.Mutex
	socket map[*liveSocket]struct{}
}

type liveSocket struct {
	user    approvals.User
	out     chan liveMessage
	recheck chan struct{}
}

func newHub(svc *approvals.Service, l *approvals.Listener) *hub {
	h := &hub{svc: svc, socket: map[*liveSocket]struct{}{}}
	if l != nil {
		l.Subscribe(h.notice)
	}
	return h
}

// notice runs on the listener's goroutine: it must not block, so the
// lookup of who may see a request runs on its own.
func (h *hub) notice(n approvals.Notice) {
	switch {
	case n.Resync:
		h.send(func(*liveSocket) bool { return true }, liveMessage{Type: "resync"})
	case n.Kind == approvals.KindSessionEnded && n.UserID != "":
		h.each(func(s *liveSocket) {
			if s.user.ID == n.UserID {
				select {
				case s.recheck <- struct{}{}:
				default:
				}
			}
		})
	case n.RequestID != "" && (strings.HasPrefix(n.Kind, "request.") || strings.HasPrefix(n.Kind, "review.")):
		if h.empty() {
			return
		}
		go h.requestChanged(n.RequestID)
	}
}

// requestChanged tells the sockets of the people who may see request id.
func (h *hub) requestChanged(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	userID, groups, err := h.svc.Audience(ctx, id)
	if err != nil {
		return
	}
	h.send(func(s *liveSocket) bool {
		return s.user.ID == userID || slices.ContainsFunc(s.user.Groups, func(g string) bool { return slices.Contains(groups, g) })
	}, liveMessage{Type: "changed", RequestID: id})
}

func (h *hub) empty() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.socket) == 0
}

func (h *hub) each(fn func(*liveSocket)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.socket {
		fn(s)
	}
}

// send queues m for the sockets to; a socket too slow to take it is
// dropped (its page reconnects and reloads).
func (h *hub) send(to func(*liveSocket) bool, m liveMessage) {
	h.each(func(s *liveSocket) {
		if !to(s) {
			return
		}
		select {
		case s.out <- m:
		default:
		}
	})
}

func (h *hub) add(s *liveSocket) {
	h.mu.Lock()
	h.socket[s] = struct{}{}
	h.mu.Unlock()
}

func (h *hub) remove(s *liveSocket) {
	h.mu.Lock()
	delete(h.socket, s)
	h.mu.Unlock()
}

// live upgrades GET /live to a WebSocket for the signed-in person.
func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	si := sessionOf(r)
	if si == nil {
		http.Error(w, "sign in first", http.StatusUnauthorized)
		return
	}
	if s.hub == nil {
		http.Error(w, "live updates are not available on this server", http.StatusServiceUnavailable)
		return
	}
	up := websocket.Upgrader{
		ReadBufferSize: 512, WriteBufferSize: 1024,
		// Only this site's pages: a cross-site page cannot ride the cookie.
		CheckOrigin: func(r *http.Request) bool { return sameOrigin(r.Header.Get("Origin"), s.svc.Issuer()) },
	}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	defer conn.Close()
	sock := &liveSocket{user: si.User, out: make(chan liveMessage, 16), recheck: make(chan struct{}, 1)}
	s.hub.add(sock)
	defer s.hub.remove(sock)

	// The read side: pongs and closes; anything else a page sends is not
	// expected, and the limit keeps it small.
	conn.SetReadLimit(512)
	_ = conn.SetReadDeadline(time.Now().Add(liveWait))
	conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(liveWait)) })
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()

	ping := time.NewTicker(livePing)
	defer ping.Stop()
	check := time.NewTicker(liveRecheck)
	defer check.Stop()
	write := func(fn func() error) bool {
		_ = conn.SetWriteDeadline(time.Now().Add(liveWriteWait))
		return fn() == nil
	}
	for {
		select {
		case <-gone:
			return
		case <-r.Context().Done():
			return
		case m := <-sock.out:
			if !write(func() error { return conn.WriteJSON(m) }) {
				return
			}
		case <-ping.C:
			if !write(func() error { return conn.WriteMessage(websocket.PingMessage, nil) }) {
				return
			}
		case <-sock.recheck:
			if !s.sessionLive(r, si) {
				closeLive(conn, "signed out")
				return
			}
		case <-check.C:
			if !s.sessionLive(r, si) {
				closeLive(conn, "signed out")
				return
			}
		}
	}
}

// sessionLive says whether si's session still holds (not ended, not timed
// out).
func (s *Server) sessionLive(r *http.Request, si *signedIn) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	_, _, err := s.svc.Store().Session(ctx, si.Token)
	return err == nil
}

// closeLive ends a socket with a policy-violation close frame (RFC 6455
// §7.4.1, 1008): the page does not reconnect but reloads into sign-in.
func closeLive(conn *websocket.Conn, why string) {
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, why),
		time.Now().Add(time.Second))
}

// sameOrigin says whether origin is the issuer's (scheme, host and port).
func sameOrigin(origin, issuer string) bool {
	o, err := url.Parse(origin)
	if err != nil || origin == "" {
		return false
	}
	i, err := url.Parse(issuer)
	if err != nil {
		return false
	}
	return strings.EqualFold(o.Scheme, i.Scheme) && strings.EqualFold(o.Host, i.Host)
}

package approvals

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// Notice is a committed event as every replica hears of it: its id, kind and
// the ids it concerns, never its body. Resync is set instead when notices may
// have been missed (the listener's connection was lost and is back):
// subscribers then re-read whatever they keep.
type Notice struct {
	EventID   int64  `json:"id"`
	Kind      string `json:"kind"`
	RequestID string `json:"request_id"`
	AgentID   string `json:"agent_id"`
	UserID    string `json:"user_id"`
	Subject   string `json:"subject"`
	Resync    bool   `json:"-"`
}

// Listener is a process's one LISTEN connection on EventsChannel: it hands
// every committed event to the subscribers in this process (caches, live
// pages). lib/pq's Listener reconnects with backoff; PostgreSQL drops what
// was sent while it was away, so after a reconnect subscribers are told to
// resync.
type Listener struct {
	pl     *pq.Listener
	logger *slog.Logger

	mu   sync.Mutex
	subs map[int]func(Notice)
	next int
	// connected is false between a lost connection and its return.
	connected bool
	pinging   atomic.Bool
	// pingEvery is listenerPing; tests shorten it.
	pingEvery time.Duration
}

// listenerPing is how often an idle listener checks its connection, so that
// a connection broken without a word is noticed.
const listenerPing = 30 * time.Second

// NewListener connects to dsn and listens on EventsChannel. Run delivers.
func NewListener(dsn string, logger *slog.Logger) (*Listener, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Listener{logger: logger, subs: map[int]func(Notice){}, pingEvery: listenerPing}
	l.pl = pq.NewListener(dsn, 100*time.Millisecond, 10*time.Second, l.onEvent)
	if err := l.pl.Listen(EventsChannel); err != nil {
		l.pl.Close()
		return nil, fmt.Errorf("approvals: listen on %s: %w", EventsChannel, err)
	}
	l.connected = true
	return l, nil
}

func (l *Listener) onEvent(ev pq.ListenerEventType, err error) {
	switch ev {
	case pq.ListenerEventDisconnected:
		l.mu.Lock()
		l.connected = false
		l.mu.Unlock()
		l.logger.Warn("event listener lost its connection; caches fall back to short staleness until it is back", "err", err)
	case pq.ListenerEventReconnected:
		l.mu.Lock()
		l.connected = true
		l.mu.Unlock()
		l.logger.Info("event listener reconnected; subscribers resync")
	case pq.ListenerEventConnectionAttemptFailed:
		l.logger.Warn("event listener cannot reconnect yet", "err", err)
	}
}

// Connected reports whether the listener hears events now. A subscriber
// that keeps state serves it only briefly while this is false.
func (l *Listener) Connected() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.connected
}

// Subscribe calls fn for every notice until the returned cancel is called.
// fn runs on the listener's goroutine and must not block.
func (l *Listener) Subscribe(fn func(Notice)) (cancel func()) {
	l.mu.Lock()
	id := l.next
	l.next++
	l.subs[id] = fn
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.subs, id)
		l.mu.Unlock()
	}
}

// Run delivers notices until ctx ends, then closes the connection.
func (l *Listener) Run(ctx context.Context) {
	defer l.pl.Close()
	tick := time.NewTicker(l.pingEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-l.pl.Notify:
			if n == nil {
				// lib/pq sends nil once it has re-established the
				// connection: what was sent meanwhile is lost.
				l.deliver(Notice{Resync: true})
				continue
			}
			var notice Notice
			if err := json.Unmarshal([]byte(n.Extra), &notice); err != nil {
				l.logger.Error("event listener: malformed notification", "err", err)
				continue
			}
			l.deliver(notice)
		case <-tick.C:
			// A failed ping makes lib/pq reconnect (and then send nil). It
			// runs apart: its answer queues behind notifications that only
			// this loop drains, so pinging here could wait for itself.
			if l.pinging.CompareAndSwap(false, true) {
				go func() { defer l.pinging.Store(false); _ = l.pl.Ping() }()
			}
		}
	}
}

func (l *Listener) deliver(n Notice) {
	l.mu.Lock()
	subs := make([]func(Notice), 0, len(l.subs))
	for _, fn := range l.subs {
		subs = append(subs, fn)
	}
	l.mu.Unlock()
	for _, fn := range subs {
		fn(n)
	}
}

package mcpgate

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/countersign/countersign/client"
	"github.com/countersign/countersign/protocol"
)

// pollTimeout bounds one poll. A poll runs to its end even when the call's
// context ends first: cutting it short could lose a token the server has
// already handed out.
const pollTimeout = 30 * time.Second

// errNotPending is a wait that found the approval decided: its token went
// to another call.
var errNotPending = errors.New("mcpgate: this approval was already used by another call")

// approval is a Countersign request the gate waits for: one user's one call.
type approval struct {
	state          // the request and what the user is shown
	key     string // user and call digest
	sealed  string // the requestState (2026-07-28)
	summary string
	// sem is held by the one call that polls: concurrent retries of the
	// same call wait their turn rather than poll at once (which the server
	// would answer with slow_down).
	sem chan struct{}

	// Guarded by sem.
	interval time.Duration
	lastPoll time.Time
	done     bool  // decided: the token was taken, or err is the outcome
	err      error // denied, expired, …
}

func newApproval(s state, key string) *approval {
	interval := time.Duration(s.Interval) * time.Second
	if interval <= 0 {
		interval = protocol.DefaultPollInterval
	}
	return &approval{state: s, key: key, sem: make(chan struct{}, 1), interval: interval}
}

func (a *approval) expiresAt() time.Time { return time.Unix(a.Expiry, 0) }

// memory holds the approvals being waited for, by user and call and by
// auth_req_id, bounded in number.
type memory struct {
	mu       sync.Mutex
	max      int
	byKey    map[string]*approval
	byID     map[string]*approval
	starting map[string]*keyLock
}

// keyLock serializes the first calls of one user's one call, so that two
// arriving at once ask Countersign once.
type keyLock struct {
	sync.Mutex
	refs int
}

func newMemory(max int) *memory {
	return &memory{max: max, byKey: map[string]*approval{}, byID: map[string]*approval{}, starting: map[string]*keyLock{}}
}

// lock locks key until the returned function is called.
func (m *memory) lock(key string) (unlock func()) {
	m.mu.Lock()
	l := m.starting[key]
	if l == nil {
		l = &keyLock{}
		m.starting[key] = l
	}
	l.refs++
	m.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		m.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(m.starting, key)
		}
		m.mu.Unlock()
	}
}

// errFull is a gate with too many approvals pending to ask for another.
var errFull = errors.New("mcpgate: too many approvals are pending; try again later")

// find returns the approval of key. One that expired is found too, until
// pruned, so that the retry of its call learns that it expired rather than
// asking again unasked.
func (m *memory) find(key string) *approval {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byKey[key]
}

// resume returns the approval s names, remembering it again when this
// gate has forgotten it (a restart, another replica).
func (m *memory) resume(s state, raw, key string, now time.Time) (*approval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.byID[s.AuthReqID]; a != nil {
		return a, nil
	}
	a := newApproval(s, key)
	a.sealed = raw
	if err := m.addLocked(a, now); err != nil {
		return nil, err
	}
	return a, nil
}

// admit reports whether a new approval fits.
func (m *memory) admit(now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked(now)
	if len(m.byID) >= m.max {
		return errFull
	}
	return nil
}

func (m *memory) add(a *approval, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addLocked(a, now)
}

func (m *memory) addLocked(a *approval, now time.Time) error {
	if len(m.byID) >= m.max {
		m.pruneLocked(now)
		if len(m.byID) >= m.max {
			return errFull
		}
	}
	m.byID[a.AuthReqID] = a
	m.byKey[a.key] = a
	return nil
}

// forget drops a decided approval.
func (m *memory) forget(a *approval) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byID[a.AuthReqID] == a {
		delete(m.byID, a.AuthReqID)
	}
	if m.byKey[a.key] == a {
		delete(m.byKey, a.key)
	}
}

// expiredGrace is how long an expired approval is remembered, so that the
// retry of its call hears that it expired; a full memory forgets sooner.
const expiredGrace = 10 * time.Minute

func (m *memory) pruneLocked(now time.Time) {
	m.pruneBefore(now.Add(-expiredGrace))
	if len(m.byID) >= m.max {
		m.pruneBefore(now)
	}
}

// pruneBefore forgets the approvals that expired before t.
func (m *memory) pruneBefore(t time.Time) {
	for id, a := range m.byID {
		if a.expiresAt().Before(t) {
			delete(m.byID, id)
			if m.byKey[a.key] == a {
				delete(m.byKey, a.key)
			}
		}
	}
}

// wait polls for a's decision until deadline: at once when the interval
// since the last poll has passed, then every interval, slowing down as
// slow_down says. It returns the token (the caller alone holds it; a is
// forgotten), a terminal error (a is forgotten), or neither: still pending
// at the deadline, or ctx ended.
func (g *Gate) wait(ctx context.Context, a *approval, deadline time.Time) (*client.Token, error) {
	select {
	case a.sem <- struct{}{}:
	default:
		t := time.NewTimer(time.Until(deadline))
		select {
		case a.sem <- struct{}{}:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return nil, context.Cause(ctx)
		case <-t.C:
			return nil, nil
		}
	}
	defer func() { <-a.sem }()
	for {
		if a.done {
			if a.err != nil {
				return nil, a.err
			}
			return nil, errNotPending
		}
		// A request's first poll is never too soon (CIBA §7.3 sets no
		// wait before it), so a new approval learns at once whether policy
		// allowed it.
		next := g.now()
		if !a.lastPoll.IsZero() {
			next = a.lastPoll.Add(a.interval)
			if next.After(deadline) {
				return nil, nil
			}
		}
		if err := sleep(ctx, next.Sub(g.now())); err != nil {
			return nil, err
		}
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pollTimeout)
		tok, err := g.cfg.Client.Poll(pctx, a.AuthReqID)
		cancel()
		a.lastPoll = g.now()
		var ce *client.Error
		switch {
		case err == nil:
			a.done = true
			g.mem.forget(a)
			return tok, nil
		case errors.Is(err, client.ErrPending):
		case errors.Is(err, client.ErrSlowDown):
			a.interval += protocol.SlowDownStep
			if errors.As(err, &ce) {
				a.interval = max(a.interval, ce.RetryAfter)
			}
		case errors.Is(err, client.ErrUnavailable) && g.now().Before(a.expiresAt()):
			// The decision will still be there.
			if errors.As(err, &ce) {
				a.interval = max(a.interval, ce.RetryAfter)
			}
		case !errors.As(err, &ce) && !errors.Is(err, client.ErrDenied) && ctx.Err() == nil && g.now().Before(a.expiresAt()):
			// A transport failure: try again at the next interval.
		default:
			a.done, a.err = true, err
			g.mem.forget(a)
			return nil, err
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

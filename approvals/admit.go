package approvals

import (
	"context"
	"fmt"
	"sync"
)

// admitLocksSQL serialises admissions of one agent and of one user across
// replicas, always agent first so that two admissions cannot deadlock.
const admitLocksSQL = `SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), pg_advisory_xact_lock(hashtextextended($2, 0))`

// admit runs fn as one change (see Tx) for an admission whose rules read
// the velocity of earlier requests: requests of the same agent or user are
// then admitted one at a time, so parallel requests cannot all slip under a
// velocity limit. In this process they wait for each other before they take
// a connection (so a burst from one agent never fills the pool with
// waiters), and across replicas on advisory locks held to commit.
func (s *Store) admit(ctx context.Context, agentID, userID string, fn func(*Tx) error) error {
	agentKey, userKey := "velocity agent:"+agentID, "velocity user:"+userID
	unlockAgent, err := s.locks.lock(ctx, agentKey)
	if err != nil {
		return fmt.Errorf("approvals: admit: %w", err)
	}
	defer unlockAgent()
	unlockUser, err := s.locks.lock(ctx, userKey)
	if err != nil {
		return fmt.Errorf("approvals: admit: %w", err)
	}
	defer unlockUser()
	return s.change(ctx, func(t *Tx) error {
		if _, err := t.ExecContext(ctx, admitLocksSQL, agentKey, userKey); err != nil {
			return fmt.Errorf("approvals: admit: %w", err)
		}
		return fn(t)
	})
}

// keyedLocks are mutexes by name whose waits end with their context.
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]*keyedLock
}

type keyedLock struct {
	ch      chan struct{} // holds a token while locked
	waiters int           // holders and waiters; the entry goes at zero
}

// lock takes the lock named key and returns its unlock, or ctx's error.
func (k *keyedLocks) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyedLock{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.waiters++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		if l.waiters--; l.waiters == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

package approvals

import (
	"context"
	"fmt"
	"sync"
)

// admitLockSQL and admitLocksSQL take one or two admission locks, held to
// commit; where two are taken, always agent first, so that two admissions
// cannot deadlock.
//
// They also set countersign.announce (see announce.go) to the caller's
// announce, and make the transaction's prepared statements run their generic
// plans: PostgreSQL otherwise plans the admission's insert again on every
// call (its custom plans look cheaper than the generic one only because
// they fold the parameters of the parts a request does not use), and that
// planning cost more than running it.
const (
	admitLockSQL = `SELECT pg_advisory_xact_lock(hashtextextended($1, 0)),
	set_config('plan_cache_mode', 'force_generic_plan', true), set_config('countersign.announce', $2, true)`
	admitLocksSQL = `SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), pg_advisory_xact_lock(hashtextextended($2, 0)),
	set_config('plan_cache_mode', 'force_generic_plan', true), set_config('countersign.announce', $3, true)`
)

// velocityKeys are the locks of an admission that must see every earlier
// request of its agent and of its user: one whose rules read their velocity,
// or one that waits for people under a pending limit.
func velocityKeys(agentID, userID string) []string {
	return []string{"velocity agent:" + agentID, "velocity user:" + userID}
}

// identicalKey is the lock of an admission that must see only the pending
// requests identical to it (same agent, user and details hash), to join
// one: different requests of one agent or user do not wait for each other.
func identicalKey(agentID, userID, detailsHash string) []string {
	return []string{"identical " + agentID + " " + userID + " " + detailsHash}
}

// admit runs fn as one change (see Tx) under the admission locks keys (one
// or two, from velocityKeys or identicalKey): the admissions that share a
// key run one at a time, so parallel requests cannot all slip under a
// velocity or pending limit, or both miss an identical request to join. In
// this process they wait for each other before they take a connection (so
// a burst from one agent never fills the pool with waiters), and across
// replicas on advisory locks held to commit.
//
// announce is announceAfter when the caller announces the change's request
// events itself once it has committed, else "".
func (s *Store) admit(ctx context.Context, keys []string, announce string, fn func(*Tx) error) error {
	for _, key := range keys {
		unlock, err := s.locks.lock(ctx, key)
		if err != nil {
			return fmt.Errorf("approvals: admit: %w", err)
		}
		defer unlock()
	}
	lock, args := &s.admitLockStmt, []any{keys[0], announce}
	if len(keys) == 2 {
		lock, args = &s.admitLocksStmt, []any{keys[0], keys[1], announce}
	}
	// Prepared on the pool before the change takes its connection.
	s.warm(ctx, lock, &s.pendingIdenticalStmt, &s.pendingCountsStmt, &s.insertRequestStmt, &s.insertDecidedStmt)
	return s.change(ctx, func(t *Tx) error {
		if _, err := lock.execTx(ctx, t, args...); err != nil {
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

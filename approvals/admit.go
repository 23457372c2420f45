package approvals

import (
	"context"
	"fmt"
	"sync"
)

// admitLocksSQL takes n admission locks ($1…$n), held to commit, in the
// order given (agent, user, identical: see admissionKeys), so that two
// admissions cannot deadlock. It also sets, for the transaction,
// countersign.announce ($n+1; see announce.go) and plan_cache_mode ($n+2).
func admitLocksSQL(n int) string {
	q := "SELECT "
	for i := 1; i <= n; i++ {
		q += fmt.Sprintf("pg_advisory_xact_lock(hashtextextended($%d, 0)), ", i)
	}
	return q + fmt.Sprintf("set_config('countersign.announce', $%d, true), set_config('plan_cache_mode', $%d, true)", n+1, n+2)
}

// The plan modes of an admission's transaction. A non-serial one runs the
// generic plans of its prepared statements: PostgreSQL otherwise plans the
// admission's insert again on every call (its custom plans look cheaper
// than the generic one only because they fold the parameters of the parts
// a request does not use), and that planning cost more than running it. A
// serial one keeps the default: its velocity query is planned on every call
// anyway, and its custom plan is the better one.
const (
	planGeneric = "force_generic_plan"
	planAuto    = "auto"
)

// admissionKeys are the locks of an admission, in the order they are taken:
// velocity (an admission that must see every earlier request of its agent
// and of its user: one whose rules read their velocity, or one that waits
// for people under a pending limit) takes the agent's and the user's;
// identical (joining identical requests is on, and the request waits for
// people) takes the lock of its agent, user and details hash, so that two
// identical requests never both miss each other, whichever path each took.
// Different requests of one agent or user that need neither do not wait for
// each other.
func admissionKeys(velocity, identical bool, agentID, userID, detailsHash string) []string {
	var keys []string
	if velocity {
		keys = append(keys, "velocity agent:"+agentID, "velocity user:"+userID)
	}
	if identical {
		keys = append(keys, "identical "+agentID+" "+userID+" "+detailsHash)
	}
	return keys
}

// admit runs fn as one change (see Tx) under the admission locks keys (one
// to three, from admissionKeys): the admissions that share a key run one at
// a time, so parallel requests cannot all slip under a velocity or pending
// limit, or both miss an identical request to join. In this process they
// wait for each other before they take a connection (so a burst from one
// agent never fills the pool with waiters), and across replicas on advisory
// locks held to commit.
//
// announce is announceAfter when the caller announces the change's request
// events itself once it has committed, else ""; plan is planGeneric or
// planAuto.
func (s *Store) admit(ctx context.Context, keys []string, announce, plan string, fn func(*Tx) error) error {
	if len(keys) == 0 || len(keys) > len(s.admitLockStmts) {
		return fmt.Errorf("approvals: admit: %d locks", len(keys))
	}
	for _, key := range keys {
		unlock, err := s.locks.lock(ctx, key)
		if err != nil {
			return fmt.Errorf("approvals: admit: %w", err)
		}
		defer unlock()
	}
	lock := &s.admitLockStmts[len(keys)-1]
	args := make([]any, 0, len(keys)+2)
	for _, k := range keys {
		args = append(args, k)
	}
	args = append(args, announce, plan)
	// Prepared on the pool before the change begins, so that they run
	// prepared in it.
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

package approvals

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/lib/pq"
)

// admitLocksSQL takes the admission locks of the keys in $1 (a text array),
// held to commit, in the array's order (see lockOrder), so that two
// admissions cannot deadlock. It also sets, for the transaction,
// countersign.announce ($2; see announce.go) and plan_cache_mode ($3).
const admitLocksSQL = `SELECT set_config('countersign.announce', $2, true), set_config('plan_cache_mode', $3, true),
	(SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest($1::text[]) AS k)`

// The plan modes of an admission's transaction. A non-serial one runs the
// generic plans of its prepared statements: PostgreSQL otherwise plans the
// admission's insert again on every call (its custom plans look cheaper
// than the generic one only because they fold the parameters of the parts
// a request does not use), and that planning cost more than running it. A
// serial one keeps the default, under which PostgreSQL chooses the velocity
// query's plans by their cost.
const (
	planGeneric = "force_generic_plan"
	planAuto    = "auto"
)

// The prefixes of the admission locks' keys.
const (
	velocityAgentKey = "velocity agent:"
	velocityUserKey  = "velocity user:"
	identicalKey     = "identical "
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
		keys = append(keys, velocityAgentKey+agentID, velocityUserKey+userID)
	}
	if identical {
		keys = append(keys, identicalKey+agentID+" "+userID+" "+detailsHash)
	}
	return keys
}

// admit runs fn in a change (see Tx) under the admission locks keys (one
// to three, from admissionKeys): the admissions that share a key run one at
// a time, so parallel requests cannot all slip under a velocity or pending
// limit, or both miss an identical request to join. In this process they
// wait for each other before they take a connection (so a burst from one
// agent never fills the pool with waiters), and across replicas on advisory
// locks held to commit.
//
// The admissions that queue behind one another on their first key (an
// agent's, or an identical request's) are admitted together: one
// transaction takes the locks of them all, runs their fns one after
// another, each seeing what the ones before it wrote (a velocity count, a
// pending count or an identical request is exact), and commits them at
// once. A change holding an agent's locks through its commit admitted one
// request per commit; a batch admits up to maxAdmitBatch. When any fn of a
// batch fails, the batch is rolled back and each of its admissions runs
// again alone, so an error belongs to its own admission only: fn may run
// twice, and must start from the same state each time.
//
// announce is announceAfter when the caller announces the change's request
// events itself once it has committed, else ""; plan is planGeneric or
// planAuto.
func (s *Store) admit(ctx context.Context, keys []string, announce, plan string, fn func(*Tx) error) error {
	if len(keys) == 0 {
		return errors.New("approvals: admit: no locks")
	}
	j := &admitJob{ctx: ctx, keys: keys, announce: announce, plan: plan, fn: fn,
		done: make(chan error, 1), lead: make(chan struct{}, 1)}
	q, leads := s.admissions.enqueue(j)
	if !leads {
		select {
		case err := <-j.done:
			return err
		case <-j.lead:
		case <-ctx.Done():
			if s.admissions.leave(q, j) {
				return fmt.Errorf("approvals: admit: %w", ctx.Err())
			}
			// Already in a batch: its answer comes.
			return <-j.done
		}
	}
	s.admitBatch(q)
	return <-j.done
}

// maxAdmitBatch bounds the admissions one transaction makes: its locks and
// the time the first of them waits for the last.
const maxAdmitBatch = 64

// admitJob is one admission waiting in its queue.
type admitJob struct {
	ctx            context.Context
	keys           []string
	announce, plan string
	fn             func(*Tx) error
	done           chan error    // its result
	lead           chan struct{} // its caller is to make the next batch
	gone           error         // set by admitTx: its caller went before its turn
}

// admitQueues are the admissions waiting, by first key. A queue has at most
// one batch in progress, whose caller hands the next one to the caller of
// the first admission still waiting.
type admitQueues struct {
	mu sync.Mutex
	m  map[string]*admitQueue
}

type admitQueue struct {
	key     string
	jobs    []*admitJob
	running bool // a batch is in progress or handed on
}

// enqueue adds j to its queue and reports whether its caller makes the next
// batch (else it waits for its result or for the hand-over).
func (a *admitQueues) enqueue(j *admitJob) (*admitQueue, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]*admitQueue{}
	}
	q := a.m[j.keys[0]]
	if q == nil {
		q = &admitQueue{key: j.keys[0]}
		a.m[q.key] = q
	}
	q.jobs = append(q.jobs, j)
	if q.running {
		return q, false
	}
	q.running = true
	return q, true
}

// take removes the next batch from q: its first admissions that run in one
// mode, without those whose caller has gone, which are answered.
func (a *admitQueues) take(q *admitQueue) []*admitJob {
	a.mu.Lock()
	defer a.mu.Unlock()
	var batch []*admitJob
	for len(q.jobs) > 0 && len(batch) < maxAdmitBatch {
		j := q.jobs[0]
		if len(batch) > 0 && (j.plan != batch[0].plan || j.announce != batch[0].announce) {
			break
		}
		q.jobs = q.jobs[1:]
		if err := j.ctx.Err(); err != nil {
			j.done <- err
			continue
		}
		batch = append(batch, j)
	}
	return batch
}

// leave takes j, whose caller has gone, out of q's queue, and reports
// whether it was still there (else it is in a batch, which answers it). A
// hand-over j was given passes on.
func (a *admitQueues) leave(q *admitQueue, j *admitJob) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	i := slices.Index(q.jobs, j)
	if i < 0 {
		return false
	}
	q.jobs = slices.Delete(q.jobs, i, i+1)
	select {
	case <-j.lead:
		a.handOnLocked(q)
	default:
	}
	return true
}

// handOn gives q's next batch to the caller of its first waiting admission,
// or ends q when none waits.
func (a *admitQueues) handOn(q *admitQueue) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.handOnLocked(q)
}

func (a *admitQueues) handOnLocked(q *admitQueue) {
	if len(q.jobs) > 0 {
		q.jobs[0].lead <- struct{}{}
		return
	}
	q.running = false
	delete(a.m, q.key)
}

// admitBatch makes q's next batch and hands the one after it on.
func (s *Store) admitBatch(q *admitQueue) {
	defer s.admissions.handOn(q)
	batch := s.admissions.take(q)
	if len(batch) == 0 {
		return
	}
	// The batch goes on while any of its callers waits: it stops only when
	// they have all gone.
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].ctx))
	defer cancel()
	var waiting atomic.Int32
	waiting.Store(int32(len(batch)))
	for _, j := range batch {
		stop := context.AfterFunc(j.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	// Every admission of the batch is answered once, even if an fn panics.
	answered := 0
	answer := func(err error) {
		for _, j := range batch[answered:] {
			if j.gone != nil {
				j.done <- j.gone
			} else {
				j.done <- err
			}
		}
		answered = len(batch)
	}
	defer func() {
		if p := recover(); p != nil {
			answer(fmt.Errorf("approvals: admit: panic: %v", p))
			panic(p)
		}
	}()
	keys := lockOrder(batch)
	for _, key := range keys {
		unlock, err := s.locks.lock(ctx, key)
		if err != nil {
			answer(fmt.Errorf("approvals: admit: %w", err))
			return
		}
		defer unlock()
	}
	err := s.admitTx(ctx, keys, batch)
	if err != nil && len(batch) > 1 && !errors.Is(err, errCommit) {
		// One admission failed, or the transaction did: each again alone,
		// under the locks already held.
		for answered < len(batch) {
			j := batch[answered]
			err := j.ctx.Err()
			if err == nil {
				err = s.admitTx(ctx, j.keys, []*admitJob{j})
			}
			if j.gone != nil {
				err = j.gone
			}
			j.done <- err
			answered++
		}
		return
	}
	answer(err)
}

// errCommit marks a failed commit, whose outcome the batch shares.
var errCommit = errors.New("approvals: commit")

// admitTx runs the fns of batch in one change under the locks keys.
func (s *Store) admitTx(ctx context.Context, keys []string, batch []*admitJob) error {
	args := []any{pq.StringArray(keys), batch[0].announce, batch[0].plan}
	// Prepared on the pool before the change begins, so that they run
	// prepared in it.
	s.warm(ctx, &s.admitLockStmt, &s.pendingIdenticalStmt, &s.pendingCountsStmt, &s.insertRequestStmt, &s.insertDecidedStmt,
		&s.recentCountsStmt, &s.recentSumsStmt)
	return s.change(ctx, func(t *Tx) error {
		if _, err := s.admitLockStmt.execTx(ctx, t, args...); err != nil {
			return fmt.Errorf("approvals: admit: %w", err)
		}
		for _, j := range batch {
			if j.gone = j.ctx.Err(); j.gone != nil {
				continue // its caller went: nothing of it is run
			}
			if err := j.fn(t); err != nil {
				return err
			}
		}
		return nil
	})
}

// lockOrder is the union of the batch's keys in the one order every
// admission takes its locks: agents', then users', then identical
// requests' (the order of admissionKeys), each kind sorted. Taken in one
// total order, two batches cannot deadlock.
func lockOrder(batch []*admitJob) []string {
	if len(batch) == 1 {
		return batch[0].keys
	}
	var keys []string
	for _, j := range batch {
		for _, k := range j.keys {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	rank := func(k string) int {
		switch {
		case strings.HasPrefix(k, velocityAgentKey):
			return 0
		case strings.HasPrefix(k, velocityUserKey):
			return 1
		}
		return 2
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c := cmp.Compare(rank(a), rank(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return keys
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

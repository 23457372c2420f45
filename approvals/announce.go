package approvals

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Announcing after commit. Every NOTIFY takes one cluster-wide lock from
// before its transaction's commit until that commit is flushed to disk, so
// changes that announce events wait for each other, one flush at a time,
// across all replicas: with 1,000 ping agents, most of the server's
// connections sat in that wait (Lock:object). The busiest changes of the
// human flow — a pending admission, a person's review — therefore set
// countersign.announce = 'after' in their transaction, which keeps their
// request.* and review.* events from the trigger (migration 20), and the
// Service announces them itself right after the commit: batched, from a
// statement of their own that does not wait for the flush (a notification
// needs none: it says only that something committed). The notices carry no
// event id. Should this process die between a commit and its announcement,
// or the queue of notices overflows because the database is far behind,
// the live pages that show the request on other replicas stay as they are
// until they reload, and the outbox worker finds the change's rows on its
// next pass instead of at once. On shutdown (Service.Close) what is queued
// is sent first.

// announceSQL sends notices $2 on channel $1 in one transaction that does
// not wait for its commit to be flushed.
const announceSQL = `
WITH sent AS (SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n)
SELECT set_config('synchronous_commit', 'off', true), (SELECT count(*) FROM sent)`

// announceAfter is the value of countersign.announce that a change sets
// when this process announces its request and review events.
const announceAfter = "after"

// announcer sends the notices of changes committed with announceAfter.
type announcer struct {
	db      *sqlx.DB
	logger  *slog.Logger
	queue   chan Notice
	dropped atomic.Int64 // notices not queued since the last log line
	stop    chan struct{}
	done    chan struct{}
}

// announceBatch bounds the notices of one statement (each at most a few
// hundred bytes; PostgreSQL's queue takes 8,000 per notification).
const announceBatch = 500

func newAnnouncer(db *sqlx.DB, logger *slog.Logger) *announcer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &announcer{db: db, logger: logger, queue: make(chan Notice, 8*announceBatch),
		stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

// announce queues the notices of the events of a committed change that
// the trigger left out (request.* and review.*, with a request). It never
// waits: the change has committed, and its caller is answered now. A notice
// that finds the queue full (the database far behind) is dropped, counted
// and logged.
func (a *announcer) announce(events ...Event) {
	for _, e := range events {
		if e.RequestID == nil || !(strings.HasPrefix(e.Kind, "request.") || strings.HasPrefix(e.Kind, "review.")) {
			continue
		}
		n := Notice{Kind: e.Kind, RequestID: *e.RequestID}
		if e.AgentID != nil {
			n.AgentID = *e.AgentID
		}
		if e.UserID != nil {
			n.UserID = *e.UserID
		}
		select {
		case a.queue <- n:
		default:
			a.dropped.Add(1)
		}
	}
}

// run sends what is queued, as much as is there at once in one statement,
// until close; then what is left.
func (a *announcer) run() {
	defer close(a.done)
	for {
		select {
		case n := <-a.queue:
			a.sendFrom(n)
		case <-a.stop:
			for {
				select {
				case n := <-a.queue:
					a.sendFrom(n)
				default:
					return
				}
			}
		}
	}
}

// sendFrom sends n and whatever else is queued, up to announceBatch.
func (a *announcer) sendFrom(n Notice) {
	batch := []string{encodeNotice(n)}
	for len(batch) < announceBatch {
		select {
		case n := <-a.queue:
			batch = append(batch, encodeNotice(n))
		default:
			a.send(batch)
			return
		}
	}
	a.send(batch)
}

func encodeNotice(n Notice) string {
	b, _ := json.Marshal(n) // plain strings and an int64
	return string(b)
}

// notAnnounced is what a lost notice costs: the live pages of other
// replicas show the request as it was until they reload, and a decision's
// ping waits for the outbox's next pass (within a second).
const notAnnounced = "events not announced: live pages on other replicas show them when they reload, and pings go on the outbox's next pass"

// send announces batch, trying once more after a failure: a notice that
// cannot be sent is logged, not kept.
func (a *announcer) send(batch []string) {
	if n := a.dropped.Swap(0); n > 0 {
		a.logger.Warn(notAnnounced, "notices", n, "err", "announcement queue full")
	}
	var err error
	for attempt := range 2 {
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = a.db.ExecContext(ctx, announceSQL, EventsChannel, pq.StringArray(batch))
		cancel()
		if err == nil {
			return
		}
	}
	a.logger.Warn(notAnnounced, "notices", len(batch), "err", err)
}

// close sends what is queued, waiting at most wait, and stops.
func (a *announcer) close(wait time.Duration) {
	close(a.stop)
	select {
	case <-a.done:
	case <-time.After(wait):
		a.logger.Warn(notAnnounced, "notices", len(a.queue), "err", "stopped before they were sent")
	}
}

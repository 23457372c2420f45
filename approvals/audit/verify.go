package audit

import (
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// Kinds of Break.
const (
	// BreakChanged: the event at the position is not what was sealed there.
	BreakChanged = "changed"
	// BreakMissing: a position, or the event sealed at it, is gone.
	BreakMissing = "missing"
	// BreakInserted: an event sits at the position that was not sealed; the
	// chain goes on as sealed from the next one.
	BreakInserted = "inserted"
	// BreakReordered: the event sealed at the position now sits at the next
	// one.
	BreakReordered = "reordered"
	// BreakTruncated: a checkpoint covers positions after the chain's end.
	BreakTruncated = "truncated"
	// BreakCheckpoint: a checkpoint's signature is bad, its key unknown, or
	// the head it signs is not the chain's.
	BreakCheckpoint = "checkpoint"
	// BreakFormat: an export file that is not one.
	BreakFormat = "format"
	// BreakUnsealed: events have waited longer than they should to be
	// sealed: no sealer runs, or it fails (reported by countersign audit
	// verify, not by the Verifier).
	BreakUnsealed = "unsealed"
)

// Break is the first place where the trail is not as it was sealed.
type Break struct {
	Kind     string
	Position int64
	// EventID is the event at Position, when there is one.
	EventID int64
	Detail  string
}

func (b *Break) Error() string {
	var where string
	switch {
	case b.Position != 0 && b.EventID != 0:
		where = fmt.Sprintf("position %d (event %d)", b.Position, b.EventID)
	case b.Position != 0:
		where = fmt.Sprintf("position %d", b.Position)
	case b.EventID != 0:
		where = fmt.Sprintf("event %d", b.EventID)
	default:
		return fmt.Sprintf("audit: %s: %s", b.Kind, b.Detail)
	}
	return fmt.Sprintf("audit: %s: %s: %s", where, b.Kind, b.Detail)
}

// changedDetail says what a hash mismatch proves: this position's event,
// or the one before it if its stored hash was rewritten to match it.
const changedDetail = "the event is not what was sealed at this position (or the one before it was changed and its stored hash rewritten to match)"

// Report is what a walk of the trail found.
type Report struct {
	// First and Last are the positions walked (First is 1 for the whole
	// chain; an export may start later).
	First       int64 `json:"first"`
	Last        int64 `json:"last"`
	Events      int64 `json:"events"`
	Checkpoints int64 `json:"checkpoints"`
	// FirstAt and LastAt are the times of the first and last events walked.
	FirstAt string `json:"first_at,omitempty"`
	LastAt  string `json:"last_at,omitempty"`
	// LastCheckpoint is the position of the last checkpoint seen, and
	// LastCheckpointAt its time; Unsigned counts the positions after it:
	// hashed but not yet covered by a signature.
	LastCheckpoint   int64  `json:"last_checkpoint"`
	LastCheckpointAt string `json:"last_checkpoint_at,omitempty"`
	Unsigned         int64  `json:"unsigned"`
	// Unsealed counts the events not yet in the chain (the database only).
	Unsealed int64 `json:"unsealed"`
	// OldestUnsealedAt is the time of the oldest of them.
	OldestUnsealedAt string `json:"oldest_unsealed_at,omitempty"`
}

// Verifier walks a chain in position order: Start once (or not, from the
// chain's beginning), then Event for each position and Checkpoint after the
// event at its position, then Finish. Each call returns the first *Break
// found, after which the walk is over. Judging a hash mismatch looks one
// event ahead, so a Break may come from the call after the broken one.
type Verifier struct {
	keys *jose.JSONWebKeySet
	// rank orders the keys as the set lists them, oldest first: once a
	// checkpoint is signed by a key, no later one may be signed by an
	// older key (a retired key signs nothing after its successor began).
	rank     map[string]int
	lastRank int
	started  bool
	prev     Hash
	last     int64 // position of the last event taken
	report   Report
	// lastGood is the last checkpoint that matched.
	lastGood int64
	// pending is a hash mismatch waiting for the next event to say what
	// kind it is.
	pending *mismatch
	broken  error
}

type mismatch struct {
	position int64
	eventID  int64
	prev     Hash // the chain's hash before it
	stored   Hash // the hash sealed at its position
}

// NewVerifier checks checkpoints against keys, listed oldest first (as
// countersign audit key prints them).
func NewVerifier(keys *jose.JSONWebKeySet) *Verifier {
	v := &Verifier{keys: keys, rank: map[string]int{}}
	for i, k := range keys.Keys {
		v.rank[k.KeyID] = i
	}
	return v
}

// Start says the walk begins after position, whose chain hash is head (an
// export that does not start at the beginning).
func (v *Verifier) Start(position int64, head Hash) error {
	if v.started || v.last != 0 {
		return v.fail(&Break{Kind: BreakFormat, Position: position, Detail: "a second start of the chain"})
	}
	if position < 0 || (position == 0 && head != (Hash{})) {
		return v.fail(&Break{Kind: BreakFormat, Position: position, Detail: "the chain begins at position 0 with the zero hash"})
	}
	v.started, v.prev, v.last, v.lastGood = true, head, position, position
	return nil
}

func (v *Verifier) fail(b *Break) error {
	if v.broken == nil {
		v.broken = b
	}
	return v.broken
}

// Event takes the event sealed at position with hash stored; rec is nil when
// the chain names an event that is not there.
func (v *Verifier) Event(position, eventID int64, stored Hash, rec *Record) error {
	if v.broken != nil {
		return v.broken
	}
	if !v.started {
		v.started = true
	}
	if v.report.Events == 0 {
		v.report.First = position
	}
	var canon []byte
	if rec != nil {
		var err error
		if canon, err = rec.Canonical(); err != nil {
			return v.fail(&Break{Kind: BreakChanged, Position: position, EventID: eventID, Detail: err.Error()})
		}
	}
	if m := v.pending; m != nil {
		// The previous position did not match. Read what this one says
		// about it.
		b := &Break{Kind: BreakChanged, Position: m.position, EventID: m.eventID, Detail: changedDetail}
		if canon != nil && position == m.position+1 {
			switch Link(m.prev, canon) {
			case stored:
				b.Kind, b.Detail = BreakInserted, "an event that was not sealed here; the chain goes on as sealed without it"
			case m.stored:
				b.Kind, b.Detail = BreakReordered, fmt.Sprintf("the event sealed here now sits at position %d", position)
			}
		}
		return v.fail(b)
	}
	switch {
	case position > v.last+1:
		return v.fail(&Break{Kind: BreakMissing, Position: v.last + 1,
			Detail: fmt.Sprintf("positions %d to %d are missing from the chain", v.last+1, position-1)})
	case position <= v.last:
		return v.fail(&Break{Kind: BreakFormat, Position: position, EventID: eventID,
			Detail: fmt.Sprintf("position %d again after position %d", position, v.last)})
	case rec == nil:
		return v.fail(&Break{Kind: BreakMissing, Position: position, EventID: eventID,
			Detail: "the event sealed at this position is gone"})
	case rec.ID != eventID:
		return v.fail(&Break{Kind: BreakChanged, Position: position, EventID: eventID,
			Detail: fmt.Sprintf("the event's id reads %d", rec.ID)})
	}
	if v.report.FirstAt == "" {
		v.report.FirstAt = rec.At
	}
	h := Link(v.prev, canon)
	if h != stored {
		v.pending = &mismatch{position: position, eventID: eventID, prev: v.prev, stored: stored}
		v.last, v.prev = position, stored
		return nil
	}
	v.prev, v.last = h, position
	v.report.LastAt = rec.At
	v.report.Events++
	v.report.Last = position
	return nil
}

// Checkpoint takes a checkpoint, after the event at its position.
func (v *Verifier) Checkpoint(c Checkpoint) error {
	if v.broken != nil {
		return v.broken
	}
	if v.pending != nil {
		// A checkpoint right after a mismatch: nothing to look ahead to.
		return v.Finish()
	}
	switch {
	case c.Position > v.last:
		return v.fail(&Break{Kind: BreakTruncated, Position: v.last + 1,
			Detail: fmt.Sprintf("the checkpoint of position %d is there, the chain ends at %d", c.Position, v.last)})
	case c.Position < v.last:
		return v.fail(&Break{Kind: BreakFormat, Position: c.Position,
			Detail: fmt.Sprintf("a checkpoint of position %d after position %d", c.Position, v.last)})
	}
	if err := c.Verify(v.keys); err != nil {
		return v.fail(&Break{Kind: BreakCheckpoint, Position: c.Position, Detail: err.Error()})
	}
	if r := v.rank[c.KID]; r < v.lastRank {
		return v.fail(&Break{Kind: BreakCheckpoint, Position: c.Position,
			Detail: fmt.Sprintf("signed by key %s, which a newer key had already replaced at an earlier checkpoint", c.KID)})
	} else {
		v.lastRank = r
	}
	if c.Head != v.prev {
		return v.fail(&Break{Kind: BreakCheckpoint, Position: c.Position,
			Detail: fmt.Sprintf("the signed head is not the chain's: the events after position %d were rewritten with their hashes", v.lastGood)})
	}
	v.lastGood = c.Position
	v.report.Checkpoints++
	v.report.LastCheckpoint, v.report.LastCheckpointAt = c.Position, c.SealedAt
	return nil
}

// Finish ends the walk and reports it.
func (v *Verifier) Finish() error {
	if v.broken != nil {
		return v.broken
	}
	if m := v.pending; m != nil {
		return v.fail(&Break{Kind: BreakChanged, Position: m.position, EventID: m.eventID, Detail: changedDetail})
	}
	v.report.Unsigned = v.report.Last - v.report.LastCheckpoint
	if v.report.LastCheckpoint == 0 {
		v.report.Unsigned = v.report.Events
	}
	return nil
}

// Report is the walk's outcome so far.
func (v *Verifier) Report() Report { return v.report }

// IsBreak reports whether err is a *Break and returns it.
func IsBreak(err error) (*Break, bool) {
	var b *Break
	ok := errors.As(err, &b)
	return b, ok
}

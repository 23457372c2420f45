package approvals

import (
	"fmt"
	"slices"
	"time"
)

// State is where a request is in its life.
type State string

// The states of a request. Terminal states cannot be left.
//
//	pending ─┬─> approved ──> token_issued ─┬─> redeemed
//	         ├─> denied                     └─> revoked
//	         ├─> expired   (also from approved, never collected)
//	         └─> cancelled
const (
	StatePending     State = "pending"
	StateApproved    State = "approved"
	StateDenied      State = "denied"
	StateExpired     State = "expired"
	StateCancelled   State = "cancelled"
	StateTokenIssued State = "token_issued"
	StateRedeemed    State = "redeemed"
	StateRevoked     State = "revoked"
)

// Action is something done to a request: what a transition of the state
// machine is named after.
type Action string

// The actions on a request.
const (
	ActionApprove Action = "approve"
	ActionDeny    Action = "deny"
	ActionExpire  Action = "expire"
	ActionCancel  Action = "cancel"
	ActionIssue   Action = "issue"  // the agent collects the token
	ActionRedeem  Action = "redeem" // a resource server spends the token
	ActionRevoke  Action = "revoke"
)

// transitions lists, for each event, the states it may leave and the state it
// leads to. The store's guarded UPDATEs use the same table (From), so the SQL
// and the pure function cannot disagree.
var transitions = map[Action]struct {
	from []State
	to   State
	// live means the request (or its token) must not have expired yet.
	live bool
}{
	ActionApprove: {[]State{StatePending}, StateApproved, true},
	ActionDeny:    {[]State{StatePending}, StateDenied, true},
	ActionCancel:  {[]State{StatePending}, StateCancelled, true},
	ActionExpire:  {[]State{StatePending, StateApproved}, StateExpired, false},
	ActionIssue:   {[]State{StateApproved}, StateTokenIssued, true},
	ActionRedeem:  {[]State{StateTokenIssued}, StateRedeemed, true},
	ActionRevoke:  {[]State{StateTokenIssued}, StateRevoked, false},
}

// From returns the states event may leave.
func From(e Action) []State { return transitions[e].from }

// Terminal reports whether no event leads out of s.
func (s State) Terminal() bool {
	for _, t := range transitions {
		if slices.Contains(t.from, s) {
			return false
		}
	}
	return true
}

// Next is the request state machine as a pure function: the state that event
// e leads to from state s, for a request (or, for redeem, a token) that
// expires at expiresAt, at time now. It does no I/O.
func Next(s State, e Action, expiresAt, now time.Time) (State, error) {
	t, ok := transitions[e]
	if !ok {
		return s, fmt.Errorf("approvals: unknown event %q", e)
	}
	if !slices.Contains(t.from, s) {
		if s.Terminal() {
			return s, fmt.Errorf("%w: request is %s", ErrAlreadyDecided, s)
		}
		return s, fmt.Errorf("%w: cannot %s a request that is %s", ErrWrongState, e, s)
	}
	if e == ActionExpire && now.Before(expiresAt) {
		return s, fmt.Errorf("%w: request expires at %s", ErrWrongState, expiresAt.Format(time.RFC3339))
	}
	if t.live && !now.Before(expiresAt) {
		return s, ErrExpired
	}
	return t.to, nil
}

// statesSQL renders states as a PostgreSQL text[] literal for a guard.
func statesSQL(states []State) []string {
	out := make([]string, len(states))
	for i, s := range states {
		out[i] = string(s)
	}
	return out
}

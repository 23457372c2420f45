package approvals

import (
	"errors"
	"testing"
	"time"
)

// TestStateScenarios plays sequences of events through the pure state
// machine and checks the state (or the refusal) after each.
func TestStateScenarios(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	expires := t0.Add(10 * time.Minute)
	type step struct {
		event Action
		at    time.Duration // after t0
		want  State
		err   error // nil: the event applies
	}
	scenarios := []struct {
		name  string
		steps []step
	}{
		{"approve, collect, redeem", []step{
			{ActionApprove, time.Minute, StateApproved, nil},
			{ActionIssue, 2 * time.Minute, StateTokenIssued, nil},
			{ActionRedeem, 3 * time.Minute, StateRedeemed, nil},
			{ActionRedeem, 3 * time.Minute, StateRedeemed, ErrAlreadyDecided},
			{ActionRevoke, 4 * time.Minute, StateRedeemed, ErrAlreadyDecided},
		}},
		{"deny is final", []step{
			{ActionDeny, time.Minute, StateDenied, nil},
			{ActionApprove, time.Minute, StateDenied, ErrAlreadyDecided},
			{ActionIssue, time.Minute, StateDenied, ErrAlreadyDecided},
			{ActionCancel, time.Minute, StateDenied, ErrAlreadyDecided},
			{ActionExpire, 20 * time.Minute, StateDenied, ErrAlreadyDecided},
		}},
		{"decision after expiry is refused, then the sweeper expires it", []step{
			{ActionApprove, 10 * time.Minute, StatePending, ErrExpired},
			{ActionDeny, 11 * time.Minute, StatePending, ErrExpired},
			{ActionExpire, 11 * time.Minute, StateExpired, nil},
			{ActionApprove, 11 * time.Minute, StateExpired, ErrAlreadyDecided},
		}},
		{"expiry is not early", []step{
			{ActionExpire, 9 * time.Minute, StatePending, ErrWrongState},
			{ActionApprove, 9 * time.Minute, StateApproved, nil},
		}},
		{"approved but never collected expires", []step{
			{ActionApprove, time.Minute, StateApproved, nil},
			{ActionIssue, 10 * time.Minute, StateApproved, ErrExpired},
			{ActionExpire, 10 * time.Minute, StateExpired, nil},
			{ActionIssue, 10 * time.Minute, StateExpired, ErrAlreadyDecided},
		}},
		{"cancel by the agent", []step{
			{ActionCancel, time.Minute, StateCancelled, nil},
			{ActionApprove, time.Minute, StateCancelled, ErrAlreadyDecided},
		}},
		{"cannot cancel after approval", []step{
			{ActionApprove, time.Minute, StateApproved, nil},
			{ActionCancel, time.Minute, StateApproved, ErrWrongState},
			{ActionIssue, time.Minute, StateTokenIssued, nil},
			{ActionIssue, time.Minute, StateTokenIssued, ErrWrongState},
		}},
		{"revoked token cannot be redeemed", []step{
			{ActionApprove, time.Minute, StateApproved, nil},
			{ActionIssue, time.Minute, StateTokenIssued, nil},
			{ActionRevoke, 2 * time.Minute, StateRevoked, nil},
			{ActionRedeem, 2 * time.Minute, StateRevoked, ErrAlreadyDecided},
		}},
		{"redeem needs a live token; revoke does not", []step{
			{ActionApprove, time.Minute, StateApproved, nil},
			{ActionIssue, time.Minute, StateTokenIssued, nil},
			{ActionRedeem, 10 * time.Minute, StateTokenIssued, ErrExpired},
			{ActionRevoke, 11 * time.Minute, StateRevoked, nil},
		}},
		{"nothing before approval", []step{
			{ActionIssue, time.Minute, StatePending, ErrWrongState},
			{ActionRedeem, time.Minute, StatePending, ErrWrongState},
			{ActionRevoke, time.Minute, StatePending, ErrWrongState},
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			s := StatePending
			for i, st := range sc.steps {
				next, err := Next(s, st.event, expires, t0.Add(st.at))
				if !errors.Is(err, st.err) || (err == nil) != (st.err == nil) {
					t.Fatalf("step %d (%s): err = %v, want %v", i, st.event, err, st.err)
				}
				if err == nil {
					s = next
				}
				if s != st.want {
					t.Fatalf("step %d (%s): state %s, want %s", i, st.event, s, st.want)
				}
			}
		})
	}
}

func TestTerminal(t *testing.T) {
	terminal := map[State]bool{StateDenied: true, StateExpired: true, StateCancelled: true, StateRedeemed: true, StateRevoked: true}
	for _, s := range []State{StatePending, StateApproved, StateDenied, StateExpired, StateCancelled, StateTokenIssued, StateRedeemed, StateRevoked} {
		if s.Terminal() != terminal[s] {
			t.Errorf("%s.Terminal() = %v", s, s.Terminal())
		}
	}
}

func TestAuthReqID(t *testing.T) {
	h := authReqIDs{key: DeriveKey([]byte("0123456789abcdef0123456789abcdef"), "countersign auth_req_id v1")}
	id := newUUID()
	handle := h.issue(id)
	got, err := h.parse(handle)
	if err != nil || got != uuidString(id[:]) {
		t.Fatalf("parse(issue(id)) = %q, %v; want %s", got, err, uuidString(id[:]))
	}
	other := authReqIDs{key: DeriveKey([]byte("fedcba9876543210fedcba9876543210"), "countersign auth_req_id v1")}
	if _, err := other.parse(handle); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("another key accepted the handle: %v", err)
	}
	// Flip each byte of the MAC in turn: every forgery fails.
	raw := []byte(handle)
	for i := range raw {
		forged := append([]byte(nil), raw...)
		forged[i] ^= 1
		if _, err := h.parse(string(forged)); err == nil && string(forged) != handle {
			t.Fatalf("forged handle %q accepted", forged)
		}
	}
	for _, bad := range []string{"", "x", uuidString(id[:]), handle + "A"} {
		if _, err := h.parse(bad); !errors.Is(err, ErrBadHandle) {
			t.Errorf("parse(%q) = %v, want ErrBadHandle", bad, err)
		}
	}
}

func TestUserCodeHash(t *testing.T) {
	h := HashUserCode("4711")
	if ok, err := userCodeMatches(h, "4711"); !ok || err != nil {
		t.Fatalf("right code: %v %v", ok, err)
	}
	if ok, _ := userCodeMatches(h, "4712"); ok {
		t.Fatal("wrong code accepted")
	}
	if h == HashUserCode("4711") {
		t.Fatal("hashes are not salted")
	}
}

package approvals

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approvals/policy"
)

// The people of the review scenarios: Alice asks (the request is hers), the
// m users are members of group sre, who may make up a quorum, and Eve is in
// another group.
const (
	reviewReqID = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"
	reviewHash  = "hash-of-the-details"
	usrAlice    = "usr_alice"
	usrM1       = "usr_m1"
	usrM2       = "usr_m2"
	usrM3       = "usr_m3"
	usrEve      = "usr_eve"
)

// reviewT0 is the clock of the scenarios; requests expire ten minutes later.
var reviewT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// reviewStep is one review and what the request is after it: state when
// the review is accepted, or err (matched with errors.Is) when it is refused
// and the request is left as it was.
type reviewStep struct {
	rev   Review
	at    time.Duration // after reviewT0
	state State
	acr   string   // checked when the step approves
	amr   []string // checked when the step approves
	err   error
}

func approveBy(who string, groups ...string) Review {
	return Review{RequestID: reviewReqID, Reviewer: who, Verdict: VerdictApprove, AMR: []string{"pwd"}, Groups: groups}
}

func denyBy(who string, groups ...string) Review {
	return Review{RequestID: reviewReqID, Reviewer: who, Verdict: VerdictDeny, Reason: "not now", Groups: groups}
}

// withEvidence is rev carrying step-up evidence made by user for request id
// over details hash, and the amr a verified passkey adds.
func withEvidence(rev Review, id, user, hash string) Review {
	rev.Evidence = &StepUpEvidence{ID: 1, RequestID: id, UserID: user, DetailsHash: hash}
	rev.AMR = append(slices.Clone(rev.AMR), "hwk", "user")
	return rev
}

// withOwnEvidence is rev with evidence made for the scenario request by its reviewer.
func withOwnEvidence(rev Review) Review {
	return withEvidence(rev, reviewReqID, rev.Reviewer, reviewHash)
}

func withReason(rev Review, reason string) Review { rev.Reason = reason; return rev }

func withVerdict(rev Review, v Verdict) Review { rev.Verdict = v; return rev }

// sre2 is a quorum of two members of sre; the requester counts if counts.
func sre2(counts bool) []policy.QuorumRequirement {
	return []policy.QuorumRequirement{{Group: "sre", N: 2, RequesterCounts: counts}}
}

// TestApplyReviewScenarios runs ApplyReview as the store would: each review
// is applied to the request and the reviews accepted so far; an accepted one
// is kept and the request takes the state it resolves to.
func TestApplyReviewScenarios(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   Request // ID, DetailsHash, ExpiresAt and State are filled in when zero
		steps []reviewStep
	}{
		{"plain request approved by its user", Request{UserID: usrAlice}, []reviewStep{
			{rev: approveBy(usrAlice), state: StateApproved, acr: ACRApproval, amr: []string{"pwd"}},
		}},
		{"plain request denied by its user", Request{UserID: usrAlice}, []reviewStep{
			{rev: denyBy(usrAlice), state: StateDenied},
		}},
		{"a stranger may neither approve nor deny", Request{UserID: usrAlice}, []reviewStep{
			{rev: approveBy(usrEve, "finance"), err: ErrNotEligible},
			{rev: denyBy(usrEve, "finance"), err: ErrNotEligible},
			// Groups matter only to a quorum.
			{rev: approveBy(usrM1, "sre"), err: ErrNotEligible},
			{rev: approveBy(usrAlice), state: StateApproved, acr: ACRApproval, amr: []string{"pwd"}},
		}},
		{"step-up approved with evidence", Request{UserID: usrAlice, StepUp: true, UserRequired: true}, []reviewStep{
			{rev: withOwnEvidence(approveBy(usrAlice)), state: StateApproved, acr: ACRStepUp, amr: []string{"hwk", "pwd", "user"}},
		}},
		{"step-up needs evidence", Request{UserID: usrAlice, StepUp: true, UserRequired: true}, []reviewStep{
			{rev: approveBy(usrAlice), err: ErrStepUpRequired},
			{rev: withOwnEvidence(approveBy(usrAlice)), state: StateApproved, acr: ACRStepUp, amr: []string{"hwk", "pwd", "user"}},
		}},
		{"step-up evidence made for something else", Request{UserID: usrAlice, StepUp: true, UserRequired: true}, []reviewStep{
			{rev: withEvidence(approveBy(usrAlice), "0b1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b", usrAlice, reviewHash), err: ErrStepUpRequired},
			{rev: withEvidence(approveBy(usrAlice), reviewReqID, usrAlice, "hash-of-other-details"), err: ErrStepUpRequired},
			{rev: withEvidence(approveBy(usrAlice), reviewReqID, usrM1, reviewHash), err: ErrStepUpRequired},
			// A denial needs no evidence.
			{rev: denyBy(usrAlice), state: StateDenied},
		}},
		{"quorum of two without the requester", Request{UserID: usrAlice, Quorum: sre2(false)}, []reviewStep{
			{rev: approveBy(usrAlice, "sre"), err: ErrNoEffect},
			{rev: approveBy(usrEve, "finance"), err: ErrNotEligible},
			{rev: approveBy(usrM1, "sre"), state: StatePending},
			{rev: approveBy(usrM2, "sre"), state: StateApproved, acr: ACRApproval, amr: []string{"pwd"}},
		}},
		{"quorum: the requester may still deny", Request{UserID: usrAlice, Quorum: sre2(false)}, []reviewStep{
			{rev: approveBy(usrM1, "sre"), state: StatePending},
			{rev: denyBy(usrAlice), state: StateDenied},
		}},
		{"quorum counting the requester", Request{UserID: usrAlice, Quorum: sre2(true)}, []reviewStep{
			{rev: approveBy(usrAlice, "sre"), state: StatePending},
			{rev: approveBy(usrM1, "sre"), state: StateApproved, acr: ACRApproval, amr: []string{"pwd"}},
		}},
		{"quorum counting the requester only as a member", Request{UserID: usrAlice, Quorum: sre2(true)}, []reviewStep{
			{rev: approveBy(usrAlice), err: ErrNoEffect},
			{rev: approveBy(usrM1, "sre"), state: StatePending},
			{rev: approveBy(usrM2, "sre"), state: StateApproved, acr: ACRApproval, amr: []string{"pwd"}},
		}},
		{"quorum with step-up: every member brings evidence", Request{UserID: usrAlice, Quorum: sre2(false), StepUp: true}, []reviewStep{
			{rev: approveBy(usrM1, "sre"), err: ErrStepUpRequired},
			{rev: withEvidence(approveBy(usrM1, "sre"), reviewReqID, usrM2, reviewHash), err: ErrStepUpRequired},
			{rev: withOwnEvidence(approveBy(usrM1, "sre")), state: StatePending},
			{rev: approveBy(usrM2, "sre"), err: ErrStepUpRequired},
			{rev: withOwnEvidence(approveBy(usrM2, "sre")), state: StateApproved, acr: ACRStepUp, amr: []string{"hwk", "pwd", "user"}},
		}},
		{"quorum and the user", Request{UserID: usrAlice, Quorum: sre2(false), UserRequired: true}, []reviewStep{
			{rev: approveBy(usrM1, "sre"), state: StatePending},
			{rev: approveBy(usrM2, "sre"), state: StatePending},
			{rev: approveBy(usrAlice), state: StateApproved, acr: ACRApproval, amr: []string{"pwd"}},
		}},
		{"a denial after an approval denies", Request{UserID: usrAlice, Quorum: sre2(false)}, []reviewStep{
			{rev: approveBy(usrM1, "sre"), state: StatePending},
			{rev: denyBy(usrM2, "sre"), state: StateDenied},
		}},
		{"a resolved request does not change", Request{UserID: usrAlice, Quorum: sre2(false)}, []reviewStep{
			{rev: approveBy(usrM1, "sre"), state: StatePending},
			{rev: approveBy(usrM2, "sre"), state: StateApproved, acr: ACRApproval, amr: []string{"pwd"}},
			{rev: approveBy(usrM3, "sre"), err: ErrAlreadyDecided},
			{rev: denyBy(usrM3, "sre"), err: ErrAlreadyDecided},
			{rev: denyBy(usrAlice), err: ErrAlreadyDecided},
		}},
		{"a denied request does not change", Request{UserID: usrAlice}, []reviewStep{
			{rev: denyBy(usrAlice), state: StateDenied},
			{rev: approveBy(usrAlice), err: ErrAlreadyDecided},
		}},
		{"a cancelled request takes no review", Request{UserID: usrAlice, State: StateCancelled}, []reviewStep{
			{rev: approveBy(usrAlice), err: ErrAlreadyDecided},
		}},
		{"one review per reviewer", Request{UserID: usrAlice, Quorum: sre2(false)}, []reviewStep{
			{rev: approveBy(usrM1, "sre"), state: StatePending},
			{rev: approveBy(usrM1, "sre"), err: ErrAlreadyReviewed},
			{rev: denyBy(usrM1, "sre"), err: ErrAlreadyReviewed},
			{rev: approveBy(usrM2, "sre"), state: StateApproved, acr: ACRApproval, amr: []string{"pwd"}},
		}},
		{"expired", Request{UserID: usrAlice}, []reviewStep{
			{rev: approveBy(usrAlice), at: 10 * time.Minute, err: ErrExpired},
			{rev: denyBy(usrAlice), at: time.Hour, err: ErrExpired},
			{rev: approveBy(usrAlice), at: 10*time.Minute - time.Nanosecond, state: StateApproved, acr: ACRApproval, amr: []string{"pwd"}},
		}},
		{"reason and verdict are checked", Request{UserID: usrAlice}, []reviewStep{
			{rev: withReason(denyBy(usrAlice), strings.Repeat("x", MaxReviewReason+1)), err: ErrInvalidInput},
			{rev: withReason(denyBy(usrAlice), strings.Repeat("é", MaxReviewReason+1)), err: ErrInvalidInput},
			{rev: withReason(denyBy(usrAlice), "\xff"), err: ErrInvalidInput},
			{rev: withVerdict(approveBy(usrAlice), "abstain"), err: ErrInvalidInput},
			// Characters are counted, not bytes.
			{rev: withReason(denyBy(usrAlice), strings.Repeat("é", MaxReviewReason)), state: StateDenied},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.req
			if r.ID == "" {
				r.ID = reviewReqID
			}
			if r.DetailsHash == "" {
				r.DetailsHash = reviewHash
			}
			if r.ExpiresAt.IsZero() {
				r.ExpiresAt = reviewT0.Add(10 * time.Minute)
			}
			if r.State == "" {
				r.State = StatePending
			}
			var reviews []Review
			for i, s := range tc.steps {
				res, err := ApplyReview(r, reviews, s.rev, reviewT0.Add(s.at))
				if s.err != nil {
					if !errors.Is(err, s.err) {
						t.Fatalf("step %d (%s %s): err = %v, want %v", i, s.rev.Reviewer, s.rev.Verdict, err, s.err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d (%s %s): %v, want the request %s", i, s.rev.Reviewer, s.rev.Verdict, err, s.state)
				}
				if res.State != s.state {
					t.Fatalf("step %d (%s %s): request %s, want %s", i, s.rev.Reviewer, s.rev.Verdict, res.State, s.state)
				}
				checkResolution(t, i, s, res)
				reviews = append(reviews, s.rev)
				r.State = res.State
			}
		})
	}
}

// checkResolution checks what a step's accepted review resolved to.
func checkResolution(t *testing.T, i int, s reviewStep, res Resolution) {
	t.Helper()
	switch res.State {
	case StateApproved:
		if res.ACR != s.acr || !slices.Equal(res.AMR, s.amr) || res.By != s.rev.Reviewer {
			t.Fatalf("step %d: approved with acr %q amr %v by %s, want %q %v by %s", i, res.ACR, res.AMR, res.By, s.acr, s.amr, s.rev.Reviewer)
		}
	case StateDenied:
		if res.By != s.rev.Reviewer || res.Reason != s.rev.Reason || res.ACR != "" {
			t.Fatalf("step %d: denied by %s (%q) acr %q, want by %s (%q) and no acr", i, res.By, res.Reason, res.ACR, s.rev.Reviewer, s.rev.Reason)
		}
	case StatePending:
		if res.ACR != "" || len(res.AMR) != 0 || res.By != "" {
			t.Fatalf("step %d: still pending but acr %q amr %v by %q", i, res.ACR, res.AMR, res.By)
		}
	}
}

// TestApplyReviewStoredEvidence: what the reviews add up to is recomputed
// from all of them, so a stored approval without evidence (one made before
// the request needed a step-up, or one whose evidence was lost) does not
// count towards a step-up quorum.
func TestApplyReviewStoredEvidence(t *testing.T) {
	r := Request{ID: reviewReqID, UserID: usrAlice, State: StatePending, DetailsHash: reviewHash, StepUp: true,
		Quorum: sre2(false), ExpiresAt: reviewT0.Add(time.Minute)}
	for _, tc := range []struct {
		name   string
		stored Review
		want   State
	}{
		{"stored with evidence", withOwnEvidence(approveBy(usrM1, "sre")), StateApproved},
		{"stored without evidence", approveBy(usrM1, "sre"), StatePending},
		{"stored with evidence for other details", withEvidence(approveBy(usrM1, "sre"), reviewReqID, usrM1, "old-hash"), StatePending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ApplyReview(r, []Review{tc.stored}, withOwnEvidence(approveBy(usrM2, "sre")), reviewT0)
			if err != nil || res.State != tc.want {
				t.Fatalf("got %s, %v; want %s", res.State, err, tc.want)
			}
		})
	}
}

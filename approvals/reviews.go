package approvals

import (
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/lib/pq"

	"github.com/countersign/countersign/approvals/policy"
)

// Verdict is what a reviewer says of a request.
type Verdict string

// Verdicts.
const (
	VerdictApprove Verdict = "approve"
	VerdictDeny    Verdict = "deny"
)

// MaxReviewReason bounds the optional reason a reviewer gives.
const MaxReviewReason = 500

// Errors of reviews. A reviewer who may not see a request gets ErrNotFound
// from Service.Review, exactly as for a request that does not exist.
var (
	ErrAlreadyReviewed = errors.New("approvals: this reviewer has already reviewed the request")
	ErrNotEligible     = errors.New("approvals: the reviewer may not review this request")
	ErrStepUpRequired  = errors.New("approvals: the approval needs step-up evidence for this request")
	ErrNoEffect        = errors.New("approvals: this reviewer's approval does not count towards what the request needs")
)

// Review is one reviewer's verdict on one request (a reviews row).
type Review struct {
	RequestID string         `db:"request_id"`
	Reviewer  string         `db:"reviewer"` // a user id
	Verdict   Verdict        `db:"verdict"`
	Reason    string         `db:"reason"`
	AMR       pq.StringArray `db:"amr"`    // how the reviewer authenticated (RFC 8176)
	Groups    pq.StringArray `db:"groups"` // the reviewer's groups when they reviewed
	CreatedAt time.Time      `db:"created_at"`
	// Evidence is the step-up evidence the review carries, or nil.
	Evidence *StepUpEvidence `db:"-"`
}

// StepUpEvidence is a WebAuthn assertion (WebAuthn Level 3 §7.2, user
// verification required) made for one request: its challenge is derived
// from the request id, the authorization_details_hash and a server nonce, so
// anyone with the credential's public key can verify later that the
// authenticator signed that exact request. The approver pages produce and
// verify it before they hand it to Service.Review.
type StepUpEvidence struct {
	ID                int64  `db:"id"`
	RequestID         string `db:"request_id"`
	UserID            string `db:"user_id"`
	DetailsHash       string `db:"details_hash"`
	CredentialID      []byte `db:"credential_id"`
	AuthenticatorData []byte `db:"authenticator_data"`
	ClientDataJSON    []byte `db:"client_data_json"`
	Signature         []byte `db:"signature"`
	Nonce             []byte `db:"nonce"`
}

// matches reports whether e was made by reviewer for request r as it stands.
func (e *StepUpEvidence) matches(r Request, reviewer string) bool {
	return e != nil && e.RequestID == r.ID && e.UserID == reviewer && e.DetailsHash == r.DetailsHash
}

// Resolution is what a request's reviews add up to.
type Resolution struct {
	State  State // pending, approved or denied
	ACR    string
	AMR    []string
	Reason string // the denying reviewer's reason
	By     string // the reviewer whose review resolved it
}

// ApplyReview is the review rule as a pure function (no I/O; now is the
// database's clock): given request r, the reviews it already has and a new
// review rev, it returns what the reviews then add up to, or a typed refusal.
//
//   - A resolved or expired request never changes (ErrAlreadyDecided,
//     ErrExpired), and a reviewer reviews once (ErrAlreadyReviewed).
//   - Eligible reviewers are the request's user and, for a quorum, members of
//     its groups (ErrNotEligible otherwise).
//   - One deny by an eligible reviewer denies.
//   - An approval of a step-up request must carry step-up evidence for this
//     request, by this reviewer, over its current details hash
//     (ErrStepUpRequired).
//   - The request is approved when its user has approved (if the policy
//     needs the user) and each quorum has N distinct approving members of its
//     group, the requester counting only where the rule says
//     requester_counts. An approval that counts towards nothing is refused
//     (ErrNoEffect).
//
// The token's acr and amr come from the approving reviews, never from a
// caller.
func ApplyReview(r Request, reviews []Review, rev Review, now time.Time) (Resolution, error) {
	switch {
	case r.State != StatePending:
		return Resolution{}, fmt.Errorf("%w: request is %s", ErrAlreadyDecided, r.State)
	case !now.Before(r.ExpiresAt):
		return Resolution{}, ErrExpired
	case rev.Verdict != VerdictApprove && rev.Verdict != VerdictDeny:
		return Resolution{}, fmt.Errorf("%w: verdict must be approve or deny", ErrInvalidInput)
	case utf8.RuneCountInString(rev.Reason) > MaxReviewReason || !utf8.ValidString(rev.Reason):
		return Resolution{}, fmt.Errorf("%w: a reason has at most %d characters", ErrInvalidInput, MaxReviewReason)
	case !eligible(r, rev):
		return Resolution{}, ErrNotEligible
	case slices.ContainsFunc(reviews, func(x Review) bool { return x.Reviewer == rev.Reviewer }):
		return Resolution{}, ErrAlreadyReviewed
	}
	if rev.Verdict == VerdictDeny {
		return Resolution{State: StateDenied, Reason: rev.Reason, By: rev.Reviewer}, nil
	}
	if r.StepUp && !rev.Evidence.matches(r, rev.Reviewer) {
		return Resolution{}, ErrStepUpRequired
	}
	if !counts(r, rev) {
		return Resolution{}, ErrNoEffect
	}
	all := append(slices.Clip(reviews), rev)
	if !met(r, all) {
		return Resolution{State: StatePending}, nil
	}
	res := Resolution{State: StateApproved, ACR: ACRApproval, By: rev.Reviewer}
	if r.StepUp {
		res.ACR = ACRStepUp
	}
	for _, x := range all {
		if x.Verdict == VerdictApprove {
			res.AMR = append(res.AMR, x.AMR...)
		}
	}
	slices.Sort(res.AMR)
	res.AMR = slices.Compact(res.AMR)
	return res, nil
}

// needsUser reports whether r's own user must approve. A request with no
// recorded requirement (made before requirements were kept) needs its user.
func needsUser(r Request) bool { return r.UserRequired || len(r.Quorum) == 0 }

func eligible(r Request, rev Review) bool {
	if rev.Reviewer == r.UserID {
		return true
	}
	return slices.ContainsFunc(r.Quorum, func(q policy.QuorumRequirement) bool { return slices.Contains(rev.Groups, q.Group) })
}

// counts reports whether an approval by rev is part of what r needs.
func counts(r Request, rev Review) bool {
	if rev.Reviewer == r.UserID && needsUser(r) {
		return true
	}
	return slices.ContainsFunc(r.Quorum, func(q policy.QuorumRequirement) bool { return inQuorum(r, q, rev) })
}

func inQuorum(r Request, q policy.QuorumRequirement, rev Review) bool {
	return slices.Contains(rev.Groups, q.Group) && (rev.Reviewer != r.UserID || q.RequesterCounts)
}

// met reports whether the approving reviews among all satisfy r. Evidence is
// checked again for every review, so a stored review cannot count for a
// step-up it did not make.
func met(r Request, all []Review) bool {
	valid := func(x Review) bool {
		return x.Verdict == VerdictApprove && (!r.StepUp || x.Evidence.matches(r, x.Reviewer))
	}
	if needsUser(r) && !slices.ContainsFunc(all, func(x Review) bool { return x.Reviewer == r.UserID && valid(x) }) {
		return false
	}
	for _, q := range r.Quorum {
		n := 0
		for _, x := range all {
			if valid(x) && inQuorum(r, q, x) {
				n++
			}
		}
		if n < q.N {
			return false
		}
	}
	return true
}

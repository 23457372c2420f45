package policy

import (
	"cmp"
	"slices"

	"github.com/countersign/countersign/protocol"
)

// ACR values (RFC 9470) that say how a request was approved (SPEC §4).
const (
	ACRPolicy   = protocol.ACRPolicy   // auto-allowed by a rule, amr ["policy"]
	ACRApproval = protocol.ACRApproval // a signed-in human approved
	ACRStepUp   = protocol.ACRStepUp   // a human approved with a fresh user-verified passkey
)

// Requirement is what a whole request needs: everything its elements need.
//
// Kind is the strictest element outcome after acr_values raised it. StepUp
// means every human approval — the user's and each quorum member's — must be
// made with a fresh user-verified passkey assertion; it is true whenever
// Kind is StepUp and may be true with Quorum. User means the requesting user
// must approve (some element, or acr_values, asked for approve or step_up);
// a quorum alone does not need it. Quorums lists every group whose approvals
// are needed, sorted by group. Reason and RuleID come from the first element
// with the strictest outcome (for a deny, the denying rule: its reason is
// the error_description). Elements are the decisions combined, in order.
type Requirement struct {
	Kind     Kind
	StepUp   bool
	User     bool
	Quorums  []QuorumRequirement
	Reason   string
	RuleID   string
	Elements []Decision
}

// QuorumRequirement is one group's part of a request: N distinct members of
// Group must approve; the requesting user counts towards N only when
// RequesterCounts.
type QuorumRequirement struct {
	Group           string
	N               int
	RequesterCounts bool
}

// Reasons set by Combine itself.
const (
	ReasonNoElements = "no authorization_details"
	ReasonACRStepUp  = "the client asked for a step-up (acr_values)"
	ReasonACRApprove = "the client asked for a human approval (acr_values)"
)

// Combine folds the decisions for a request's elements into what the request
// needs (SPEC §4): any deny denies; any step_up makes every human approval a
// step-up; quorums of different groups must all be met, with the largest n
// per group (and the requester counting only if every element lets them);
// otherwise approve beats allow. A decision with an invalid outcome counts as
// a deny, and no elements at all is a deny.
//
// acrValues (RFC 9470, sent as acr_values on /bc-authorize) can only raise
// the result: [ACRStepUp] acts as one more element deciding step_up,
// [ACRApproval] as one deciding approve; [ACRPolicy] and unknown values
// change nothing.
func Combine(elements []Decision, acrValues []string) Requirement {
	req := Requirement{Elements: elements} // Kind 0: the first element sets it
	if len(elements) == 0 {
		req.Kind, req.Reason = Deny, ReasonNoElements
		req.Elements = nil
		return req
	}
	quorums := map[string]*QuorumRequirement{}
	for _, d := range elements {
		o, reason := d.Outcome, d.Reason
		if o.validate() != nil {
			o, reason = Outcome{Kind: Deny}, "invalid outcome"
		}
		if o.Kind > req.Kind {
			req.Kind, req.Reason, req.RuleID = o.Kind, reason, d.RuleID
		}
		switch o.Kind {
		case Approve:
			req.User = true
		case StepUp:
			req.User, req.StepUp = true, true
		case Quorum:
			q := quorums[o.Group]
			if q == nil {
				q = &QuorumRequirement{Group: o.Group, N: o.N, RequesterCounts: o.RequesterCounts}
				quorums[o.Group] = q
			}
			q.N = max(q.N, o.N)
			q.RequesterCounts = q.RequesterCounts && o.RequesterCounts
		}
	}
	if req.Kind == Deny {
		return Requirement{Kind: Deny, Reason: req.Reason, RuleID: req.RuleID, Elements: elements}
	}
	for _, q := range quorums {
		req.Quorums = append(req.Quorums, *q)
	}
	slices.SortFunc(req.Quorums, func(a, b QuorumRequirement) int { return cmp.Compare(a.Group, b.Group) })

	// RFC 9470 §3: acr_values name the authentication the client wants; we
	// honour a stronger one and ignore a weaker one.
	for _, acr := range acrValues {
		switch acr {
		case ACRStepUp:
			req.User, req.StepUp = true, true
			if req.Kind < StepUp {
				req.Kind, req.Reason, req.RuleID = StepUp, ReasonACRStepUp, ""
			}
		case ACRApproval:
			req.User = true
			if req.Kind < Approve {
				req.Kind, req.Reason, req.RuleID = Approve, ReasonACRApprove, ""
			}
		}
	}
	return req
}

// ACR returns the acr the token carries once the requirement is met:
// [ACRPolicy] for allow, [ACRStepUp] when every approval is a step-up,
// [ACRApproval] otherwise, and "" for deny.
func (r Requirement) ACR() string {
	switch {
	case r.Kind == Deny:
		return ""
	case r.Kind == Allow:
		return ACRPolicy
	case r.StepUp:
		return ACRStepUp
	}
	return ACRApproval
}

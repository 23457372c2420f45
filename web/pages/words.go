package pages

import (
	"strconv"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/rar"
)

func sentence(it approvals.InboxItem) string {
	switch {
	case it.Sentence == "":
		return "A request the current types no longer describe"
	case it.Elements > 1:
		return it.Sentence + " (and " + strconv.Itoa(it.Elements-1) + " more)"
	}
	return it.Sentence
}

// need says what kind of approval a request needs.
func need(r approvals.Request) string {
	switch {
	case len(r.Quorum) > 0:
		n := 0
		for _, q := range r.Quorum {
			n += q.N
		}
		return strconv.Itoa(n) + " approvals needed"
	case r.StepUp:
		return "Approve with your passkey"
	}
	return "Your approval"
}

func stateLabel(s approvals.State) string {
	switch s {
	case approvals.StatePending:
		return "Expired"
	case approvals.StateApproved, approvals.StateTokenIssued:
		return "Approved"
	case approvals.StateRedeemed:
		return "Approved and used"
	case approvals.StateDenied:
		return "Denied"
	case approvals.StateExpired:
		return "Expired"
	case approvals.StateCancelled:
		return "Withdrawn by the agent"
	case approvals.StateRevoked:
		return "Approved, then revoked"
	}
	return string(s)
}

func flagLabel(f string) string {
	switch f {
	case rar.FlagEscaped:
		return "contains hidden or direction-changing characters, shown escaped"
	case rar.FlagControlRemoved:
		return "control characters removed"
	case rar.FlagMixedScript:
		return "mixes scripts: check for look-alike letters"
	case rar.FlagUndeclared:
		return "not declared by the type"
	}
	return f
}

func policyReason(r approvals.Request) string {
	if r.PolicyReason != "" {
		return r.PolicyReason
	}
	return "A rule of the risk policy asks for a person"
}

func needLine(c approvals.Consent) string {
	r := c.Request
	s := "Your approval"
	if len(r.Quorum) > 0 {
		s = "Approvals from the groups below"
		if c.UserApproval {
			s = "The requester's approval and approvals from the groups below"
		}
	}
	if r.StepUp {
		s += ", each confirmed with a passkey (step-up)"
	}
	return s
}

func reviewer(r approvals.NamedReview) string {
	if r.Name != "" {
		return r.Name + " (" + r.Email + ")"
	}
	return r.Email
}

func verdictLabel(v approvals.Verdict) string {
	if v == approvals.VerdictApprove {
		return "approved"
	}
	return "denied"
}

func outcome(c approvals.Consent) string {
	r := c.Request
	switch {
	case r.State == approvals.StatePending && !c.Now.Before(r.ExpiresAt):
		return "This request expired before it was decided."
	case r.State == approvals.StatePending && c.Mine != nil:
		return "You " + verdictLabel(c.Mine.Verdict) + " this request. It waits for the other approvals."
	case r.State == approvals.StatePending:
		return "This request waits for others to decide."
	case r.State == approvals.StateDenied:
		return "This request was denied."
	case r.State == approvals.StateExpired:
		return "This request expired before it was decided."
	case r.State == approvals.StateCancelled:
		return "The agent withdrew this request."
	}
	return "This request was approved."
}

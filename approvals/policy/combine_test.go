package policy

import (
	"reflect"
	"testing"
)

func dec(rule string, o Outcome) Decision {
	return Decision{Type: "t", Outcome: o, RuleID: rule, Reason: "reason of " + rule}
}

var (
	allow   = Outcome{Kind: Allow}
	approve = Outcome{Kind: Approve}
	stepUp  = Outcome{Kind: StepUp}
	deny    = Outcome{Kind: Deny, Reason: "no"}
)

func quorum(n int, group string, requesterCounts bool) Outcome {
	return Outcome{Kind: Quorum, N: n, Group: group, RequesterCounts: requesterCounts}
}

func TestCombine(t *testing.T) {
	tests := []struct {
		name     string
		elements []Decision
		acr      []string
		want     Requirement // Elements is filled in by the test
		acrOut   string
	}{
		{
			name:     "one allow",
			elements: []Decision{dec("a", allow)},
			want:     Requirement{Kind: Allow, Reason: "reason of a", RuleID: "a"},
			acrOut:   ACRPolicy,
		},
		{
			name:     "approve beats allow",
			elements: []Decision{dec("a", allow), dec("b", approve), dec("c", allow)},
			want:     Requirement{Kind: Approve, User: true, Reason: "reason of b", RuleID: "b"},
			acrOut:   ACRApproval,
		},
		{
			name:     "deny wins over everything",
			elements: []Decision{dec("a", stepUp), dec("b", quorum(2, "sre", false)), dec("c", deny), dec("d", allow)},
			want:     Requirement{Kind: Deny, Reason: "reason of c", RuleID: "c"},
			acrOut:   "",
		},
		{
			name:     "the first deny gives the reason",
			elements: []Decision{dec("a", deny), dec("b", deny)},
			want:     Requirement{Kind: Deny, Reason: "reason of a", RuleID: "a"},
		},
		{
			name:     "step_up beats approve",
			elements: []Decision{dec("a", approve), dec("b", stepUp)},
			want:     Requirement{Kind: StepUp, StepUp: true, User: true, Reason: "reason of b", RuleID: "b"},
			acrOut:   ACRStepUp,
		},
		{
			name:     "step_up makes quorum approvals step-ups",
			elements: []Decision{dec("a", quorum(2, "maintainers", false)), dec("b", stepUp)},
			want: Requirement{Kind: Quorum, StepUp: true, User: true, Reason: "reason of a", RuleID: "a",
				Quorums: []QuorumRequirement{{Group: "maintainers", N: 2}}},
			acrOut: ACRStepUp,
		},
		{
			name:     "quorum alone needs no approval of the user",
			elements: []Decision{dec("a", quorum(2, "maintainers", false)), dec("b", allow)},
			want: Requirement{Kind: Quorum, Reason: "reason of a", RuleID: "a",
				Quorums: []QuorumRequirement{{Group: "maintainers", N: 2}}},
			acrOut: ACRApproval,
		},
		{
			name:     "quorums of two groups are both required",
			elements: []Decision{dec("a", quorum(2, "sre", true)), dec("b", approve), dec("c", quorum(1, "dba", true))},
			want: Requirement{Kind: Quorum, User: true, Reason: "reason of a", RuleID: "a",
				Quorums: []QuorumRequirement{{Group: "dba", N: 1, RequesterCounts: true}, {Group: "sre", N: 2, RequesterCounts: true}}},
			acrOut: ACRApproval,
		},
		{
			name:     "largest n per group, requester counts only if every element lets them",
			elements: []Decision{dec("a", quorum(2, "sre", true)), dec("b", quorum(3, "sre", true)), dec("c", quorum(1, "sre", false))},
			want: Requirement{Kind: Quorum, Reason: "reason of a", RuleID: "a",
				Quorums: []QuorumRequirement{{Group: "sre", N: 3}}},
			acrOut: ACRApproval,
		},
		{
			name:     "no elements deny",
			elements: nil,
			want:     Requirement{Kind: Deny, Reason: ReasonNoElements},
		},
		{
			name:     "an invalid outcome denies",
			elements: []Decision{dec("a", allow), {Type: "t", RuleID: "z"}},
			want:     Requirement{Kind: Deny, Reason: "invalid outcome", RuleID: "z"},
		},
		{
			name:     "a quorum without a group denies",
			elements: []Decision{dec("a", quorum(2, "", false))},
			want:     Requirement{Kind: Deny, Reason: "invalid outcome", RuleID: "a"},
		},
		// acr_values (RFC 9470) only raise.
		{
			name:     "acr step-up raises allow",
			elements: []Decision{dec("a", allow)},
			acr:      []string{ACRStepUp},
			want:     Requirement{Kind: StepUp, StepUp: true, User: true, Reason: ReasonACRStepUp},
			acrOut:   ACRStepUp,
		},
		{
			name:     "acr step-up raises approve",
			elements: []Decision{dec("a", approve)},
			acr:      []string{"urn:other", ACRStepUp},
			want:     Requirement{Kind: StepUp, StepUp: true, User: true, Reason: ReasonACRStepUp},
			acrOut:   ACRStepUp,
		},
		{
			name:     "acr step-up makes a quorum a step-up",
			elements: []Decision{dec("a", quorum(2, "sre", false))},
			acr:      []string{ACRStepUp},
			want: Requirement{Kind: Quorum, StepUp: true, User: true, Reason: "reason of a", RuleID: "a",
				Quorums: []QuorumRequirement{{Group: "sre", N: 2}}},
			acrOut: ACRStepUp,
		},
		{
			name:     "acr approval raises allow",
			elements: []Decision{dec("a", allow)},
			acr:      []string{ACRApproval},
			want:     Requirement{Kind: Approve, User: true, Reason: ReasonACRApprove},
			acrOut:   ACRApproval,
		},
		{
			name:     "acr approval does not lower step_up",
			elements: []Decision{dec("a", stepUp)},
			acr:      []string{ACRApproval},
			want:     Requirement{Kind: StepUp, StepUp: true, User: true, Reason: "reason of a", RuleID: "a"},
			acrOut:   ACRStepUp,
		},
		{
			name:     "acr policy does not lower approve",
			elements: []Decision{dec("a", approve)},
			acr:      []string{ACRPolicy},
			want:     Requirement{Kind: Approve, User: true, Reason: "reason of a", RuleID: "a"},
			acrOut:   ACRApproval,
		},
		{
			name:     "acr step-up does not lift a deny",
			elements: []Decision{dec("a", deny)},
			acr:      []string{ACRStepUp},
			want:     Requirement{Kind: Deny, Reason: "reason of a", RuleID: "a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Combine(tt.elements, tt.acr)
			tt.want.Elements = tt.elements
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Combine:\n got %+v\nwant %+v", got, tt.want)
			}
			if acr := got.ACR(); acr != tt.acrOut {
				t.Errorf("ACR() = %q, want %q", acr, tt.acrOut)
			}
		})
	}
}

func TestKindText(t *testing.T) {
	for k := Allow; k <= Deny; k++ {
		t.Run(k.String(), func(t *testing.T) {
			b, err := k.MarshalText()
			if err != nil {
				t.Fatal(err)
			}
			var back Kind
			if err := back.UnmarshalText(b); err != nil || back != k {
				t.Errorf("round trip of %v gave %v, %v", k, back, err)
			}
		})
	}
	if _, err := Kind(0).MarshalText(); err == nil {
		t.Error("the zero Kind marshals")
	}
	if _, err := ParseKind("stepup"); err == nil {
		t.Error("ParseKind accepts stepup")
	}
	if !(Allow < Approve && Approve < StepUp && StepUp < Quorum && Quorum < Deny) {
		t.Error("kinds are not ordered by strictness")
	}
}

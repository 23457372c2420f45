package policy

import (
	"fmt"
	"strconv"
)

// Kind is what a rule decides. The constants are ordered from the most
// lenient to the strictest, so a larger Kind always needs more; the zero
// Kind is invalid and treated as Deny wherever a decision is made.
type Kind uint8

// Outcomes, most lenient first (SPEC §4).
const (
	Allow   Kind = iota + 1 // approved at once, no human
	Approve                 // the user must approve
	StepUp                  // the user must approve with a fresh user-verified passkey
	Quorum                  // N distinct approvers from a group must approve
	Deny                    // refused at request time with the rule's reason
)

var kindNames = [...]string{
	Allow:   "allow",
	Approve: "approve",
	StepUp:  "step_up",
	Quorum:  "quorum",
	Deny:    "deny",
}

// String returns the name used in policy files: allow, approve, step_up,
// quorum or deny.
func (k Kind) String() string {
	if k.valid() {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

func (k Kind) valid() bool { return k >= Allow && k <= Deny }

// ParseKind returns the Kind named s, as written by [Kind.String].
func ParseKind(s string) (Kind, error) {
	for k := Allow; k <= Deny; k++ {
		if kindNames[k] == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("policy: unknown outcome %q (want allow, approve, step_up, quorum or deny)", s)
}

// MarshalText implements encoding.TextMarshaler, so a Kind is stored and sent
// by name.
func (k Kind) MarshalText() ([]byte, error) {
	if !k.valid() {
		return nil, fmt.Errorf("policy: invalid outcome %d", k)
	}
	return []byte(kindNames[k]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *Kind) UnmarshalText(b []byte) error {
	v, err := ParseKind(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// Outcome is a rule's decision. N, Group and RequesterCounts are set for
// Quorum only: N distinct members of Group must approve, and the requesting
// user's own approval counts towards N only when RequesterCounts is true.
// Reason is set for Deny only, when the policy file wrote the reason into the
// outcome ({deny: "…"}).
type Outcome struct {
	Kind            Kind
	N               int
	Group           string
	RequesterCounts bool
	Reason          string
}

// String describes the outcome as a policy file would write it, e.g.
// "quorum(2 of maintainers)".
func (o Outcome) String() string {
	switch o.Kind {
	case Quorum:
		s := "quorum(" + strconv.Itoa(o.N) + " of " + o.Group
		if o.RequesterCounts {
			s += ", requester counts"
		}
		return s + ")"
	case Deny:
		if o.Reason != "" {
			return "deny(" + strconv.Quote(o.Reason) + ")"
		}
	}
	return o.Kind.String()
}

// stricter reports whether o needs more than p. Between two quorums the
// larger N is stricter, and a quorum the requester may not count towards is
// stricter than one they may.
func (o Outcome) stricter(p Outcome) bool {
	if o.Kind != p.Kind {
		return o.Kind > p.Kind
	}
	if o.Kind == Quorum {
		if o.N != p.N {
			return o.N > p.N
		}
		return !o.RequesterCounts && p.RequesterCounts
	}
	return false
}

// validate checks what Compile needs of an outcome built without ParseFile.
func (o Outcome) validate() error {
	switch {
	case !o.Kind.valid():
		return fmt.Errorf("invalid outcome %d", o.Kind)
	case o.Kind == Quorum && o.N < 1:
		return fmt.Errorf("quorum n must be at least 1, not %d", o.N)
	case o.Kind == Quorum && o.Group == "":
		return fmt.Errorf("quorum needs a group")
	case o.Kind != Quorum && (o.N != 0 || o.Group != "" || o.RequesterCounts):
		return fmt.Errorf("n, group and requester_counts belong to quorum, not %s", o.Kind)
	case o.Kind != Deny && o.Reason != "":
		return fmt.Errorf("only deny carries a reason in its outcome; use the rule's reason")
	}
	return nil
}

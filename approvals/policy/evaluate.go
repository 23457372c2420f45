package policy

import (
	"fmt"
	"slices"
	"sync"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"
)

// ReasonNoMatch is the reason of the deny decided when no rule matches
// (SPEC §4: "no match means deny").
const ReasonNoMatch = "no rule matched"

// Decision is what a rule set decided for one element. RuleID and Reason
// name the deciding rule and its human reason; RuleID is "" when no rule
// matched. Err is set when the deciding rule could not be evaluated: the
// Outcome is then the strictest the type's rules can reach, and the caller
// should log Err.
type Decision struct {
	Type    string
	Outcome Outcome
	RuleID  string
	Reason  string
	Err     error
}

// Types returns the request types the set has rules for, sorted.
func (s *Set) Types() []string {
	names := make([]string, 0, len(s.types))
	for t := range s.types {
		names = append(names, t)
	}
	slices.Sort(names)
	return names
}

// ReadsRecent reports whether any rule of the given types refers to recent,
// so the caller can skip gathering velocity counts that no rule reads.
func (s *Set) ReadsRecent(types ...string) bool {
	for _, t := range types {
		if tr := s.types[t]; tr != nil && tr.readsRecent {
			return true
		}
	}
	return false
}

// ReadsRecentSums reports whether any rule of the given types may read
// recent's sums (sum, sums or a whole window), so the caller can skip
// summing amounts when the rules read only counts.
func (s *Set) ReadsRecentSums(types ...string) bool {
	for _, t := range types {
		if tr := s.types[t]; tr != nil && tr.readsSums {
			return true
		}
	}
	return false
}

// Evaluate decides one element of request type typ: the first rule whose
// condition holds wins, and no match (or a type without rules) is a deny
// with [ReasonNoMatch]. A condition that fails at evaluation time (a missing
// field, a type error, an amount that is not a decimal string) counts as a
// match with the strictest outcome of the type's rules — never allow — and
// Err says why. Evaluate does no I/O and keeps no state.
func (s *Set) Evaluate(typ string, in Input) Decision {
	tr := s.types[typ]
	if tr == nil {
		return Decision{Type: typ, Outcome: Outcome{Kind: Deny}, Reason: ReasonNoMatch}
	}
	act := activations.Get().(*activation)
	act.in = in
	act.details = act.object(in.Details)
	defer func() {
		// Keep no element alive in the pool.
		act.in, act.details = Input{}, nil
		act.release()
		activations.Put(act)
	}()
	for _, c := range tr.chunks {
		if c.prg != nil {
			out, _, err := c.prg.Eval(act)
			if i, ok := out.(types.Int); err == nil && ok {
				if i >= 0 {
					return tr.decide(typ, int(i))
				}
				continue
			}
			// Evaluate the rules one by one to find which one failed.
		}
		if d, ok := tr.evaluate(typ, act, c.from, c.to); ok {
			return d
		}
	}
	return Decision{Type: typ, Outcome: Outcome{Kind: Deny}, Reason: ReasonNoMatch}
}

// evaluate runs rules[from:to] one by one, as the policy reads.
func (tr *typeRules) evaluate(typ string, act *activation, from, to int) (Decision, bool) {
	for i := from; i < to; i++ {
		r := &tr.rules[i]
		if r.prg != nil {
			out, _, err := r.prg.Eval(act)
			if err != nil {
				return Decision{
					Type:    typ,
					Outcome: tr.failure,
					RuleID:  r.id,
					Reason:  "rule " + r.id + " could not be evaluated, so the strictest outcome applies",
					Err:     fmt.Errorf("policy: %s rule %q: %w", typ, r.id, err),
				}, true
			}
			if out != types.True {
				continue
			}
		}
		return tr.decide(typ, i), true
	}
	return Decision{}, false
}

func (tr *typeRules) decide(typ string, i int) Decision {
	r := &tr.rules[i]
	return Decision{Type: typ, Outcome: r.outcome, RuleID: r.id, Reason: r.reason}
}

// activation supplies the variables by name without a map. It hands the
// interpreter the agent, user, request and recent structs themselves (cel-go
// reads their fields through precomputed offsets) and the element as an
// [object]. Activations are pooled with their objects, so an evaluation
// allocates nothing for its variables.
type activation struct {
	in      Input
	details *object
	objects []*object // objects[:used] belong to the current evaluation
	used    int
}

var activations = sync.Pool{New: func() any { return new(activation) }}

func (a *activation) Parent() interpreter.Activation { return nil }

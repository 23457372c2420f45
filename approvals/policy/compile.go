package policy

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"

	"github.com/countersign/countersign/rar"
)

// MaxCost is the most a rule condition may cost by cel-go's static cost
// estimate (a cost unit is roughly one cheap operation, a few nanoseconds).
// The estimate takes every string, list and map in the input to be as large
// as rar.MaxBytes allows, so a single pass over a list of the element fits,
// and a pass over a list for every member of another list does not.
const MaxCost = 1_000_000

// Set is a compiled policy: a CEL program per rule, ready to evaluate. A Set
// is immutable and safe for concurrent use; build one per policy version and
// keep it as long as the version is live.
type Set struct {
	types map[string]*typeRules
}

type typeRules struct {
	rules  []compiledRule
	chunks []chunk
	// readsRecent is set when a condition refers to the recent variable,
	// readsSums when it may read recent's sums (more than counts).
	readsRecent, readsSums bool
	// failure is what a rule that cannot be evaluated decides: the strictest
	// outcome the type's rules can reach.
	failure Outcome
}

type compiledRule struct {
	id      string
	when    string
	outcome Outcome
	reason  string
	prg     cel.Program // nil when the condition is always true
	// readsRecent is set when the condition refers to the recent variable,
	// readsSums when it may read recent's sums.
	readsRecent, readsSums bool
}

// chunk is up to chunkSize consecutive rules folded into one program,
//
//	(when₁) ? 1 : (when₂) ? 2 : … : -1
//
// which returns the index of the first rule that matches. CEL's conditional
// evaluates only the branch it takes, so this is exactly the rules in order,
// at the price of one evaluation instead of one per rule. When the program
// fails, the chunk's rules are evaluated one by one to find the rule that
// failed. prg is nil when the fold did not compile (it always should); the
// rules are then evaluated one by one.
type chunk struct {
	from, to int
	prg      cel.Program
}

// chunkSize keeps the folded expression well inside cel-go's parser
// recursion and nesting limits.
const chunkSize = 32

// Compile compiles every rule of f. Each condition must parse, type-check
// against the variables and functions of the package documentation, return
// bool and cost at most [MaxCost]. Nothing compiles partially: any problem
// makes Compile return nil and [Errors] naming file, type, rule and the
// position in the file (mapped from the CEL position where the file keeps
// the text as written).
func Compile(f *File) (*Set, error) {
	env, err := newEnv()
	if err != nil {
		return nil, fmt.Errorf("policy: build CEL environment: %w", err)
	}
	s := &Set{types: make(map[string]*typeRules, len(f.Types))}
	var errs Errors
	for typ, rules := range f.Types {
		tr := &typeRules{rules: make([]compiledRule, 0, len(rules))}
		alwaysLast := false
		seen := map[string]bool{}
		for _, r := range rules {
			c, always, es := compileRule(env, f.Name, typ, r)
			if r.ID != "" && seen[r.ID] {
				es = append(es, &Error{File: f.Name, Line: r.Line, Type: typ, Rule: r.ID, Msg: "duplicate rule id"})
			}
			seen[r.ID] = true
			errs = append(errs, es...)
			tr.rules = append(tr.rules, c)
			tr.readsRecent = tr.readsRecent || c.readsRecent
			tr.readsSums = tr.readsSums || c.readsSums
			alwaysLast = always
		}
		tr.failure = strictest(tr.rules, !alwaysLast)
		s.types[typ] = tr
	}
	if len(errs) > 0 {
		errs.sort()
		return nil, errs
	}
	for _, tr := range s.types {
		tr.chunks = fold(env, tr.rules)
	}
	return s, nil
}

func compileRule(env *cel.Env, file, typ string, r Rule) (compiledRule, bool, Errors) {
	c := compiledRule{id: r.ID, when: r.When, outcome: r.Outcome, reason: cmp.Or(r.Reason, r.Outcome.Reason)}
	var errs Errors
	fail := func(line, col int, format string, args ...any) {
		errs = append(errs, &Error{File: file, Line: line, Column: col, Type: typ, Rule: r.ID, Msg: fmt.Sprintf(format, args...)})
	}
	whenLine, whenCol := r.src.line, r.src.col
	if whenLine == 0 {
		whenLine = r.Line
	}
	if r.ID == "" {
		fail(r.Line, 0, "rule has no id")
	}
	if err := r.Outcome.validate(); err != nil {
		fail(r.Line, 0, "%v", err)
	}
	if r.Outcome.Kind == Deny && r.Reason == "" && r.Outcome.Reason == "" {
		fail(r.Line, 0, "deny needs a reason")
	}
	if r.When == "" {
		return c, true, errs
	}
	a, iss := env.Compile(r.When)
	if iss.Err() != nil {
		for _, e := range iss.Errors() {
			line, col := r.src.position(e.Location.Line(), e.Location.Column())
			if line == 0 {
				line = r.Line
			}
			fail(line, col, "%s", e.Message)
		}
		return c, false, errs
	}
	if !a.OutputType().IsExactType(cel.BoolType) {
		fail(whenLine, whenCol, "condition must be a bool, not %s", a.OutputType())
		return c, false, errs
	}
	est, err := env.EstimateCost(a, sizeEstimator{})
	if err != nil {
		fail(whenLine, whenCol, "estimate cost: %v", err)
		return c, false, errs
	}
	if est.Max > MaxCost {
		fail(whenLine, whenCol, "condition may cost up to %d, over the limit of %d (avoid nested loops over lists)", est.Max, MaxCost)
		return c, false, errs
	}
	for _, ref := range a.NativeRep().ReferenceMap() {
		reads := ref.Name == "recent" || strings.HasPrefix(ref.Name, "recent.")
		c.readsRecent = c.readsRecent || reads
		// Anything under recent but a count (a sum, sums, or a whole
		// struct) may read the sums.
		c.readsSums = c.readsSums || (reads && !strings.HasSuffix(ref.Name, ".count"))
	}
	if isTrue(a.NativeRep().Expr()) {
		return c, true, errs
	}
	prg, err := env.Program(a, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		fail(whenLine, whenCol, "%v", err)
		return c, false, errs
	}
	c.prg = prg
	return c, false, errs
}

// fold builds the chunks of rules. Rules after an unconditional rule are
// never reached and get no chunk.
func fold(env *cel.Env, rules []compiledRule) []chunk {
	var chunks []chunk
	for from := 0; from < len(rules); {
		var b strings.Builder
		to := from
		for to < len(rules) && to-from < chunkSize {
			r := rules[to]
			to++
			if r.prg == nil {
				b.WriteString(strconv.Itoa(to - 1))
				break
			}
			// Newlines, so that a // comment in a condition ends with it.
			fmt.Fprintf(&b, "(\n%s\n) ? %d : ", r.when, to-1)
		}
		last := rules[to-1].prg == nil
		if !last {
			b.WriteString("-1")
		}
		c := chunk{from: from, to: to}
		if a, iss := env.Compile(b.String()); iss.Err() == nil {
			c.prg, _ = env.Program(a, cel.EvalOptions(cel.OptOptimize))
		}
		chunks = append(chunks, c)
		if last {
			break
		}
		from = to
	}
	return chunks
}

func isTrue(e ast.Expr) bool {
	return e.Kind() == ast.LiteralKind && e.AsLiteral() == types.True
}

// strictest returns the outcome a rule that fails to evaluate decides
// (issue 6: "counts as a match with the strictest outcome in its rule set,
// never as allow"). When the last rule is not unconditional, no match — and
// so deny — is among the outcomes the set can reach, and wins. Allow is
// raised to approve: a failure is never a reason to skip the human.
func strictest(rules []compiledRule, canFallThrough bool) Outcome {
	if canFallThrough {
		return Outcome{Kind: Deny}
	}
	worst := Outcome{Kind: Approve}
	for _, r := range rules {
		if r.outcome.stricter(worst) {
			worst = r.outcome
		}
	}
	worst.Reason = ""
	return worst
}

// sizeEstimator bounds the sizes cel-go's cost estimate cannot know. Every
// string, list and map reachable from the variables is taken to be as large
// as one authorization_details value may be (rar.MaxBytes); agent, user and
// request fields are in practice much smaller.
type sizeEstimator struct{}

func (sizeEstimator) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	sz := cost.RangedSizeEstimate(0, rar.MaxBytes)
	return &sz
}

func (sizeEstimator) EstimateCallCost(function, overloadID string, target *cost.AstNode, args []cost.AstNode) *cost.CallEstimate {
	return nil
}

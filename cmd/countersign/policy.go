package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/approvals/policy"
)

func policyCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return errUsage{fmt.Errorf("policy: want apply, dry-run or history")}
	}
	sub, args := args[0], args[1:]
	var file, detailsFile, clientID, user, bindingMessage string
	var requestedExpiry int
	var acr repeatedFlag
	var asJSON bool
	switch sub {
	case "apply":
		return adminCmd(ctx, "policy apply", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.StringVar(&file, "f", "", "the policy file (YAML) to publish (required)")
			fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
		}, func(ctx context.Context, a *app) error {
			src, err := readPolicyFile(file)
			if err != nil {
				return err
			}
			ch, err := a.svc.Policies().Apply(ctx, file, src)
			if err != nil {
				return errUsage{fmt.Errorf("%w\nnothing was published; the live version is unchanged", err)}
			}
			for _, t := range ch.Unregistered {
				fmt.Fprintf(stderr, "warning: %s: type %s is not registered (countersign types apply); its rules apply to no request\n", file, t)
			}
			if asJSON {
				return printJSON(stdout, ch)
			}
			if !ch.Changed {
				fmt.Fprintf(stdout, "no change: version %d is live\n", ch.Version)
				return nil
			}
			fmt.Fprintf(stdout, "published version %d\n", ch.Version)
			for _, line := range ch.Diff {
				fmt.Fprintln(stdout, "  "+line)
			}
			return nil
		})
	case "dry-run":
		return adminCmd(ctx, "policy dry-run", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.StringVar(&file, "f", "", "the policy file (YAML) to try (required)")
			fs.StringVar(&detailsFile, "details", "", "a file with the authorization_details JSON array (required)")
			fs.StringVar(&clientID, "client-id", "", "evaluate as this agent, with its real velocity")
			fs.StringVar(&user, "user", "", "evaluate for this user (id or email), with their real velocity")
			fs.Var(&acr, "acr-values", "acr_values the agent sends (repeatable)")
			fs.StringVar(&bindingMessage, "binding-message", "", "the binding_message the agent sends")
			fs.IntVar(&requestedExpiry, "requested-expiry", 0, "the requested_expiry (seconds) the agent sends")
			fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
		}, func(ctx context.Context, a *app) error {
			src, err := readPolicyFile(file)
			if err != nil {
				return err
			}
			if detailsFile == "" {
				return errUsage{fmt.Errorf("policy dry-run: --details FILE is required")}
			}
			details, err := os.ReadFile(detailsFile)
			if err != nil {
				return errUsage{fmt.Errorf("--details: %v", unwrapPathError(err))}
			}
			res, err := a.svc.DryRun(ctx, file, src, approvals.DryRunRequest{AgentID: clientID, UserHint: user,
				Params: approvals.AuthRequest{AuthorizationDetails: details, BindingMessage: bindingMessage,
					RequestedExpiry: requestedExpiry, ACRValues: acr}})
			if err != nil {
				return errUsage{err}
			}
			if asJSON {
				return printJSON(stdout, dryRunJSON(res))
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ELEMENT\tTYPE\tOUTCOME\tRULE\tREASON")
			for i, d := range res.Elements {
				rule := d.RuleID
				if rule == "" {
					rule = "-"
				}
				reason := d.Reason
				if d.Err != nil {
					reason += " (evaluation failed: " + d.Err.Error() + ")"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i, d.Type, d.Outcome, rule, reason)
			}
			r := res.Requirement
			fmt.Fprintf(tw, "request\t\t%s\t%s\t%s\n", describeRequirement(r.Kind.String(), r.StepUp, r.Quorums), orDash(r.RuleID), r.Reason)
			return tw.Flush()
		})
	case "history":
		return adminCmd(ctx, "policy history", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		}, func(ctx context.Context, a *app) error {
			hist, err := a.svc.Policies().History(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(stdout, hist)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tPUBLISHED\tFILE\tSHA-256")
			for i, v := range hist {
				live := ""
				if i == 0 {
					live = " (live)"
				}
				fmt.Fprintf(tw, "%d%s\t%s\t%s\t%s\n", v.Version, live, v.CreatedAt.Format("2006-01-02 15:04:05Z07:00"), v.FileName, v.Digest[:16])
			}
			return tw.Flush()
		})
	}
	return errUsage{fmt.Errorf("policy: unknown subcommand %q (want apply, dry-run or history)", sub)}
}

func readPolicyFile(path string) ([]byte, error) {
	if path == "" {
		return nil, errUsage{fmt.Errorf("-f FILE is required")}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errUsage{fmt.Errorf("-f %s: %v", path, unwrapPathError(err))}
	}
	return b, nil
}

func describeRequirement(kind string, stepUp bool, quorums []policy.QuorumRequirement) string {
	var b strings.Builder
	b.WriteString(kind)
	if stepUp && kind != "step_up" {
		b.WriteString(" + step-up")
	}
	for _, q := range quorums {
		fmt.Fprintf(&b, " (%d of %s)", q.N, q.Group)
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// dryRunView is what `policy dry-run --json` prints: the decision of each
// element, and what the whole request needs.
type dryRunView struct {
	Elements []elementView `json:"elements"`
	Request  requestView   `json:"request"`
}

type elementView struct {
	Index   int         `json:"index"`
	Type    string      `json:"type"`
	Outcome policy.Kind `json:"outcome"`
	Quorum  *quorumView `json:"quorum,omitempty"`
	Rule    string      `json:"rule"` // "" when no rule matched
	Reason  string      `json:"reason"`
	Error   string      `json:"error,omitempty"` // why the deciding rule could not be evaluated
}

type requestView struct {
	Outcome policy.Kind  `json:"outcome"`
	StepUp  bool         `json:"step_up"`
	Quorums []quorumView `json:"quorums"`
	Rule    string       `json:"rule"`
	Reason  string       `json:"reason"`
}

type quorumView struct {
	Group           string `json:"group"`
	N               int    `json:"n"`
	RequesterCounts bool   `json:"requester_counts"`
}

func dryRunJSON(res approvals.DryRun) dryRunView {
	v := dryRunView{Elements: []elementView{}}
	for i, d := range res.Elements {
		e := elementView{Index: i, Type: d.Type, Outcome: d.Outcome.Kind, Rule: d.RuleID, Reason: d.Reason}
		if d.Outcome.Kind == policy.Quorum {
			e.Quorum = &quorumView{Group: d.Outcome.Group, N: d.Outcome.N, RequesterCounts: d.Outcome.RequesterCounts}
		}
		if d.Err != nil {
			e.Error = d.Err.Error()
		}
		v.Elements = append(v.Elements, e)
	}
	r := res.Requirement
	v.Request = requestView{Outcome: r.Kind, StepUp: r.StepUp, Quorums: []quorumView{}, Rule: r.RuleID, Reason: r.Reason}
	for _, q := range r.Quorums {
		v.Request.Quorums = append(v.Request.Quorums, quorumView{Group: q.Group, N: q.N, RequesterCounts: q.RequesterCounts})
	}
	return v
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/countersign/countersign/approvals"
)

const timeFormat = "2006-01-02 15:04:05Z07:00"

func requestsCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return errUsage{errors.New("requests: want show REQUEST_ID or list")}
	}
	switch sub, args := args[0], args[1:]; sub {
	case "show":
		return requestsShow(ctx, args, stdout, stderr, getenv)
	case "list":
		return requestsList(ctx, args, stdout, stderr, getenv)
	default:
		return errUsage{fmt.Errorf("requests: unknown subcommand %q (want show or list)", sub)}
	}
}

// requestsShow prints a request's timeline from the audit trail.
func requestsShow(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	id, args := requestIDArg(args)
	if id == "" && !slices.ContainsFunc(args, func(a string) bool { return strings.TrimLeft(a, "-") == "h" || strings.TrimLeft(a, "-") == "help" }) {
		return errUsage{errors.New("requests show: want a REQUEST_ID (countersign requests show REQUEST_ID [--json])")}
	}
	var asJSON bool
	return adminCmd(ctx, "requests show", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, `print the timeline as one JSON object: {"request", "summaries", "events"}`)
	}, func(ctx context.Context, a *app) error {
		tl, err := a.svc.Timeline(ctx, id)
		switch {
		case errors.Is(err, approvals.ErrInvalidInput):
			return errUsage{fmt.Errorf("requests show: %q is not a request id (a UUID, as in the approval URL /approve/ID)", id)}
		case errors.Is(err, approvals.ErrNotFound):
			return fmt.Errorf("requests show: there is no request %s", id)
		case err != nil:
			return err
		}
		if asJSON {
			return printJSON(stdout, tl)
		}
		return printTimeline(stdout, tl)
	})
}

func printTimeline(w io.Writer, tl approvals.Timeline) error {
	r := tl.Request
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Request\t%s\n", r.ID)
	fmt.Fprintf(tw, "State\t%s\n", r.State)
	fmt.Fprintf(tw, "Asked by\t%s (%s)\n", r.AgentName, r.AgentID)
	fmt.Fprintf(tw, "For\t%s (%s)\n", r.UserEmail, r.UserID)
	fmt.Fprintf(tw, "Types\t%s\n", strings.Join(r.Types, ", "))
	for _, s := range tl.Summaries {
		fmt.Fprintf(tw, "What\t%s\n", s)
	}
	fmt.Fprintf(tw, "Details hash\t%s\n", r.DetailsHash)
	if r.BindingMessage != "" {
		fmt.Fprintf(tw, "Binding message\t%q\n", r.BindingMessage)
	}
	decided := "no policy (refused before the rules ran)"
	if r.PolicyVersion != nil {
		decided = fmt.Sprintf("policy version %d, rule %q: %s", *r.PolicyVersion, r.PolicyRule, r.Outcome)
		if r.PolicyReason != "" {
			decided += fmt.Sprintf(" (%s)", r.PolicyReason)
		}
	}
	fmt.Fprintf(tw, "Policy\t%s\n", decided)
	fmt.Fprintf(tw, "Created\t%s\n", r.CreatedAt.UTC().Format(timeFormat))
	fmt.Fprintf(tw, "Expires\t%s\n", r.ExpiresAt.UTC().Format(timeFormat))
	if r.DecidedAt != nil {
		line := r.DecidedAt.UTC().Format(timeFormat)
		if r.DecisionReason != "" {
			line += fmt.Sprintf(" (%s)", r.DecisionReason)
		}
		fmt.Fprintf(tw, "Decided\t%s\n", line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nTimeline (%d events):\n", len(tl.Events))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, e := range tl.Events {
		actor := e.Actor
		if e.ActorName != "" {
			actor += " (" + e.ActorName + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.At.UTC().Format(timeFormat), e.Kind, actor, approvals.Describe(e))
	}
	return tw.Flush()
}

// requestsList prints the requests that the flags select, newest first.
func requestsList(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var f approvals.RequestFilter
	var state, since, until string
	var asJSON bool
	return adminCmd(ctx, "requests list", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
		fs.StringVar(&state, "state", "", "only requests in this state (pending, approved, denied, expired, cancelled, token_issued, redeemed, revoked)")
		fs.StringVar(&f.AgentID, "agent", "", "only requests of this agent (client_id)")
		fs.StringVar(&f.User, "user", "", "only requests for this user (id or email)")
		fs.StringVar(&f.Type, "type", "", "only requests with an element of this type")
		fs.StringVar(&since, "since", "", "only requests created at or after this time: RFC 3339, or a duration ago (90m, 24h, 7d)")
		fs.StringVar(&until, "until", "", "only requests created before this time: RFC 3339, or a duration ago")
		fs.IntVar(&f.Limit, "limit", approvals.DefaultListLimit, fmt.Sprintf("at most this many, newest first (1 to %d)", approvals.MaxListLimit))
		fs.BoolVar(&asJSON, "json", false, "print JSON Lines: one request object a line")
	}, func(ctx context.Context, a *app) error {
		now := time.Now()
		var err error
		if f.Since, err = parseTimeFlag(since, now); err != nil {
			return errUsage{fmt.Errorf("requests list: --since: %w", err)}
		}
		if f.Until, err = parseTimeFlag(until, now); err != nil {
			return errUsage{fmt.Errorf("requests list: --until: %w", err)}
		}
		if f.Limit <= 0 {
			return errUsage{fmt.Errorf("requests list: --limit must be at least 1")}
		}
		f.State = approvals.State(state)
		list, err := a.svc.ListRequests(ctx, f)
		if err != nil {
			return domainError(fmt.Errorf("requests list: %w", err))
		}
		if asJSON {
			enc := json.NewEncoder(stdout)
			for _, r := range list {
				if err := enc.Encode(r); err != nil {
					return err
				}
			}
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCREATED\tSTATE\tAGENT\tUSER\tTYPES\tPOLICY")
		for _, r := range list {
			pol := "-"
			if r.PolicyVersion != nil {
				pol = fmt.Sprintf("v%d/%s: %s", *r.PolicyVersion, r.PolicyRule, r.Outcome)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.CreatedAt.UTC().Format(timeFormat), r.State, r.AgentName,
				r.UserEmail, strings.Join(r.Types, ","), pol)
		}
		return tw.Flush()
	})
}

// parseTimeFlag reads a point in time: RFC 3339, or a duration before now
// (Go's syntax, as 90m or 24h, and days as 7d). "" is the zero time.
func parseTimeFlag(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-01-02T15:04:05Z) nor a duration ago (24h, 7d)", s)
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/internal/loadgen"
)

// loadFlags are the flags of `countersign load`.
type loadFlags struct {
	url, scenario, delivery, policyFile string
	concurrency, flows, warmup          int
	agents, users, serverPID            int
	timeout, statsWait                  time.Duration
	asJSON                              bool
	clientID, clientSecret, user        string
	rsID, rsSecret                      string
}

func (o *loadFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.url, "url", "http://localhost:8080", "the running server's base URL; loopback only (127.0.0.0/8, ::1, localhost)")
	fs.StringVar(&o.scenario, "scenario", "auto", "auto (bc-authorize → token), auto-redeem (+ /redeem) or human (bc-authorize → review → token)")
	fs.StringVar(&o.delivery, "delivery", loadgen.DeliveryPoll, "human: how the agent gets the token, poll (one poll after the review) or ping (to a receiver this command runs; needs a server in --dev mode)")
	fs.IntVar(&o.concurrency, "concurrency", 16, "simulated agents' flows in flight at once")
	fs.IntVar(&o.flows, "flows", 2000, "measured flows")
	fs.IntVar(&o.warmup, "warmup", 200, "flows run first and discarded")
	fs.IntVar(&o.agents, "agents", 1, "agents to register; flows take them in turn")
	fs.IntVar(&o.users, "users", 1, "users to create; flows take them in turn")
	fs.IntVar(&o.serverPID, "server-pid", 0, "the server's process id: report its CPU time per flow (from /proc/PID/stat)")
	fs.DurationVar(&o.timeout, "timeout", loadgen.DefaultTimeout, "stop after this long, and print what was measured")
	fs.DurationVar(&o.statsWait, "stats-wait", loadgen.DefaultStatsWait, "wait this long after the warm-up and after the flows before reading PostgreSQL's counters, which backends flush late (0: no wait, figures then miss some)")
	fs.BoolVar(&o.asJSON, "json", false, "print the summary as one JSON object")
	fs.StringVar(&o.policyFile, "policy", "", "publish this policy file (a new version unless it is live), or with \"load\" the load's own (allows EUR payments up to 100, reads no velocity); without it the live policy is used, and the load's own published when there is none")
	fs.StringVar(&o.clientID, "client-id", "", "use this existing agent instead of registering new ones")
	fs.StringVar(&o.clientSecret, "client-secret", "", "the existing agent's client secret")
	fs.StringVar(&o.user, "user", "", "use this existing user (id or email) instead of creating new ones")
	fs.StringVar(&o.rsID, "rs-id", "", "use this existing resource server instead of the load's own")
	fs.StringVar(&o.rsSecret, "rs-secret", "", "the existing resource server's secret (auto-redeem)")
}

// check validates the flags that need no database.
func (o *loadFlags) check() error {
	if _, err := loadgen.CheckURL(o.url); err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	sc, err := loadgen.ParseScenario(o.scenario)
	if err != nil {
		return fmt.Errorf("--scenario: %w", err)
	}
	given := func(v string) bool { return v != "" }
	switch {
	case o.delivery != loadgen.DeliveryPoll && o.delivery != loadgen.DeliveryPing:
		return fmt.Errorf("--delivery must be poll or ping, not %q", o.delivery)
	case o.delivery == loadgen.DeliveryPing && sc != loadgen.Human:
		return errors.New("--delivery ping is for the human scenario (the auto scenarios' tokens are ready at once)")
	case o.concurrency < 1, o.flows < 1, o.agents < 1, o.users < 1:
		return errors.New("--concurrency, --flows, --agents and --users must be at least 1")
	case o.warmup < 0, o.timeout < 0, o.statsWait < 0:
		return errors.New("--warmup, --timeout and --stats-wait must not be negative")
	case given(o.clientID) != given(o.clientSecret):
		return errors.New("--client-id and --client-secret go together")
	case given(o.clientID) && o.agents != 1:
		return errors.New("--client-id names one agent: leave out --agents")
	case given(o.user) && o.users != 1:
		return errors.New("--user names one user: leave out --users")
	case given(o.rsSecret) && !given(o.rsID):
		return errors.New("--rs-secret needs --rs-id")
	case given(o.rsID) && !given(o.rsSecret) && sc == loadgen.AutoRedeem:
		return errors.New("--scenario auto-redeem with --rs-id needs --rs-secret")
	}
	if o.serverPID != 0 {
		if _, err := loadgen.ProcessCPU(o.serverPID); err != nil {
			return fmt.Errorf("--server-pid: %w", err)
		}
	}
	return nil
}

func loadCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var o loadFlags
	cfg, err := loadConfig("load", args, stdout, getenv, kindAdmin, o.register)
	if err != nil {
		return err
	}
	if err := o.check(); err != nil {
		return errUsage{err}
	}
	policyName, policySrc := o.policyFile, []byte(nil)
	switch o.policyFile {
	case "":
	case "load":
		policyName, policySrc = loadgen.PolicyFileName, []byte(loadgen.DefaultPolicy)
	default:
		if policySrc, err = readPolicyFile(o.policyFile); err != nil {
			return err
		}
	}
	if cfg.LogLevel == "info" {
		cfg.LogLevel = "warn" // the summary is the output, not the reviews' log lines
	}
	// The simulated approver's reviews are announced as a server's are.
	cfg.announce = true
	a, closeApp, err := openApp(ctx, cfg, newLogger(cfg, stderr))
	if err != nil {
		return err
	}
	defer closeApp()

	sc, _ := loadgen.ParseScenario(o.scenario) // checked
	fx, err := loadgen.Setup(ctx, a.svc, loadgen.SetupConfig{Scenario: sc, Delivery: o.delivery, Agents: o.agents, Users: o.users,
		PolicyName: policyName, Policy: policySrc, ClientID: o.clientID, ClientSecret: o.clientSecret, User: o.user,
		RSID: o.rsID, RSSecret: o.rsSecret, Note: func(n string) { fmt.Fprintf(stderr, "countersign load: %s\n", n) }})
	var mismatch *loadgen.PolicyMismatchError
	if errors.As(err, &mismatch) {
		return errUsage{errors.New(strings.TrimPrefix(err.Error(), "loadgen: "))}
	}
	if err != nil {
		return err
	}
	if fx.Pings != nil {
		defer fx.Pings.Close()
	}
	probe, err := loadgen.NewDBProbe(ctx, a.db)
	if err != nil {
		return err
	}

	run := loadgen.Config{BaseURL: o.url, Scenario: sc, Delivery: o.delivery, Concurrency: o.concurrency,
		Flows: o.flows, Warmup: o.warmup, Timeout: o.timeout, StatsWait: o.statsWait,
		Agents: fx.Agents, Users: fx.Users, RS: fx.RS, Audience: fx.Audience, Pings: fx.Pings,
		DB: probe, ServerPID: o.serverPID,
		Review: func(ctx context.Context, requestID, userID string) error {
			_, err := a.svc.Review(ctx, requestID, approvals.Reviewer{UserID: userID}, approvals.ReviewInput{Verdict: approvals.VerdictApprove})
			return err
		}}
	endBar := func() {}
	if isTerminal(stderr) {
		run.Progress, endBar = loadgen.ProgressBar(stderr)
	}
	fmt.Fprintf(stderr, "countersign load: %d warm-up and %d measured flows against %s\n", o.warmup, o.flows, o.url)
	s, err := loadgen.Run(ctx, run)
	endBar()
	if err != nil {
		return err
	}
	if o.asJSON {
		err = printJSON(stdout, s)
	} else {
		err = s.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	failed := 0
	for _, n := range s.Errors {
		failed += n
	}
	switch {
	case s.Stopped != "":
		return fmt.Errorf("load: stopped early (%s) after %d of %d flows", s.Stopped, s.Flows+failed, o.flows)
	case failed > 0:
		return fmt.Errorf("load: %d of %d flows failed", failed, o.flows)
	}
	return nil
}

// isTerminal reports whether w is a terminal, where a progress bar can
// redraw its line.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

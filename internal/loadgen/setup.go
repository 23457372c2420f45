package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/approvals/policy"
	"github.com/countersign/countersign/examples/demo"
	"github.com/countersign/countersign/rar"
)

// requestType is the type of every flow's authorization_details.
const requestType = "payment_initiation"

// Audience is the audience of the resource server a run registers (once per
// database: later runs reuse it). It executes no declared types, so it never
// becomes the default audience of anyone else's tokens; flows name it with
// resource (RFC 8707).
const Audience = "https://load.countersign.invalid"

// PolicyFileName names DefaultPolicy in the policy history.
const PolicyFileName = "countersign-load.yaml"

// DefaultPolicy is the load policy, published by --policy load or where none is: the
// auto scenarios' payments (EUR, at most 100) are allowed at once, the human
// scenario's wait for the user. No rule reads recent, so admissions are not
// serialised per agent and user.
const DefaultPolicy = `# The policy of countersign load, published by --policy load or where no policy was.
types:
  payment_initiation:
    - id: load_small_eur_payment
      when: currency(details.instructedAmount) == "EUR" && amount(details.instructedAmount) <= 100
      outcome: allow
      reason: Payments of up to 100 EUR are allowed
    - id: load_payment
      when: "true"
      outcome: approve
      reason: Payments need approval
`

// SetupConfig says which registrations a run creates and which it takes as
// given.
type SetupConfig struct {
	Scenario Scenario
	Delivery string // human: poll or ping
	Agents   int    // agents to create (without ClientID)
	Users    int    // users to create (without User)

	// PolicyName and Policy, when Policy is set, are published (a new
	// version unless it is live already).
	PolicyName string
	Policy     []byte

	// Existing registrations, instead of new ones.
	ClientID, ClientSecret string
	User                   string // id or email
	RSID, RSSecret         string

	// Note, when set, is told what Setup does or finds, one sentence at a
	// time, as it goes.
	Note func(string)
}

// Fixture is what a run uses: the registrations, and for ping delivery the
// receiver the agents' client_notification_endpoint points at.
type Fixture struct {
	Agents   []Client
	Users    []User
	RS       Client
	Audience string
	Pings    *Receiver // human with ping delivery; Close it after the run
	// PolicyVersion is the live policy the flows meet.
	PolicyVersion int

	note func(string)
}

// Setup prepares a run on svc's database: the request type, the policy, the
// agents, users and resource server (created, or the existing ones checked),
// and then checks with a dry-run that the live policy decides the
// scenario's request as the scenario needs (allow, or the user's approval).
func Setup(ctx context.Context, svc *approvals.Service, cfg SetupConfig) (_ *Fixture, err error) {
	f := &Fixture{note: cfg.Note}
	if f.note == nil {
		f.note = func(string) {}
	}
	defer func() {
		if err != nil && f.Pings != nil {
			f.Pings.Close()
		}
	}()
	if err := ensureType(ctx, svc, f); err != nil {
		return nil, err
	}
	if err := publishPolicy(ctx, svc, cfg, f); err != nil {
		return nil, err
	}
	run := runID()
	if err := setupAgents(ctx, svc, cfg, run, f); err != nil {
		return nil, err
	}
	if err := setupUsers(ctx, svc, cfg, run, f); err != nil {
		return nil, err
	}
	if err := setupResourceServer(ctx, svc, cfg, f); err != nil {
		return nil, err
	}
	if err := checkPolicy(ctx, svc, cfg.Scenario, f); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Fixture) notef(format string, args ...any) { f.note(fmt.Sprintf(format, args...)) }

// runID names a run's registrations: when, plus a random suffix for runs in
// the same second.
func runID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// ensureType registers the demo's payment_initiation type unless a type of
// that name is registered (which is then used as it is).
func ensureType(ctx context.Context, svc *approvals.Service, f *Fixture) error {
	_, versions, err := svc.Types().Registry(ctx)
	if err != nil {
		return err
	}
	if _, ok := versions[requestType]; ok {
		return nil
	}
	types, err := demo.TypeDefinitions()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(types, func(t rar.Type) bool { return t.Name == requestType })
	if _, err := svc.Types().Apply(ctx, types[i:i+1]); err != nil {
		return fmt.Errorf("loadgen: register %s: %w", requestType, err)
	}
	f.notef("registered the request type %s (from examples/demo/types)", requestType)
	return nil
}

// publishPolicy publishes the given policy, or DefaultPolicy when none is
// published; a published one is otherwise left alone.
func publishPolicy(ctx context.Context, svc *approvals.Service, cfg SetupConfig, f *Fixture) error {
	name, src := cfg.PolicyName, cfg.Policy
	if src == nil {
		_, v, err := svc.Policies().Current(ctx)
		if err != nil {
			return err
		}
		if v != 0 {
			f.PolicyVersion = v
			f.notef("using the live policy, version %d, unchanged (--policy FILE publishes another)", v)
			return nil
		}
		name, src = PolicyFileName, []byte(DefaultPolicy)
	}
	ch, err := svc.Policies().Apply(ctx, name, src)
	if err != nil {
		return fmt.Errorf("loadgen: publish policy %s: %w", name, err)
	}
	f.PolicyVersion = ch.Version
	switch {
	case cfg.Policy == nil:
		f.notef("no policy was published: published the load policy (%s) as version %d", name, ch.Version)
	case ch.Changed:
		f.notef("published %s as policy version %d", name, ch.Version)
	default:
		f.notef("%s is the live policy already (version %d)", name, ch.Version)
	}
	return nil
}

func setupAgents(ctx context.Context, svc *approvals.Service, cfg SetupConfig, run string, f *Fixture) error {
	store := svc.Store()
	ping := cfg.Scenario == Human && cfg.Delivery == DeliveryPing
	if cfg.ClientID != "" {
		a, err := store.Agent(ctx, cfg.ClientID)
		if err != nil {
			return fmt.Errorf("loadgen: --client-id: %w", err)
		}
		switch {
		case a.Status != "active":
			return fmt.Errorf("loadgen: agent %s is %s", a.ID, a.Status)
		case !slices.Contains(a.Types, requestType):
			return fmt.Errorf("loadgen: agent %s may not ask for %s requests", a.ID, requestType)
		case a.AuthMethod != approvals.AuthClientSecretBasic && a.AuthMethod != approvals.AuthClientSecretPost:
			return fmt.Errorf("loadgen: agent %s authenticates with %s; load supports client secrets only", a.ID, a.AuthMethod)
		case ping && a.DeliveryMode != approvals.DeliveryPing:
			return fmt.Errorf("loadgen: agent %s uses %s delivery, not ping", a.ID, a.DeliveryMode)
		case !ping && a.DeliveryMode != approvals.DeliveryPoll:
			return fmt.Errorf("loadgen: agent %s uses %s delivery; this scenario needs a poll agent", a.ID, a.DeliveryMode)
		}
		if _, err := svc.AuthenticateAgent(ctx, a.ID, cfg.ClientSecret, a.AuthMethod); err != nil {
			return fmt.Errorf("loadgen: agent %s: the client secret does not match", a.ID)
		}
		if ping {
			if f.Pings, err = ListenPingsAt(*a.NotifyURL); err != nil {
				return err
			}
		}
		f.Agents = []Client{{ID: a.ID, Secret: cfg.ClientSecret, Post: a.AuthMethod == approvals.AuthClientSecretPost}}
		return nil
	}
	n := approvals.NewAgent{Domain: "load.countersign.invalid", Types: []string{requestType},
		Labels: map[string]string{"load_run": run}, DeliveryMode: approvals.DeliveryPoll}
	if ping {
		var err error
		// One endpoint per agent, as agents have: the server's outbox
		// bounds the sends in flight to one endpoint (notify.DefaultPerTarget).
		if f.Pings, err = ListenPings("127.0.0.1:0", "/ping/"); err != nil {
			return err
		}
		n.DeliveryMode = approvals.DeliveryPing
	}
	for i := range cfg.Agents {
		n.Name = fmt.Sprintf("countersign load %s agent %d", run, i+1)
		if ping {
			n.NotifyURL = f.Pings.URL() + strconv.Itoa(i+1)
		}
		a, secret, err := store.CreateAgent(ctx, n)
		if err != nil {
			return fmt.Errorf("loadgen: create agent: %w", err)
		}
		f.Agents = append(f.Agents, Client{ID: a.ID, Secret: secret})
	}
	f.notef("registered %s (%s delivery) for run %s", plural(cfg.Agents, "agent"), n.DeliveryMode, run)
	return nil
}

func setupUsers(ctx context.Context, svc *approvals.Service, cfg SetupConfig, run string, f *Fixture) error {
	store := svc.Store()
	if cfg.User != "" {
		u, err := store.UserByHint(ctx, cfg.User)
		if err != nil {
			return fmt.Errorf("loadgen: --user %s: %w", cfg.User, err)
		}
		if u.Status != "active" {
			return fmt.Errorf("loadgen: user %s is %s", u.Email, u.Status)
		}
		if u.HasUserCode() {
			return fmt.Errorf("loadgen: user %s needs a user code, which load does not send", u.Email)
		}
		f.Users = []User{{Hint: u.Email, ID: u.ID}}
		return nil
	}
	for i := range cfg.Users {
		u, err := store.CreateUser(ctx, approvals.NewUser{Email: fmt.Sprintf("load-%s-%d@load.countersign.invalid", run, i+1),
			Name: fmt.Sprintf("Load user %d", i+1)})
		if err != nil {
			return fmt.Errorf("loadgen: create user: %w", err)
		}
		f.Users = append(f.Users, User{Hint: u.Email, ID: u.ID})
	}
	f.notef("created %s for run %s", plural(cfg.Users, "user"), run)
	return nil
}

// setupResourceServer checks the given resource server, or reuses the
// load's own (rotating its secret: only its hash is kept) or creates it.
// One per database: every request that names a resource reads them all.
func setupResourceServer(ctx context.Context, svc *approvals.Service, cfg SetupConfig, f *Fixture) error {
	store := svc.Store()
	list, err := store.ResourceServers(ctx)
	if err != nil {
		return err
	}
	if cfg.RSID != "" {
		i := slices.IndexFunc(list, func(rs approvals.ResourceServer) bool { return rs.ID == cfg.RSID })
		if i < 0 {
			return fmt.Errorf("loadgen: --rs-id %s: %w", cfg.RSID, approvals.ErrNotFound)
		}
		rs := list[i]
		switch {
		case rs.Status != "active":
			return fmt.Errorf("loadgen: resource server %s is %s", rs.ID, rs.Status)
		case len(rs.Types) > 0 && !slices.Contains(rs.Types, requestType):
			return fmt.Errorf("loadgen: resource server %s does not execute %s requests", rs.ID, requestType)
		}
		if cfg.RSSecret != "" {
			if _, err := svc.AuthenticateResourceServer(ctx, rs.ID, cfg.RSSecret); err != nil {
				return fmt.Errorf("loadgen: resource server %s: the secret does not match", rs.ID)
			}
		} else if cfg.Scenario == AutoRedeem {
			return errors.New("loadgen: auto-redeem with --rs-id needs --rs-secret")
		}
		f.RS, f.Audience = Client{ID: rs.ID, Secret: cfg.RSSecret}, rs.Audience
		return nil
	}
	f.Audience = Audience
	if i := slices.IndexFunc(list, func(rs approvals.ResourceServer) bool { return rs.Audience == Audience }); i >= 0 {
		rs := list[i]
		if rs.Status != "active" {
			return fmt.Errorf("loadgen: the load resource server %s (%s) is %s", rs.ID, Audience, rs.Status)
		}
		secret, err := store.RotateResourceServerSecret(ctx, rs.ID)
		if err != nil {
			return err
		}
		f.RS = Client{ID: rs.ID, Secret: secret}
		f.notef("reusing the load resource server %s (%s), with a new secret", rs.ID, Audience)
		return nil
	}
	rs, secret, err := store.CreateResourceServer(ctx, approvals.NewResourceServer{Name: "countersign load", Audience: Audience})
	if err != nil {
		return fmt.Errorf("loadgen: create resource server: %w", err)
	}
	f.RS = Client{ID: rs.ID, Secret: secret}
	f.notef("registered the load resource server %s (%s)", rs.ID, Audience)
	return nil
}

// checkPolicy dry-runs the live policy on the scenario's request for the
// first agent and user: the auto scenarios need it allowed, the human
// scenario approved by the user alone (no step-up, no quorum, which the
// simulated approver cannot give). Later requests may still be decided
// otherwise, by rules that read recent.
func checkPolicy(ctx context.Context, svc *approvals.Service, sc Scenario, f *Fixture) error {
	pv, err := svc.Policies().Version(ctx, f.PolicyVersion)
	if err != nil {
		return err
	}
	res, err := svc.DryRun(ctx, pv.FileName, []byte(pv.Source), approvals.DryRunRequest{AgentID: f.Agents[0].ID,
		UserHint: f.Users[0].Hint, Params: approvals.AuthRequest{AuthorizationDetails: []byte(sc.Details())}})
	if err != nil {
		return fmt.Errorf("loadgen: dry-run of policy version %d on the %s request: %w", f.PolicyVersion, sc, err)
	}
	need := res.Requirement
	want, ok := policy.Allow, need.Kind == policy.Allow
	if sc == Human {
		want, ok = policy.Approve, need.Kind == policy.Approve && !need.StepUp && len(need.Quorums) == 0
	}
	if set, _, err := svc.Policies().Current(ctx); err == nil && set != nil && set.ReadsRecent(requestType) {
		f.notef("the live policy's %s rules read recent (velocity counts): they may decide later flows otherwise than the first, "+
			"and admissions of one agent or user are serialised (--policy load publishes a policy whose rules do not)", requestType)
	}
	if !ok {
		got := need.Kind.String()
		if need.StepUp && need.Kind != policy.StepUp {
			got += " with step-up"
		}
		return &PolicyMismatchError{Version: f.PolicyVersion, Scenario: sc, Want: want.String(), Got: got,
			Rule: need.RuleID, Reason: need.Reason}
	}
	return nil
}

// PolicyMismatchError: the live policy decides the scenario's request
// otherwise than the scenario needs.
type PolicyMismatchError struct {
	Version      int
	Scenario     Scenario
	Want, Got    string
	Rule, Reason string
}

func (e *PolicyMismatchError) Error() string {
	rule := e.Rule
	if rule == "" {
		rule = "none matched"
	}
	return fmt.Sprintf("loadgen: the live policy (version %d) decides %s for the %s scenario's request (rule %s: %s), which needs %s; "+
		"publish a policy that decides %s with --policy FILE", e.Version, e.Got, e.Scenario, rule, e.Reason, e.Want, e.Want)
}

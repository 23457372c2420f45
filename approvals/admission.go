package approvals

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/countersign/countersign/approvals/policy"
	"github.com/countersign/countersign/rar"
)

// AuthRequest holds the parameters of a backchannel authentication request
// (CIBA §7.1) after form parsing.
type AuthRequest struct {
	Scope                   string
	AuthorizationDetails    []byte
	LoginHint               string
	IDTokenHint             string
	LoginHintToken          string
	BindingMessage          string
	UserCode                string
	RequestedExpiry         int // seconds; 0 when absent
	ACRValues               []string
	ClientNotificationToken string
	Resources               []string // RFC 8707
}

// Created is the answer to a successful backchannel authentication request.
type Created struct {
	Request   Request
	AuthReqID string
	ExpiresIn int
	Interval  int
}

// admission is a request on its way in, after the checks that need no
// decision: what live admission stores and dry-run evaluates, built by the
// same code for both.
type admission struct {
	agent    Agent
	user     User
	params   AuthRequest
	details  *rar.Details
	reg      *rar.Registry // what details were parsed with
	types    []string      // distinct, in order of first appearance
	versions TypeVersions
	lifetime time.Duration
}

// parse reads the authorization_details and the parameters that bound the
// request's life, for agent (a zero Agent in a dry-run that names none).
func (s *Service) parse(ctx context.Context, agent Agent, p AuthRequest) (*admission, error) {
	if err := checkBindingMessage(p.BindingMessage); err != nil {
		return nil, err
	}
	reg, versions, err := s.registry(ctx)
	if err != nil {
		return nil, err
	}
	if len(p.AuthorizationDetails) == 0 {
		return nil, refuse(CodeInvalidRequest, "authorization_details is required")
	}
	details, err := reg.Parse(p.AuthorizationDetails)
	if err != nil {
		var fe *rar.FieldError
		if errors.As(err, &fe) {
			return nil, refuse(CodeInvalidAuthorizationDetails, fe.Description())
		}
		return nil, err
	}
	a := &admission{agent: agent, params: p, details: details, reg: reg}
	for i, e := range details.Elements {
		if agent.ID != "" && !slices.Contains(agent.Types, e.Type) {
			return nil, refuse(CodeInvalidAuthorizationDetails,
				// RFC 6749 §5.2: no quotes in error_description.
				fmt.Sprintf("authorization_details[%d]: type %s is not allowed for this client", i, e.Type))
		}
		t, _ := reg.Type(e.Type)
		if a.lifetime == 0 || t.MaxLifetime < a.lifetime {
			a.lifetime = t.MaxLifetime
		}
		if !slices.Contains(a.types, e.Type) {
			a.types = append(a.types, e.Type)
		}
	}
	a.versions = pick(versions, a.types)
	// CIBA §7.1: requested_expiry asks for an expires_in; the type's maximum
	// lifetime caps it.
	if p.RequestedExpiry < 0 {
		return nil, refuse(CodeInvalidRequest, "requested_expiry must be a positive integer")
	}
	// Compared in seconds: a huge requested_expiry would overflow a Duration.
	if p.RequestedExpiry > 0 && int64(p.RequestedExpiry) < int64(a.lifetime/time.Second) {
		a.lifetime = time.Duration(p.RequestedExpiry) * time.Second
	}
	return a, nil
}

// input is what every rule sees of the request (SPEC §4), element by
// element: one function for live admission and dry-run, so the two cannot
// decide differently. now is when the request arrived.
func (s *Service) input(a *admission, now time.Time) policy.Input {
	now = now.In(s.tz)
	return policy.Input{
		Agent: policy.Agent{ID: a.agent.ID, Name: a.agent.Name, Domain: a.agent.Domain, Labels: a.agent.Labels},
		User:  policy.User{ID: a.user.ID, Roles: a.user.Roles, Groups: a.user.Groups},
		Request: policy.Request{BindingMessage: a.params.BindingMessage, ACRValues: a.params.ACRValues,
			RequestedExpiry: int64(a.params.RequestedExpiry), Hour: int64(now.Hour()), Weekday: int64(now.Weekday()),
			Amounts: requestAmounts(a.details).policy(), Elements: int64(len(a.details.Elements))},
	}
}

// evaluate decides what the request needs under rule set set: each element
// by its type's rules with the velocity of earlier requests (read through q:
// admission's transaction, or the pool in a dry-run), then all combined.
func (s *Service) evaluate(ctx context.Context, q sqlx.QueryerContext, set *policy.Set, a *admission, now time.Time) (policy.Requirement, error) {
	recent := map[string]policy.Recent{}
	if set.ReadsRecent(a.types...) && (a.agent.ID != "" || a.user.ID != "") {
		var err error
		if recent, err = s.store.recent(ctx, q, a.agent.ID, a.user.ID, a.types, set.ReadsRecentSums(a.types...)); err != nil {
			return policy.Requirement{}, err
		}
	}
	in := s.input(a, now)
	decisions := make([]policy.Decision, len(a.details.Elements))
	for i, e := range a.details.Elements {
		in.Details, in.Recent = e.Value, recent[e.Type]
		decisions[i] = set.Evaluate(e.Type, in)
		if err := decisions[i].Err; err != nil {
			// Fail closed (the strictest outcome was chosen), and say so.
			s.logger.WarnContext(ctx, "risk rule failed to evaluate", "type", e.Type, "rule", decisions[i].RuleID, "err", err)
		}
	}
	return policy.Combine(decisions, a.params.ACRValues), nil
}

// Authorize handles a backchannel authentication request from an
// authenticated agent: it validates every parameter, resolves the user,
// applies the current risk policy and stores the request with its events.
// Refusals are *Refusal.
func (s *Service) Authorize(ctx context.Context, agent Agent, p AuthRequest) (Created, error) {
	if agent.Status != "active" {
		return Created{}, refuse(CodeUnauthorizedClient, "the client is suspended")
	}
	if !slices.Contains(strings.Fields(p.Scope), "openid") {
		return Created{}, refuse(CodeInvalidScope, "scope must contain openid")
	}
	// OpenID Core §3.1.2.1: scope values not understood are ignored. The
	// granted scope is returned with the token.
	var scope []string
	for _, sc := range strings.Fields(p.Scope) {
		if (sc == "openid" || sc == "email") && !slices.Contains(scope, sc) {
			scope = append(scope, sc)
		}
	}
	if agent.DeliveryMode == DeliveryPing && p.ClientNotificationToken == "" {
		return Created{}, refuse(CodeInvalidRequest, "client_notification_token is required for ping delivery")
	}
	if len(p.ClientNotificationToken) > 1024 {
		return Created{}, refuse(CodeInvalidRequest, "client_notification_token is longer than 1024 characters")
	}
	if p.ClientNotificationToken != "" && !isBearerToken(p.ClientNotificationToken) {
		// CIBA §7.1: it is sent back as a Bearer credential, so it must
		// have that syntax (RFC 6750 §2.1).
		return Created{}, refuse(CodeInvalidRequest, "client_notification_token must have the syntax of a Bearer token (RFC 6750 section 2.1)")
	}
	for _, r := range p.Resources {
		if u, err := url.Parse(r); err != nil || !u.IsAbs() || u.Fragment != "" {
			return Created{}, refuse(CodeInvalidTarget, "resource must be an absolute URI without a fragment")
		}
	}
	a, err := s.parse(ctx, agent, p)
	if err != nil {
		return Created{}, err
	}
	if a.user, err = s.resolveUser(ctx, agent, p); err != nil {
		return Created{}, err
	}
	audience, err := s.audience(ctx, p.Resources, a.details, a.types)
	if err != nil {
		return Created{}, err
	}
	// Read before the transaction: an admission holds one connection, and
	// only while it decides and stores.
	set, version, err := s.currentPolicy(ctx)
	if err != nil {
		return Created{}, err
	}

	id := newUUID()
	req := Request{
		ID: uuidString(id[:]), AgentID: agent.ID, UserID: a.user.ID, State: StatePending, Scope: strings.Join(scope, " "),
		DetailsCanonical: string(a.details.Canonical), DetailsHash: a.details.Hash,
		Types: a.types, TypeVersions: a.versions, BindingMessage: p.BindingMessage,
		ACRValues: pq.StringArray(nonNil(p.ACRValues)), Resources: pq.StringArray(nonNil(p.Resources)), Audience: audience,
		PollInterval: s.interval, Amounts: requestAmounts(a.details),
	}
	if p.ClientNotificationToken != "" {
		req.ClientNotificationToken = &p.ClientNotificationToken
	}
	// The velocity counts a rule reads and the request they let through are
	// one step: where a rule of the request's types reads recent, requests
	// of the same agent or user are admitted one at a time.
	serial := set != nil && set.ReadsRecent(a.types...)
	var stored Request
	var joined *Request // an identical pending request this call joins
	admitted := false   // stored under the admission locks, in announceMode
	// An admission may run more than once (see Store.admit): each run
	// starts from the request as received.
	received := req
	evaluate := func(q sqlx.QueryerContext) error {
		req = received
		if set == nil {
			// Deny by default: with no published thresholds nothing is allowed.
			req.State, req.Outcome, req.PolicyReason = StateDenied, policy.Deny.String(), "no risk policy is published"
			req.DecisionReason = req.PolicyReason
			return nil
		}
		need, err := s.evaluate(ctx, q, set, a, s.now())
		if err != nil {
			return err
		}
		applyRequirement(&req, need, version)
		return nil
	}
	// store writes the request; one that waits for people first passes the
	// fatigue guards, under the admission locks.
	store := func(q sqlx.QueryerContext) error {
		joined = nil
		if req.State == StatePending && s.fatigue.guardsPending() {
			var err error
			if joined, err = s.guardPending(ctx, q, req); err != nil || joined != nil {
				return err
			}
		}
		var push []byte
		if req.State == StatePending {
			push = newRequestPush(req, summarySentence(a.reg, a.details))
		}
		var err error
		stored, err = s.store.insertRequest(ctx, q, req, a.lifetime, push, s.fatigue.PushesPerMinute)
		return err
	}
	if serial {
		admitted = true
		// Joining identical requests needs the identical lock too: the
		// same details may take the other path under another policy
		// version or another replica's guards.
		keys := admissionKeys(true, s.fatigue.JoinIdentical, agent.ID, a.user.ID, req.DetailsHash)
		err = s.store.admit(ctx, keys, s.announceMode(), planAuto, func(t *Tx) error {
			if err := evaluate(t); err != nil {
				return err
			}
			return store(t)
		})
	} else if err = evaluate(s.store.db); err == nil {
		if req.State == StatePending && s.fatigue.guardsPending() {
			// Waiting for people: under a pending limit one at a time per
			// agent and user, so the limits are exact; with joining alone,
			// one at a time per identical request.
			keys := admissionKeys(s.fatigue.limitsPending(), s.fatigue.JoinIdentical, agent.ID, a.user.ID, req.DetailsHash)
			admitted = true
			err = s.store.admit(ctx, keys, s.announceMode(), planGeneric, func(t *Tx) error { return store(t) })
		} else {
			// Decided at once: the insert is the whole change, one
			// statement on the pool.
			err = store(s.store.db)
		}
	}
	if errors.Is(err, ErrSuspended) {
		return Created{}, refuse(CodeAccessDenied, "the client or the user is suspended")
	}
	if err != nil {
		return Created{}, err
	}
	if joined != nil {
		// CIBA's request is the same one: the same auth_req_id, one
		// decision, one token.
		s.logger.InfoContext(ctx, "identical request joined a pending one", "request", *joined)
		jid, _ := parseUUID(joined.ID)
		left := max(1, int(time.Until(joined.ExpiresAt)/time.Second))
		return Created{Request: *joined, AuthReqID: s.authReqIDs.issue(jid), ExpiresIn: left, Interval: joined.PollInterval}, nil
	}
	s.metrics.decided(stored)
	if admitted && stored.State == StatePending {
		// The insert's request.created was left to this process.
		s.announced(newEvent(KindRequestCreated, "", stored, nil))
	}
	if s.onOutbox != nil && (stored.State == StatePending || stored.ClientNotificationToken != nil) {
		s.onOutbox()
	}
	s.logger.InfoContext(ctx, "request received", "request", stored, "outcome", stored.Outcome,
		"policy_version", version, "rule", stored.PolicyRule)
	if stored.State == StateDenied {
		// SPEC §4: deny refuses at request time with the rule's reason; the
		// request is kept for velocity counts and the audit trail.
		return Created{}, refuse(CodeAccessDenied, stored.PolicyReason)
	}
	return Created{Request: stored, AuthReqID: s.authReqIDs.issue(id), ExpiresIn: int(a.lifetime / time.Second), Interval: s.interval}, nil
}

// applyRequirement records on req what the policy (version) decided: allow
// approves it at once, deny denies it, the others leave it pending with what
// people must do.
func applyRequirement(req *Request, need policy.Requirement, version int) {
	req.Outcome, req.PolicyVersion, req.PolicyRule, req.PolicyReason = need.Kind.String(), &version, need.RuleID, need.Reason
	req.Quorum, req.StepUp, req.UserRequired = need.Quorums, need.StepUp, need.User
	switch need.Kind {
	case policy.Deny:
		req.State, req.DecisionReason = StateDenied, need.Reason
	case policy.Allow:
		req.State, req.ACR, req.AMR = StateApproved, need.ACR(), []string{"policy"}
	}
}

// DryRunRequest is a sample request for a dry-run: the parameters an agent
// would send, with the agent (optional, by client id) and the user
// (optional, an email or id as in login_hint) it would name.
type DryRunRequest struct {
	AgentID  string
	UserHint string
	Params   AuthRequest // AuthorizationDetails, BindingMessage, RequestedExpiry, ACRValues
}

// DryRun is what a rule set would decide for a request, without storing
// anything.
type DryRun struct {
	Elements    []policy.Decision
	Requirement policy.Requirement
}

// DryRun evaluates the rule set in source (not published) against sample
// request r exactly as live admission would decide it now, with the real
// velocity counts of the agent and user when they are given.
func (s *Service) DryRun(ctx context.Context, name string, source []byte, r DryRunRequest) (DryRun, error) {
	f, err := policy.ParseFile(name, source)
	if err != nil {
		return DryRun{}, err
	}
	set, err := policy.Compile(f)
	if err != nil {
		return DryRun{}, err
	}
	var agent Agent
	if r.AgentID != "" {
		if agent, err = s.store.Agent(ctx, r.AgentID); err != nil {
			return DryRun{}, err
		}
	}
	a, err := s.parse(ctx, agent, r.Params)
	if err != nil {
		return DryRun{}, err
	}
	if r.UserHint != "" {
		if a.user, err = s.store.UserByHint(ctx, r.UserHint); err != nil {
			return DryRun{}, err
		}
	}
	need, err := s.evaluate(ctx, s.store.db, set, a, s.now())
	if err != nil {
		return DryRun{}, err
	}
	return DryRun{Elements: need.Elements, Requirement: need}, nil
}

func checkBindingMessage(m string) error {
	if utf8.RuneCountInString(m) > MaxBindingMessage {
		return refuse(CodeInvalidBindingMessage, "binding_message is longer than 64 characters")
	}
	// The user compares it with what the agent shows them (CIBA §7.1), so
	// it must look like what it is: nothing hidden, reordered or imitating
	// another script.
	var te *rar.TextError
	if err := rar.CheckDisplayText(m); errors.As(err, &te) {
		return refuse(CodeInvalidBindingMessage, "binding_message "+te.Description())
	}
	for _, r := range m {
		if !unicode.IsPrint(r) {
			return refuse(CodeInvalidBindingMessage, "binding_message must contain printable characters only")
		}
	}
	return nil
}

func pick(versions TypeVersions, types []string) TypeVersions {
	out := TypeVersions{}
	for _, t := range types {
		out[t] = versions[t]
	}
	return out
}

// isBearerToken reports whether s is an RFC 6750 §2.1 b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isBearerToken(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}

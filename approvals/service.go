package approvals

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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

// ACR values (RFC 9470) that say how a request was approved.
const (
	ACRPolicy   = policy.ACRPolicy
	ACRApproval = policy.ACRApproval
	ACRStepUp   = policy.ACRStepUp
)

// Defaults of the protocol surface.
const (
	DefaultInterval   = 5 * time.Second // CIBA §7.3: the client's minimum wait between polls
	DefaultTokenTTL   = 5 * time.Minute
	MaxBindingMessage = 64
)

// Config configures a Service.
type Config struct {
	Issuer   string        // this server's issuer URL, no trailing slash
	KEK      []byte        // the key-encryption key; auth_req_id MACs use a key derived from it
	Interval time.Duration // poll interval handed to agents (default 5 s)
	TokenTTL time.Duration // access token lifetime (default and cap 5 min)
	Now      func() time.Time
	Logger   *slog.Logger
	// TimeZone is where request.hour and request.weekday are counted in risk
	// rules (nil: UTC).
	TimeZone *time.Location
	// HTTPClient fetches the JWKS URLs of private_key_jwt agents and
	// login_hint_token issuers. Those URLs are chosen outside this server, so
	// production passes a client that refuses internal addresses
	// (notify.Policy.Client); nil is a plain client without redirects.
	HTTPClient *http.Client
	// LoginHintIssuers are trusted to sign login_hint_token JWTs.
	LoginHintIssuers []LoginHintIssuer
}

// Service is the domain API: what the HTTP handlers and the CLI call.
type Service struct {
	store    *Store
	types    *TypeStore
	keys     *KeyStore
	issuer   string
	handles  handles
	interval int
	tokenTTL time.Duration
	now      func() time.Time
	logger   *slog.Logger

	policies   *PolicyStore
	argon      chan struct{} // argonSlots tokens
	tz         *time.Location
	clientKeys *clientKeySource
	hints      *hintIssuers
}

// NewService wires the domain.
func NewService(store *Store, types *TypeStore, keys *KeyStore, cfg Config) *Service {
	s := &Service{store: store, types: types, keys: keys, issuer: strings.TrimRight(cfg.Issuer, "/"),
		handles:  handles{key: DeriveKey(cfg.KEK, "countersign auth_req_id v1")},
		interval: int(cfg.Interval / time.Second), tokenTTL: cfg.TokenTTL, now: cfg.Now, logger: cfg.Logger}
	if s.interval <= 0 {
		s.interval = int(DefaultInterval / time.Second)
	}
	if s.tokenTTL <= 0 || s.tokenTTL > DefaultTokenTTL {
		s.tokenTTL = DefaultTokenTTL
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.clientKeys = newClientKeySource(cfg.HTTPClient, s.now)
	s.policies = NewPolicyStore(store)
	s.argon = make(chan struct{}, argonSlots)
	s.tz = cfg.TimeZone
	if s.tz == nil {
		s.tz = time.UTC
	}
	s.hints = &hintIssuers{byIssuer: map[string]LoginHintIssuer{}, fetch: newClientKeySource(cfg.HTTPClient, s.now)}
	for _, li := range cfg.LoginHintIssuers {
		s.hints.byIssuer[li.Issuer] = li
	}
	return s
}

// Store returns the service's store.
func (s *Service) Store() *Store { return s.store }

// Types returns the service's type store.
func (s *Service) Types() *TypeStore { return s.types }

// Policies returns the service's policy store.
func (s *Service) Policies() *PolicyStore { return s.policies }

// Keys returns the service's key store.
func (s *Service) Keys() *KeyStore { return s.keys }

// Issuer returns the issuer URL.
func (s *Service) Issuer() string { return s.issuer }

// ApprovalURL is the session-bound consent page of request id.
func (s *Service) ApprovalURL(id string) string { return s.issuer + "/approve/" + id }

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

// Authorize handles a backchannel authentication request from an
// authenticated agent: it validates every parameter, resolves the user, and
// stores a pending request. Refusals are *Refusal.
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
	if err := checkBindingMessage(p.BindingMessage); err != nil {
		return Created{}, err
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

	reg, versions, err := s.types.Registry(ctx)
	if err != nil {
		return Created{}, err
	}
	if len(p.AuthorizationDetails) == 0 {
		return Created{}, refuse(CodeInvalidRequest, "authorization_details is required")
	}
	details, err := reg.Parse(p.AuthorizationDetails)
	if err != nil {
		var fe *rar.FieldError
		if errors.As(err, &fe) {
			// The description is for the client: without the Go package prefix.
			return Created{}, refuse(CodeInvalidAuthorizationDetails, strings.TrimPrefix(fe.Error(), "rar: "))
		}
		return Created{}, err
	}
	var types []string
	lifetime := time.Duration(0)
	for i, e := range details.Elements {
		if !slices.Contains(agent.Types, e.Type) {
			return Created{}, refuse(CodeInvalidAuthorizationDetails,
				// RFC 6749 §5.2: no quotes in error_description.
				fmt.Sprintf("authorization_details[%d]: type %s is not allowed for this client", i, e.Type))
		}
		t, _ := reg.Type(e.Type)
		if lifetime == 0 || t.MaxLifetime < lifetime {
			lifetime = t.MaxLifetime
		}
		if !slices.Contains(types, e.Type) {
			types = append(types, e.Type)
		}
	}
	// CIBA §7.1: requested_expiry asks for an expires_in; the type's maximum
	// lifetime caps it.
	if p.RequestedExpiry < 0 {
		return Created{}, refuse(CodeInvalidRequest, "requested_expiry must be a positive integer")
	}
	// Compared in seconds: a huge requested_expiry would overflow a Duration.
	if p.RequestedExpiry > 0 && int64(p.RequestedExpiry) < int64(lifetime/time.Second) {
		lifetime = time.Duration(p.RequestedExpiry) * time.Second
	}

	user, err := s.resolveUser(ctx, agent, p)
	if err != nil {
		return Created{}, err
	}
	audience, err := s.audience(ctx, p.Resources, details, types)
	if err != nil {
		return Created{}, err
	}

	id := newUUID()
	req := Request{
		ID: uuidString(id[:]), AgentID: agent.ID, UserID: user.ID, Scope: strings.Join(scope, " "),
		DetailsCanonical: string(details.Canonical), DetailsHash: details.Hash,
		Types: types, TypeVersions: pick(versions, types), BindingMessage: p.BindingMessage,
		ACRValues: pq.StringArray(nonNil(p.ACRValues)), Resources: pq.StringArray(nonNil(p.Resources)), Audience: audience,
		PollInterval: s.interval,
	}
	if p.ClientNotificationToken != "" {
		req.ClientNotificationToken = &p.ClientNotificationToken
	}
	req.Amounts = requestAmounts(details)
	// The velocity counts a rule reads and the request they let through are
	// one step: requests of the same agent or user wait for each other, so
	// parallel requests cannot all slip under a velocity limit.
	var stored Request
	err = s.store.admit(ctx, agent.ID, user.ID, func(tx *sqlx.Tx) error {
		if err := s.applyPolicy(ctx, tx, &req, agent, user, p, details); err != nil {
			return err
		}
		stored, err = s.store.insertRequest(ctx, tx, req, lifetime)
		return err
	})
	if err != nil {
		return Created{}, err
	}
	version := 0
	if stored.PolicyVersion != nil {
		version = *stored.PolicyVersion
	}
	s.logger.InfoContext(ctx, "request received", "request", stored, "outcome", stored.Outcome,
		"policy_version", version, "rule", stored.PolicyRule)
	if stored.State == StateDenied {
		// SPEC §4: deny refuses at request time with the rule's reason; the
		// request is kept for velocity counts and the audit trail.
		return Created{}, refuse(CodeAccessDenied, stored.PolicyReason)
	}
	return Created{Request: stored, AuthReqID: s.handles.issue(id), ExpiresIn: int(lifetime / time.Second), Interval: s.interval}, nil
}

func checkBindingMessage(m string) error {
	if utf8.RuneCountInString(m) > MaxBindingMessage {
		return refuse(CodeInvalidBindingMessage, "binding_message is longer than 64 characters")
	}
	for _, r := range m {
		if !unicode.IsPrint(r) {
			return refuse(CodeInvalidBindingMessage, "binding_message must contain printable characters only")
		}
	}
	if !utf8.ValidString(m) {
		return refuse(CodeInvalidBindingMessage, "binding_message is not valid UTF-8")
	}
	return nil
}

// resolveUser finds the user that exactly one hint names (CIBA §7.1) and
// checks their user_code.
func (s *Service) resolveUser(ctx context.Context, agent Agent, p AuthRequest) (User, error) {
	n := 0
	for _, h := range []string{p.LoginHint, p.IDTokenHint, p.LoginHintToken} {
		if h != "" {
			n++
		}
	}
	if n != 1 {
		return User{}, refuse(CodeInvalidRequest, "exactly one of login_hint, id_token_hint and login_hint_token is required")
	}
	hint := p.LoginHint
	var err error
	switch {
	case p.IDTokenHint != "":
		hint, err = s.userFromIDTokenHint(ctx, agent, p.IDTokenHint)
	case p.LoginHintToken != "":
		hint, err = s.userFromLoginHintToken(ctx, p.LoginHintToken)
	}
	if err != nil {
		return User{}, err
	}
	u, err := s.store.UserByHint(ctx, hint)
	if errors.Is(err, ErrNotFound) {
		return User{}, refuse(CodeUnknownUserID, "no user matches the hint")
	}
	if err != nil {
		return User{}, err
	}
	if u.Status != "active" {
		return User{}, refuse(CodeAccessDenied, "the user is suspended")
	}
	if u.HasUserCode() {
		if p.UserCode == "" {
			return User{}, refuse(CodeMissingUserCode, "this user requires a user_code")
		}
		if err := s.checkUserCode(ctx, u, p.UserCode); err != nil {
			return User{}, err
		}
	}
	return u, nil
}

// checkUserCode checks a user code against the user's argon2id hash. Wrong
// codes are counted and lock the code after five; the memory-hard hash runs
// at most argonSlots at a time, so guessing cannot exhaust memory.
func (s *Service) checkUserCode(ctx context.Context, u User, code string) error {
	locked, err := s.store.userCodeLocked(ctx, u.ID)
	if err != nil {
		return err
	}
	if locked {
		return refuse(CodeInvalidUserCode, "too many wrong user codes; the code is locked for a while")
	}
	select {
	case s.argon <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	ok, err := userCodeMatches(*u.UserCodeHash, code)
	<-s.argon
	if err != nil {
		return err
	}
	if !ok {
		if err := s.store.userCodeFailed(ctx, u.ID); err != nil {
			return err
		}
		return refuse(CodeInvalidUserCode, "the user_code is not valid")
	}
	if u.UserCodeFailures > 0 {
		return s.store.userCodeSucceeded(ctx, u.ID)
	}
	return nil
}

// argonSlots bounds concurrent argon2id hashes (64 MiB each).
const argonSlots = 2

// audience decides the token's aud: the resource indicators given (RFC 8707),
// else the details' locations (RFC 9396 §2.2), else the resource servers
// registered for the request's types. Every audience must be an active
// registered resource server that executes the request's types (when it
// declares them): an agent cannot aim a token anywhere else.
func (s *Service) audience(ctx context.Context, resources []string, d *rar.Details, types []string) (pq.StringArray, error) {
	candidates := resources
	if len(candidates) == 0 {
		for _, e := range d.Elements {
			if ls, ok := e.Value["locations"].([]any); ok {
				for _, l := range ls {
					if s, ok := l.(string); ok {
						candidates = append(candidates, s)
					}
				}
			}
		}
	}
	if len(candidates) == 0 {
		aud, err := s.store.AudiencesForTypes(ctx, types)
		if err != nil {
			return nil, err
		}
		if len(aud) == 0 {
			return nil, refuse(CodeInvalidTarget, "no audience for the token: give a resource parameter or locations in authorization_details")
		}
		return aud, nil
	}
	known, err := s.store.ResourceServers(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range candidates {
		i := slices.IndexFunc(known, func(rs ResourceServer) bool { return rs.Audience == a && rs.Status == "active" })
		if i < 0 {
			return nil, refuse(CodeInvalidTarget, "the resource or location does not name a registered resource server")
		}
		if rs := known[i]; len(rs.Types) > 0 {
			for _, t := range types {
				if !slices.Contains(rs.Types, t) {
					return nil, refuse(CodeInvalidTarget, "the resource server named does not execute requests of type "+t)
				}
			}
		}
	}
	return sortedSet(candidates), nil
}

func pick(versions TypeVersions, types []string) TypeVersions {
	out := TypeVersions{}
	for _, t := range types {
		out[t] = versions[t]
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// requestFor resolves an auth_req_id presented by agent.
func (s *Service) requestFor(authReqID string) (string, error) {
	id, err := s.handles.parse(authReqID)
	if err != nil {
		return "", refuse(CodeInvalidGrant, "auth_req_id is not valid")
	}
	return id, nil
}

// Cancel withdraws a pending request of agent's.
func (s *Service) Cancel(ctx context.Context, agent Agent, authReqID string) error {
	id, err := s.requestFor(authReqID)
	if err != nil {
		return err
	}
	err = s.store.Cancel(ctx, id, agent.ID)
	switch {
	case err == nil:
		s.logger.InfoContext(ctx, "request cancelled", "id", id, "agent", agent.ID)
		return nil
	case errors.Is(err, ErrNotFound):
		return refuse(CodeInvalidGrant, "auth_req_id is not valid")
	case errors.Is(err, ErrExpired):
		return refuse(CodeExpiredToken, "the request has expired")
	case errors.Is(err, ErrAlreadyDecided), errors.Is(err, ErrWrongState):
		return refuse(CodeInvalidGrant, "the request is no longer pending")
	}
	return err
}

// Decide records a user's decision on a pending request. Only the user the
// request is for may decide it; step-up and quorum arrive with the approver web.
func (s *Service) Decide(ctx context.Context, requestID string, d Decision) (Request, error) {
	r, err := s.store.Request(ctx, requestID)
	if err != nil {
		return Request{}, err
	}
	if d.By != r.UserID {
		return Request{}, fmt.Errorf("%w: only the user the request is for may decide it", ErrNotAllowed)
	}
	if d.Approve && (r.StepUp || len(r.Quorum) > 0) {
		// A step-up needs a fresh passkey assertion and a quorum several
		// approvers: neither can be met by a plain approval.
		return Request{}, fmt.Errorf("%w: this request needs a passkey step-up or a quorum of approvers, not a plain approval", ErrNotAllowed)
	}
	if d.ACR == "" {
		d.ACR = ACRApproval
	}
	if len(d.AMR) == 0 {
		d.AMR = []string{"user"}
	}
	out, err := s.store.Decide(ctx, requestID, d)
	if err != nil {
		return Request{}, err
	}
	s.logger.InfoContext(ctx, "request decided", "request", out, "approve", d.Approve)
	return out, nil
}

// applyPolicy evaluates the current risk policy (SPEC §4) for every element
// of req and records the outcome: allow approves req at once, deny denies it,
// the others leave it pending with what a human must do.
func (s *Service) applyPolicy(ctx context.Context, tx *sqlx.Tx, req *Request, agent Agent, user User, p AuthRequest, details *rar.Details) error {
	set, version, err := s.policies.Current(ctx)
	if err != nil {
		return err
	}
	if set == nil {
		// Deny by default: with no published thresholds nothing is allowed.
		req.State, req.Outcome, req.PolicyReason = StateDenied, policy.Deny.String(), "no risk policy is published"
		req.DecisionReason = req.PolicyReason
		return nil
	}
	recent := map[string]policy.Recent{}
	if set.ReadsRecent(req.Types...) {
		if recent, err = s.store.recent(ctx, tx, agent.ID, user.ID, req.Types, set.ReadsRecentSums(req.Types...)); err != nil {
			return err
		}
	}
	now := s.now().In(s.tz)
	in := policy.Input{
		Agent: policy.Agent{ID: agent.ID, Name: agent.Name, Domain: agent.Domain, Labels: agent.Labels},
		User:  policy.User{ID: user.ID, Roles: user.Roles, Groups: user.Groups},
		Request: policy.Request{BindingMessage: p.BindingMessage, ACRValues: p.ACRValues,
			RequestedExpiry: int64(p.RequestedExpiry), Hour: int64(now.Hour()), Weekday: int64(now.Weekday()),
			Amounts: req.Amounts.policy(), Elements: int64(len(details.Elements))},
	}
	decisions := make([]policy.Decision, len(details.Elements))
	for i, e := range details.Elements {
		in.Details, in.Recent = e.Value, recent[e.Type]
		decisions[i] = set.Evaluate(e.Type, in)
		if err := decisions[i].Err; err != nil {
			// Fail closed (the strictest outcome was chosen), and say so.
			s.logger.WarnContext(ctx, "risk rule failed to evaluate", "policy_version", version, "type", e.Type,
				"rule", decisions[i].RuleID, "err", err)
		}
	}
	need := policy.Combine(decisions, p.ACRValues)
	req.Outcome, req.PolicyVersion, req.PolicyRule, req.PolicyReason = need.Kind.String(), &version, need.RuleID, need.Reason
	req.Quorum, req.StepUp, req.UserRequired = need.Quorums, need.StepUp, need.User
	switch need.Kind {
	case policy.Deny:
		req.State, req.DecisionReason = StateDenied, need.Reason
	case policy.Allow:
		req.State, req.ACR, req.AMR = StateApproved, need.ACR(), []string{"policy"}
	}
	return nil
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

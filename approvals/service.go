package approvals

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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
	// the client must refuse internal addresses: nil is egress.Policy{}.Client
	// (https to public addresses only, no redirects); production passes one
	// with its --ping-allow networks.
	HTTPClient *http.Client
	// LoginHintIssuers are trusted to sign login_hint_token JWTs.
	LoginHintIssuers []LoginHintIssuer
}

// Service is the domain API: what the HTTP handlers and the CLI call.
type Service struct {
	store      *Store
	types      *TypeStore
	keys       *KeyStore
	issuer     string
	authReqIDs authReqIDs
	interval   int
	tokenTTL   time.Duration
	now        func() time.Time
	logger     *slog.Logger

	policies   *PolicyStore
	argon      chan struct{} // argonSlots tokens
	tz         *time.Location
	clientKeys *clientKeySource
	hints      *hintIssuers
}

// NewService wires the domain.
func NewService(store *Store, types *TypeStore, keys *KeyStore, cfg Config) *Service {
	s := &Service{store: store, types: types, keys: keys, issuer: strings.TrimRight(cfg.Issuer, "/"),
		authReqIDs: authReqIDs{key: DeriveKey(cfg.KEK, "countersign auth_req_id v1")},
		interval:   int(cfg.Interval / time.Second), tokenTTL: cfg.TokenTTL, now: cfg.Now, logger: cfg.Logger}
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

// checkUserCode checks a user code against the user's argon2id hash. Every
// attempt is counted as wrong before it is hashed and taken back when it
// matches, so five wrong codes lock the code even when they arrive at once;
// the memory-hard hash runs at most argonSlots at a time, so guessing cannot
// exhaust memory.
func (s *Service) checkUserCode(ctx context.Context, u User, code string) error {
	reserved, err := s.store.reserveUserCodeAttempt(ctx, u.ID)
	if err != nil {
		return err
	}
	if !reserved {
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
		return refuse(CodeInvalidUserCode, "the user_code is not valid")
	}
	return s.store.userCodeMatched(ctx, u.ID)
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

// requestIDOf returns the request id an auth_req_id stands for.
func (s *Service) requestIDOf(authReqID string) (string, error) {
	id, err := s.authReqIDs.parse(authReqID)
	if err != nil {
		return "", refuse(CodeInvalidGrant, "auth_req_id is not valid")
	}
	return id, nil
}

// Cancel withdraws a pending request of agent's.
func (s *Service) Cancel(ctx context.Context, agent Agent, authReqID string) error {
	id, err := s.requestIDOf(authReqID)
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

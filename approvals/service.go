package approvals

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/countersign/countersign/approvals/policy"
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
	// Listener, when set, hears of every change on every replica: the
	// Service then keeps what rarely changes (agents, users, resource
	// servers, types, the policy) in memory and drops it when it changes.
	// Without one it reads them from the database every time.
	Listener *Listener
	// Metrics counts decisions, reviews and tokens (nil: nothing).
	Metrics *Metrics
	// LoginHintIssuers are trusted to sign login_hint_token JWTs.
	LoginHintIssuers []LoginHintIssuer
	// Fatigue are the approval-fatigue guards: nil is DefaultFatigue, a
	// zero Fatigue none.
	Fatigue *Fatigue
	// AnnounceAfterCommit makes the Service announce the request and
	// review events of pending admissions and reviews itself, right after
	// they commit, instead of in their transactions (see announce.go): for
	// a long-lived process (a server), whose announcements go out in
	// batches.
	AnnounceAfterCommit bool
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
	metrics    *Metrics
	caches     *caches
	fatigue    Fatigue

	policies   *PolicyStore
	argon      chan struct{} // argonSlots tokens
	tz         *time.Location
	clientKeys *clientKeySource
	hints      *hintIssuers
	announcer  *announcer // nil: the trigger announces every event
	// onOutbox is called after this process stored a request whose
	// admission queued outbox rows (OnOutbox).
	onOutbox func()
}

// NewService wires the domain.
func NewService(store *Store, types *TypeStore, keys *KeyStore, cfg Config) *Service {
	s := &Service{store: store, types: types, keys: keys, issuer: strings.TrimRight(cfg.Issuer, "/"),
		authReqIDs: authReqIDs{key: DeriveKey(cfg.KEK, "countersign auth_req_id v1")},
		interval:   int(cfg.Interval / time.Second), tokenTTL: cfg.TokenTTL, now: cfg.Now, logger: cfg.Logger, metrics: cfg.Metrics}
	if s.interval <= 0 {
		s.interval = int(DefaultInterval / time.Second)
	}
	s.fatigue = DefaultFatigue
	if cfg.Fatigue != nil {
		s.fatigue = *cfg.Fatigue
	}
	if s.fatigue.SuspendWindow <= 0 {
		s.fatigue.SuspendWindow = DefaultFatigue.SuspendWindow
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
	s.caches = newCaches(cfg.Listener, time.Now)
	if cfg.Listener != nil {
		cfg.Listener.Subscribe(func(n Notice) { s.caches.invalidate(n, s.keys) })
	}
	if cfg.AnnounceAfterCommit {
		s.announcer = newAnnouncer(store.db, s.logger)
	}
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

// OnOutbox sets fn to be called after an admission in this process queued
// outbox rows (a ping of a request decided at once, the pushes of a pending
// one), so that this process's outbox worker sends them at once: an
// auto-allowed admission is not announced to the listeners. Set it before
// the service is used.
func (s *Service) OnOutbox(fn func()) { s.onOutbox = fn }

// announceMode is what this service's changes set countersign.announce to:
// announceAfter when it announces their request events itself.
func (s *Service) announceMode() string {
	if s.announcer != nil {
		return announceAfter
	}
	return ""
}

// announced announces events of a change committed in announceMode.
func (s *Service) announced(events ...Event) {
	if s.announcer != nil {
		s.announcer.announce(events...)
	}
}

// Close sends the announcements still queued (waiting a few seconds at
// most). Call it before the database is closed; the service is not used
// after.
func (s *Service) Close() {
	if s.announcer != nil {
		s.announcer.close(5 * time.Second)
	}
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

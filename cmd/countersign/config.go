package main

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/internal/egress"
)

// Config is the whole configuration of a countersign process. Every field is a
// flag with a COUNTERSIGN_* environment fallback (flag name upper-cased, dashes
// to underscores); secrets can also be read from a file named by
// COUNTERSIGN_<NAME>_FILE or --<name>-file.
type Config struct {
	Addr            string
	Issuer          string
	DatabaseURL     string
	KEK             string
	Dev             bool
	DataDir         string
	LogFormat       string
	LogLevel        string
	ShutdownTimeout time.Duration
	// LoginHintIssuers are ISSUER=JWKS_URL_OR_FILE pairs trusted to sign
	// login_hint_token JWTs.
	LoginHintIssuers []string
	// TimeZone is where risk rules count request.hour and request.weekday.
	TimeZone string
	// PingAllow lists networks (CIDRs) that ping callbacks may reach although
	// they are private, loopback or otherwise not public.
	PingAllow []string
	// MetricsAddr is where /metrics (and with Pprof, /debug/pprof/) listen:
	// off unless set, loopback in dev mode; "off" turns it off there too.
	MetricsAddr string
	Pprof       bool
	// AuditSealInterval is how often this replica's audit sealer runs
	// (0: it does not seal; another replica must).
	AuditSealInterval time.Duration
	// Fatigue are the approval-fatigue guards.
	Fatigue approvals.Fatigue

	kind cmdKind // which subcommand this configures
	// announce: the Service announces its busiest changes itself after
	// they commit (serve, and load's simulated approver).
	announce bool
}

// cmdKind says which configuration a subcommand needs.
type cmdKind int

const (
	kindMigrate cmdKind = iota // the database only
	kindAdmin                  // the database; --kek is accepted but not needed
	kindKeys                   // the database and the key-encryption key
	kindServe                  // everything
)

// needsKEK reports whether the subcommand seals or opens key material.
func (k cmdKind) needsKEK() bool { return k >= kindKeys }

// secretFlags may come from a *_FILE.
var secretFlags = []string{"database-url", "kek"}

// flags registers the configuration flags that a subcommand of kind uses.
func (c *Config) flags(fs *flag.FlagSet, kind cmdKind) {
	c.kind = kind
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL URL (also DATABASE_URL); unset with --dev: a private cluster under --data-dir")
	fs.BoolVar(&c.Dev, "dev", false, "development mode: private PostgreSQL when no database URL, text logs, localhost defaults")
	fs.StringVar(&c.DataDir, "data-dir", ".data", "where dev mode keeps its private PostgreSQL cluster and generated keys")
	fs.StringVar(&c.LogFormat, "log-format", "", "log format: text or json (default: text with --dev, else json)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	if kind >= kindAdmin {
		fs.StringVar(&c.TimeZone, "time-zone", "UTC", "IANA time zone in which risk rules see request.hour and request.weekday")
		fs.StringVar(&c.KEK, "kek", "", "key-encryption key for signing keys: 32 bytes, base64 or hex (dev: generated into --data-dir)")
		fs.StringVar(&c.Issuer, "issuer", "", "issuer URL, e.g. https://countersign.example.com (dev default: http://localhost:PORT)")
	}
	if kind == kindServe {
		fs.Var((*repeatedFlag)(&c.LoginHintIssuers), "login-hint-issuer", "trust ISSUER=JWKS_URL_OR_FILE to sign login_hint_token JWTs (repeatable; env: comma-separated)")
		fs.StringVar(&c.Addr, "addr", "", "HTTP listen address (default :8080; with --dev 127.0.0.1:8080, this machine only)")
		fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long a graceful shutdown waits for in-flight requests")
		fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "listen address of the Prometheus /metrics endpoint, e.g. 127.0.0.1:9464 (default: off; dev: 127.0.0.1:9464; off: none)")
		fs.BoolVar(&c.Pprof, "pprof", false, "also serve net/http/pprof under /debug/pprof/ on --metrics-addr")
		fs.DurationVar(&c.AuditSealInterval, "audit-seal-interval", time.Second, "how often the audit sealer seals new events into the hash chain and signs a checkpoint; one replica seals at a time (0: this replica never seals)")
		d := approvals.DefaultFatigue
		fs.BoolVar(&c.Fatigue.JoinIdentical, "join-identical", d.JoinIdentical, "an identical call (same agent, user and authorization_details) joins the live pending request: same auth_req_id, one decision, one token")
		fs.IntVar(&c.Fatigue.MaxPendingPerAgent, "max-pending-per-agent", d.MaxPendingPerAgent, "pending requests one agent may have at once; over it /bc-authorize answers access_denied with Retry-After (0: no limit)")
		fs.IntVar(&c.Fatigue.MaxPendingPerUser, "max-pending-per-user", d.MaxPendingPerUser, "pending requests one user may have at once (0: no limit)")
		fs.IntVar(&c.Fatigue.SuspendAfterDenials, "suspend-after-denials", d.SuspendAfterDenials, "suspend an agent once people denied this many of its requests within --suspend-window (0: never)")
		fs.DurationVar(&c.Fatigue.SuspendWindow, "suspend-window", d.SuspendWindow, "the window of --suspend-after-denials")
		fs.Var((*repeatedFlag)(&c.PingAllow), "ping-allow", "a network (CIDR) that ping callbacks and JWKS fetches may reach although it is not public, e.g. 10.20.0.0/16; repeatable (env: comma-separated)")
	}
	for _, name := range secretFlags {
		if fs.Lookup(name) != nil {
			fs.String(name+"-file", "", "read --"+name+" from this file")
		}
	}
}

// parseFlags parses args into fs and then fills every flag not given on the
// command line from its environment variable.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%s: %w (see --help)", fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (see --help)", fs.Name(), fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		env := envName(f.Name)
		v, ok := lookup(getenv, env)
		if !ok && f.Name == "database-url" {
			env = "DATABASE_URL"
			v, ok = lookup(getenv, env)
		}
		if !ok {
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = fmt.Errorf("%s: invalid value %q: %v", env, v, e)
		}
	})
	if err != nil {
		return err
	}
	for _, name := range secretFlags {
		if fs.Lookup(name) == nil {
			continue
		}
		path := fs.Lookup(name + "-file").Value.String()
		if path == "" {
			continue
		}
		b, e := os.ReadFile(path)
		if e != nil {
			return fmt.Errorf("--%s-file: cannot read %s: %v", name, path, unwrapPathError(e))
		}
		if given[name] {
			return fmt.Errorf("--%s and --%s-file are both set; use one", name, name)
		}
		_ = fs.Set(name, strings.TrimRight(string(b), "\r\n"))
	}
	return nil
}

func envName(flagName string) string {
	return "COUNTERSIGN_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func lookup(getenv func(string) string, key string) (string, bool) {
	v := getenv(key)
	return v, v != ""
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Validate checks the rules that span fields.
func (c *Config) Validate() error {
	if c.DatabaseURL == "" && !c.Dev {
		return errors.New("no database: set DATABASE_URL (or --database-url), or use --dev for a private cluster")
	}
	if c.DatabaseURL != "" {
		if err := validateDatabaseURL(c.DatabaseURL); err != nil {
			return err
		}
	}
	switch c.LogFormat {
	case "":
		c.LogFormat = "json"
		if c.Dev {
			c.LogFormat = "text"
		}
	case "text", "json":
	default:
		return fmt.Errorf("--log-format must be text or json, not %q", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level must be debug, info, warn or error, not %q", c.LogLevel)
	}
	if c.kind.needsKEK() && c.KEK == "" && !c.Dev {
		return errors.New("no key-encryption key: set COUNTERSIGN_KEK (or --kek-file), 32 bytes in base64 or hex; generate one with: openssl rand -base64 32")
	}
	if c.KEK != "" {
		if _, err := decodeKEK(c.KEK); err != nil {
			return err
		}
	}
	if c.Issuer != "" {
		u, err := url.Parse(c.Issuer)
		if err != nil || (u.Scheme != "https" && !(c.Dev && u.Scheme == "http")) || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
			strings.Trim(u.Path, "/") != "" {
			// The endpoints are served at the root, so the issuer has no path.
			return errors.New("--issuer must be an https URL with no path, query or fragment (http only with --dev)")
		}
	}
	if c.kind >= kindAdmin {
		if _, err := time.LoadLocation(c.TimeZone); err != nil {
			return fmt.Errorf("--time-zone %q is not an IANA time zone", c.TimeZone)
		}
	}
	for _, li := range c.LoginHintIssuers {
		if _, err := approvals.ParseLoginHintIssuer(li); err != nil {
			return fmt.Errorf("--login-hint-issuer %q: want ISSUER=JWKS_URL_OR_FILE", li)
		}
	}
	var ae *egress.AllowlistError
	if _, err := egress.ParseAllowlist(c.PingAllow); errors.As(err, &ae) {
		return fmt.Errorf("--ping-allow: %q is not a CIDR such as 10.0.0.0/8", ae.Value)
	} else if err != nil {
		return fmt.Errorf("--ping-allow: %w", err)
	}
	if c.kind == kindServe && c.Issuer == "" && !c.Dev {
		return errors.New("no issuer: set --issuer (COUNTERSIGN_ISSUER) to this server's public https URL")
	}
	if c.ShutdownTimeout < 0 {
		return errors.New("--shutdown-timeout must not be negative")
	}
	if c.AuditSealInterval < 0 || (c.AuditSealInterval > 0 && c.AuditSealInterval < 10*time.Millisecond) {
		return errors.New("--audit-seal-interval is 0 (this replica does not seal) or at least 10ms")
	}
	if f := c.Fatigue; f.MaxPendingPerAgent < 0 || f.MaxPendingPerUser < 0 || f.SuspendAfterDenials < 0 {
		return errors.New("--max-pending-per-agent, --max-pending-per-user and --suspend-after-denials are 0 (off) or more")
	}
	if c.kind == kindServe && c.Fatigue.SuspendWindow <= 0 {
		return errors.New("--suspend-window must be positive")
	}
	if c.kind == kindServe && c.Addr == "" {
		c.Addr = ":8080"
		if c.Dev {
			c.Addr = "127.0.0.1:8080"
		}
	}
	if c.Pprof && c.metricsAddr() == "" {
		return errors.New("--pprof needs --metrics-addr: profiles are served on the metrics listener only")
	}
	if c.Pprof && !loopbackAddr(c.metricsAddr()) {
		return errors.New("--pprof needs a loopback --metrics-addr (e.g. 127.0.0.1:9464): profiles show the process's memory")
	}
	return nil
}

// loopbackAddr reports whether addr (host:port) listens on loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// DevMetricsAddr is where dev mode serves /metrics unless told otherwise.
const DevMetricsAddr = "127.0.0.1:9464"

// metricsAddr is the metrics listener's address, or "" for none.
func (c *Config) metricsAddr() string {
	switch {
	case c.MetricsAddr == "off":
		return ""
	case c.MetricsAddr == "" && c.Dev:
		return DevMetricsAddr
	}
	return c.MetricsAddr
}

// validateDatabaseURL accepts postgres:// URLs; the message never echoes the
// value, which may hold a password.
func validateDatabaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("DATABASE_URL is malformed: want postgres://user:password@host:5432/dbname")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("DATABASE_URL has scheme %q: want postgres://user:password@host:5432/dbname", u.Scheme)
	}
	if u.Host == "" && u.Query().Get("host") == "" {
		return errors.New("DATABASE_URL has no host: want postgres://user:password@host:5432/dbname")
	}
	return nil
}

// decodeKEK accepts 32 bytes as standard or URL-safe base64 (padded or not)
// or as hex.
func decodeKEK(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, errors.New("the key-encryption key must be 32 bytes in base64 or hex; generate one with: openssl rand -base64 32")
}

// repeatedFlag is a repeatable flag; from the environment its value is a
// comma-separated list.
type repeatedFlag []string

func (r *repeatedFlag) String() string { return strings.Join(*r, ",") }

func (r *repeatedFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*r = append(*r, p)
		}
	}
	return nil
}

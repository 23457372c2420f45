// Command countersign is the Countersign server and its admin CLI.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	_ "time/tzdata" // --time-zone works on machines without a zoneinfo database
)

// version is set at link time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

const usage = `countersign — human approval for AI agents

Usage:
  countersign serve [flags]     run the HTTP server (--dev for a local demo)
  countersign migrate [flags]   apply database migrations and exit
  countersign version           print the version
  countersign load [flags]      drive a server on loopback with simulated agents and report
                                flows/s, latencies, server CPU and PostgreSQL work per flow

Administration (each takes the database flags of migrate, and --json):
  countersign agents add --name N --domain D --types t1,t2 [--label k=v]… [--delivery poll|ping --notify-url U]
                         [--auth client_secret_basic|client_secret_post|private_key_jwt --jwks-file F|--jwks-url U]
  countersign agents list | rotate-secret | suspend | resume --client-id ID
  countersign users add --email E [--name N] [--role R]… [--group G]… [--user-code C]
  countersign users invite --email E [--name N] [--json]
  countersign users list | suspend | resume --user ID_OR_EMAIL
  countersign resources add --name N --audience URL [--types t1,t2] | list
  countersign types apply -f FILE|DIR
  countersign policy apply -f FILE | dry-run -f FILE --details FILE [--client-id ID] [--user U] [--acr-values V]… | history
  countersign keys rotate [--now [--force]] | list
  countersign requests show REQUEST_ID [--json]
                         a request's timeline from the audit trail: who asked, what, which rule decided,
                         who reviewed it with what evidence, notifications, the token's issue, redeem or revocation
  countersign requests list [--state S] [--agent ID] [--user U] [--type T] [--since T] [--until T] [--limit N] [--json]
                         requests newest first (times RFC 3339 or a duration ago: 24h, 7d; --json: JSON Lines)
  countersign evidence verify REQUEST_ID [--issuer URL]
                         re-verify a request's step-up evidence against its user's passkey; exit 1 if any fails
  countersign audit verify [--key K] | verify --file EXPORT --key K
                         walk the sealed audit chain and its signed checkpoints; exit 1 naming the first broken place
  countersign audit export --since T [--until T] [--format jsonl] [--output F]
  countersign audit key [--output F] | rotate-key
                         the checkpoint public keys as a JWK Set (for verify --file) | sign with a new key from now on

Run 'countersign COMMAND --help' for a command's flags.
`

// errUsage marks an error whose message is the whole story: it is printed as
// one line and the process exits 2.
type errUsage struct{ error }

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = serveCmd(ctx, rest, stdout, stderr, getenv)
	case "migrate":
		err = migrateCmd(ctx, rest, stdout, stderr, getenv)
	case "agents":
		err = agentsCmd(ctx, rest, stdout, stderr, getenv)
	case "users":
		err = usersCmd(ctx, rest, stdout, stderr, getenv)
	case "resources":
		err = resourcesCmd(ctx, rest, stdout, stderr, getenv)
	case "types":
		err = typesCmd(ctx, rest, stdout, stderr, getenv)
	case "policy":
		err = policyCmd(ctx, rest, stdout, stderr, getenv)
	case "keys":
		err = keysCmd(ctx, rest, stdout, stderr, getenv)
	case "requests":
		err = requestsCmd(ctx, rest, stdout, stderr, getenv)
	case "evidence":
		err = evidenceCmd(ctx, rest, stdout, stderr, getenv)
	case "audit":
		err = auditCmd(ctx, rest, stdout, stderr, getenv)
	case "load":
		err = loadCmd(ctx, rest, stdout, stderr, getenv)
	case "version":
		fmt.Fprintln(stdout, versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		err = errUsage{fmt.Errorf("unknown command %q (see countersign --help)", cmd)}
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(errUsage)):
		fmt.Fprintf(stderr, "countersign: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "countersign: %v\n", err)
		return 1
	}
}

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return fmt.Sprintf("countersign %s %s/%s %s", v, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// loadConfig parses the flags of one subcommand into a validated Config.
func loadConfig(name string, args []string, stdout io.Writer, getenv func(string) string, kind cmdKind, extra func(*flag.FlagSet)) (*Config, error) {
	var cfg Config
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfg.flags(fs, kind)
	if extra != nil {
		extra(fs)
	}
	if err := parseFlags(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: countersign %s [flags]\n\nFlags (each also COUNTERSIGN_<FLAG> in the environment):\n", name)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, errUsage{err}
	}
	if err := cfg.Validate(); err != nil {
		return nil, errUsage{err}
	}
	return &cfg, nil
}

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

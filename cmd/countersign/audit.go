package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/approvals/audit"
)

// errAuditBroken marks a verification that found a break: printed as the
// finding, exit 1.
var errAuditBroken = errors.New("the audit trail is broken")

func auditCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return errUsage{errors.New("audit: want verify, export, key or rotate-key")}
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "verify":
		return auditVerifyCmd(ctx, rest, stdout, stderr, getenv)
	case "export":
		return auditExportCmd(ctx, rest, stdout, stderr, getenv)
	case "key":
		var out string
		return runAdmin(ctx, kindKeys, "audit key", rest, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.StringVar(&out, "output", "", "write the JWK Set to this file instead of stdout")
		}, func(ctx context.Context, a *app) error {
			set, err := a.svc.Keys().AuditKeySet(ctx)
			var forged *approvals.ForgedKeysError
			if err != nil && !errors.As(err, &forged) {
				return err
			}
			if len(set.Keys) == 0 {
				return errors.New("audit key: no checkpoint key yet: a running server makes one when it first seals")
			}
			if err := writeOutput(out, stdout, func(w io.Writer) error { return printJSON(w, set) }); err != nil {
				return err
			}
			if forged != nil {
				return fmt.Errorf("audit key: left out %s: %w", strings.Join(forged.KIDs, ", "), forged)
			}
			return nil
		})
	case "rotate-key":
		var asJSON bool
		return runAdmin(ctx, kindKeys, "audit rotate-key", rest, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		}, func(ctx context.Context, a *app) error {
			k, err := a.svc.Keys().RotateAuditKey(ctx, approvals.ActorCLI)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(stdout, k)
			}
			fmt.Fprintf(stdout, "Checkpoints are signed with audit key %s from the next batch on. Earlier keys stay published (countersign audit key).\n", k.KID)
			return nil
		})
	default:
		return errUsage{fmt.Errorf("audit: unknown subcommand %q (want verify, export, key or rotate-key)", sub)}
	}
}

// auditVerifyCmd verifies the database's chain (needs the KEK, which
// vouches for the checkpoint keys) or, with --file, an export offline
// against --key.
func auditVerifyCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var file, keyFile string
	var asJSON bool
	var maxUnsealed time.Duration
	extra := func(fs *flag.FlagSet) {
		fs.DurationVar(&maxUnsealed, "max-unsealed-age", 5*time.Minute, "with the database: fail when an event older than this is not sealed yet (no sealer running, or it fails)")
		fs.StringVar(&file, "file", "", "verify this export (countersign audit export) offline instead of the database; needs --key")
		fs.StringVar(&keyFile, "key", "", "the checkpoint public key(s): a JWK or JWK Set file (countersign audit key); with the database: instead of the keys it holds")
		fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	}
	if hasFlag(args, "file") {
		// Offline: no database, no configuration beyond the two files.
		fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		extra(fs)
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(stdout)
				fs.PrintDefaults()
			}
			return errUsage{err}
		}
		if fs.NArg() > 0 {
			return errUsage{fmt.Errorf("audit verify: unexpected argument %q", fs.Arg(0))}
		}
		if keyFile == "" {
			return errUsage{errors.New("audit verify --file needs --key: the checkpoint public key (countersign audit key), kept apart from the export")}
		}
		keys, err := readKeySet(keyFile)
		if err != nil {
			return errUsage{err}
		}
		f, err := os.Open(file)
		if err != nil {
			return errUsage{fmt.Errorf("audit verify: %w", err)}
		}
		defer f.Close()
		var progress func(int64)
		endBar := func() {}
		if fi, err := f.Stat(); err == nil && isTerminal(stderr) && fi.Size() > 0 {
			var bar func(done, total int64)
			bar, endBar = progressBar(stderr, "verify", "bytes")
			progress = func(read int64) { bar(read, fi.Size()) }
		}
		rep, err := audit.VerifyExport(f, keys, progress)
		endBar()
		return auditOutcome(stdout, rep, err, asJSON, "the export")
	}
	return runAdmin(ctx, kindKeys, "audit verify", args, stdout, stderr, getenv, extra, func(ctx context.Context, a *app) error {
		var keys *jose.JSONWebKeySet
		var err error
		if keyFile != "" {
			keys, err = readKeySet(keyFile)
			if err != nil {
				return errUsage{err}
			}
		} else if keys, err = a.svc.Keys().AuditKeySet(ctx); err != nil {
			var forged *approvals.ForgedKeysError
			if !errors.As(err, &forged) {
				return err
			}
			// A key row written without the KEK is tampering in itself.
			return auditOutcome(stdout, audit.Report{}, &audit.Break{Kind: audit.BreakCheckpoint,
				Detail: fmt.Sprintf("audit key %s is in the database but was not made with the KEK: it was written there by someone without it", strings.Join(forged.KIDs, ", "))},
				asJSON, "the database's audit trail")
		}
		var progress approvals.Progress
		endBar := func() {}
		if isTerminal(stderr) {
			progress, endBar = progressBar(stderr, "verify", "events")
		}
		rep, err := a.svc.Store().VerifyAudit(ctx, keys, progress)
		endBar()
		if err == nil && rep.Unsealed > 0 {
			if oldest, perr := audit.ParseTime(rep.OldestUnsealedAt); perr == nil && time.Since(oldest) > maxUnsealed {
				err = &audit.Break{Kind: audit.BreakUnsealed, Detail: fmt.Sprintf(
					"%d events are not sealed, the oldest from %s (over --max-unsealed-age %s): is a sealer running (countersign serve with --audit-seal-interval above 0)? Its errors are in the server's log",
					rep.Unsealed, rep.OldestUnsealedAt, maxUnsealed)}
			}
		}
		return auditOutcome(stdout, rep, err, asJSON, "the database's audit trail")
	})
}

// auditOutcome prints a verification's report, or its break and exit 1.
func auditOutcome(stdout io.Writer, rep audit.Report, err error, asJSON bool, what string) error {
	b, broken := audit.IsBreak(err)
	if err != nil && !broken {
		return err
	}
	if asJSON {
		out := map[string]any{"ok": !broken, "report": rep}
		if broken {
			out["break"] = map[string]any{"kind": b.Kind, "position": b.Position, "event_id": b.EventID, "detail": b.Detail}
		}
		if err := printJSON(stdout, out); err != nil {
			return err
		}
	} else if !broken {
		fmt.Fprintf(stdout, "OK: %s verifies: %d events (positions %d–%d), %d signed checkpoints.\n", what, rep.Events, rep.First, rep.Last, rep.Checkpoints)
		if rep.Events > 0 {
			fmt.Fprintf(stdout, "Events from %s to %s (by their times; positions are the order of sealing).\n", rep.FirstAt, rep.LastAt)
		}
		if rep.LastCheckpoint > 0 {
			fmt.Fprintf(stdout, "Last checkpoint: position %d, sealed %s.\n", rep.LastCheckpoint, rep.LastCheckpointAt)
		}
		if rep.Unsigned > 0 {
			fmt.Fprintf(stdout, "Not yet signed: %d events after the last checkpoint.\n", rep.Unsigned)
		}
		if rep.Unsealed > 0 {
			fmt.Fprintf(stdout, "Not yet sealed: %d newer events (the sealer takes them within its interval; until then they are not protected).\n", rep.Unsealed)
		}
	}
	if broken {
		if !asJSON {
			fmt.Fprintf(stdout, "BROKEN: %s: %s\n", what, strings.TrimPrefix(b.Error(), "audit: "))
		}
		return errAuditBroken
	}
	return nil
}

func auditExportCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var since, until, format, out string
	return adminCmd(ctx, "audit export", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
		fs.StringVar(&since, "since", "", "the first events to export: RFC 3339 time or a duration before now such as 24h or 7d (required)")
		fs.StringVar(&until, "until", "", "export the events before this: RFC 3339 time or a duration before now such as 1h (default: up to the last checkpoint)")
		fs.StringVar(&format, "format", "jsonl", "output format: jsonl (JSON Lines)")
		fs.StringVar(&out, "output", "", "write to this file instead of stdout")
	}, func(ctx context.Context, a *app) error {
		if format != "jsonl" {
			return errUsage{fmt.Errorf("audit export: --format %q: want jsonl", format)}
		}
		if since == "" {
			return errUsage{errors.New("audit export: --since is required (an RFC 3339 time, or e.g. 720h for the last 30 days)")}
		}
		now := time.Now()
		from, err := parseTimeFlag(since, now)
		if err != nil {
			return errUsage{fmt.Errorf("audit export: --since: %w", err)}
		}
		var to time.Time
		if until != "" {
			if to, err = parseTimeFlag(until, now); err != nil {
				return errUsage{fmt.Errorf("audit export: --until: %w", err)}
			}
			if !to.After(from) {
				return errUsage{errors.New("audit export: --until must be after --since")}
			}
		}
		var progress approvals.Progress
		endBar := func() {}
		if isTerminal(stderr) {
			progress, endBar = progressBar(stderr, "export", "events")
		}
		var n int64
		err = writeOutput(out, stdout, func(w io.Writer) error {
			var err error
			n, err = a.svc.Store().ExportAudit(ctx, w, from, to, progress)
			return err
		})
		endBar()
		if err != nil {
			return err
		}
		if out != "" {
			fmt.Fprintf(stderr, "countersign audit export: %d events written to %s\n", n, out)
		}
		return nil
	})
}

// writeOutput runs write on stdout, or on the file path when it is set:
// written to a temporary file beside it and renamed into place once
// complete, so a failed export leaves no partial file.
func writeOutput(path string, stdout io.Writer, write func(io.Writer) error) error {
	if path == "" {
		return write(stdout)
	}
	f, err := os.CreateTemp(dirOf(path), ".countersign-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, os.PathSeparator); i >= 0 {
		return path[:i+1]
	}
	return "."
}

// readKeySet reads a JWK or a JWK Set.
func readKeySet(path string) (*jose.JSONWebKeySet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err == nil && len(set.Keys) > 0 {
		return publicOnly(&set, path)
	}
	var k jose.JSONWebKey
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("--key %s: neither a JWK nor a JWK Set: %w", path, err)
	}
	return publicOnly(&jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k}}, path)
}

func publicOnly(set *jose.JSONWebKeySet, path string) (*jose.JSONWebKeySet, error) {
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return nil, fmt.Errorf("--key %s holds a private key: give the public key only", path)
		}
		if k.KeyID == "" {
			return nil, fmt.Errorf("--key %s: a key without a kid", path)
		}
	}
	return set, nil
}

// hasFlag reports whether args set the flag name (-name, --name, with or
// without =value).
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if !strings.HasPrefix(a, "-") {
			continue // a value, such as the file after --key
		}
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// progressBar draws done/total of a long audit walk on a terminal.
func progressBar(w io.Writer, phase, unit string) (func(done, total int64), func()) {
	start := time.Now()
	drawn := false
	update := func(done, total int64) {
		const width = 30
		filled := 0
		if total > 0 {
			filled = int(min(width, done*width/total))
		}
		fmt.Fprintf(w, "\r%-7s [%s%s] %d/%d %s  %s\x1b[K", phase, strings.Repeat("#", filled), strings.Repeat(".", width-filled),
			done, total, unit, time.Since(start).Round(time.Second))
		drawn = true
	}
	return update, func() {
		if drawn {
			fmt.Fprint(w, "\r\x1b[K")
		}
	}
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/rar"
)

// repeatFlag is a repeatable flag whose values may contain commas.
type repeatFlag []string

func (r *repeatFlag) String() string     { return strings.Join(*r, " ") }
func (r *repeatFlag) Set(v string) error { *r = append(*r, v); return nil }

// adminCmd runs one admin subcommand that touches no key material: it parses
// the shared configuration and the subcommand's own flags, opens the app
// (without the KEK), and calls do.
func adminCmd(ctx context.Context, name string, args []string, stdout, stderr io.Writer, getenv func(string) string,
	flags func(*flag.FlagSet), do func(ctx context.Context, a *app) error) error {
	return runAdmin(ctx, kindAdmin, name, args, stdout, stderr, getenv, flags, do)
}

// runAdmin is adminCmd for a subcommand of kind (kindKeys: one that needs
// the KEK).
func runAdmin(ctx context.Context, kind cmdKind, name string, args []string, stdout, stderr io.Writer, getenv func(string) string,
	flags func(*flag.FlagSet), do func(ctx context.Context, a *app) error) error {
	cfg, err := loadConfig(name, args, stdout, getenv, kind, flags)
	if err != nil {
		return err
	}
	if cfg.LogLevel == "info" {
		cfg.LogLevel = "warn" // admin commands print results, not progress
	}
	a, closeApp, err := openApp(ctx, cfg, newLogger(cfg, stderr))
	if err != nil {
		return err
	}
	defer closeApp()
	return do(ctx, a)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// domainError turns invalid input and conflicts from the domain into a usage
// error (exit 2), printed without the package prefixes.
func domainError(err error) error {
	if errors.Is(err, approvals.ErrInvalidInput) || errors.Is(err, approvals.ErrConflict) {
		return errUsage{errors.New(strings.ReplaceAll(err.Error(), "approvals: ", ""))}
	}
	return err
}

func agentsCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return errUsage{fmt.Errorf("agents: want add, list, rotate-secret, suspend or resume")}
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "add":
		var n approvals.NewAgent
		var types repeatedFlag
		var labels repeatFlag
		var jwksFile string
		var asJSON bool
		return adminCmd(ctx, "agents add", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.StringVar(&n.Name, "name", "", "the agent's name, shown to approvers (required)")
			fs.StringVar(&n.Domain, "domain", "", "the agent's homepage domain, shown as registered by your admin (required)")
			fs.Var(&types, "types", "request types the agent may ask for, comma-separated (required)")
			fs.Var(&labels, "label", "a label key=value (repeatable), visible to risk rules")
			fs.StringVar(&n.DeliveryMode, "delivery", "poll", "token delivery mode: poll or ping")
			fs.StringVar(&n.NotifyURL, "notify-url", "", "client_notification_endpoint for ping delivery")
			fs.StringVar(&n.AuthMethod, "auth", approvals.AuthClientSecretBasic, "client authentication: client_secret_basic, client_secret_post or private_key_jwt")
			fs.StringVar(&jwksFile, "jwks-file", "", "private_key_jwt: a file with the agent's public JWKS")
			fs.StringVar(&n.JWKSURL, "jwks-url", "", "private_key_jwt: the URL of the agent's public JWKS")
			fs.StringVar(&n.IDTokenAlg, "id-token-alg", "ES256", "ID token signing algorithm: ES256 or RS256")
			fs.BoolVar(&asJSON, "json", false, "print the created agent as JSON, secret included")
		}, func(ctx context.Context, a *app) error {
			n.Types = types
			n.Labels = map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return errUsage{fmt.Errorf("--label %q: want key=value", l)}
				}
				n.Labels[k] = v
			}
			if jwksFile != "" {
				b, err := os.ReadFile(jwksFile)
				if err != nil {
					return errUsage{fmt.Errorf("--jwks-file: %v", unwrapPathError(err))}
				}
				n.JWKS = b
			}
			if err := checkTypes(ctx, a, types); err != nil {
				return err
			}
			agent, secret, err := a.svc.Store().CreateAgent(ctx, n)
			if err != nil {
				return domainError(err)
			}
			if asJSON {
				return printJSON(stdout, struct {
					approvals.Agent
					ClientSecret string `json:"client_secret,omitempty"`
				}{agent, secret})
			}
			fmt.Fprintf(stdout, "Agent %q registered.\n  client_id:     %s\n", agent.Name, agent.ID)
			if secret != "" {
				fmt.Fprintf(stdout, "  client_secret: %s\n  (shown once: store it now)\n", secret)
			}
			return nil
		})
	case "list":
		var asJSON bool
		return adminCmd(ctx, "agents list", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		}, func(ctx context.Context, a *app) error {
			agents, err := a.svc.Store().Agents(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(stdout, agents)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CLIENT_ID\tNAME\tDOMAIN\tTYPES\tDELIVERY\tSTATUS")
			for _, ag := range agents {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ag.ID, ag.Name, ag.Domain, strings.Join(ag.Types, ","), ag.DeliveryMode, ag.Status)
			}
			return tw.Flush()
		})
	case "rotate-secret", "suspend", "resume":
		var asJSON bool
		var id string
		return adminCmd(ctx, "agents "+sub, args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.StringVar(&id, "client-id", "", "the agent's client_id (required)")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		}, func(ctx context.Context, a *app) error {
			if id == "" {
				return errUsage{fmt.Errorf("agents %s: --client-id is required", sub)}
			}
			switch sub {
			case "rotate-secret":
				secret, err := a.svc.Store().RotateAgentSecret(ctx, id)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(stdout, map[string]string{"client_id": id, "client_secret": secret})
				}
				fmt.Fprintf(stdout, "New secret for %s: %s\n(shown once; the old secret no longer works)\n", id, secret)
				return nil
			default:
				status := map[string]string{"suspend": "suspended", "resume": "active"}[sub]
				if err := a.svc.Store().SetAgentStatus(ctx, id, status); err != nil {
					return err
				}
				if asJSON {
					return printJSON(stdout, map[string]string{"client_id": id, "status": status})
				}
				fmt.Fprintf(stdout, "Agent %s is now %s.\n", id, status)
				return nil
			}
		})
	}
	return errUsage{fmt.Errorf("agents: unknown subcommand %q (want add, list, rotate-secret, suspend or resume)", sub)}
}

// checkTypes refuses to register a client for types that do not exist.
func checkTypes(ctx context.Context, a *app, types []string) error {
	_, versions, err := a.svc.Types().Registry(ctx)
	if err != nil {
		return err
	}
	for _, t := range types {
		if _, ok := versions[t]; !ok {
			return errUsage{fmt.Errorf("request type %q is not registered (countersign types apply -f FILE)", t)}
		}
	}
	return nil
}

func usersCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return errUsage{fmt.Errorf("users: want add, invite, list, suspend or resume")}
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "add":
		var n approvals.NewUser
		var roles, groups repeatedFlag
		var asJSON bool
		return adminCmd(ctx, "users add", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.StringVar(&n.Email, "email", "", "the user's email address (required)")
			fs.StringVar(&n.Name, "name", "", "display name")
			fs.Var(&roles, "role", "a role (repeatable)")
			fs.Var(&groups, "group", "a group (repeatable)")
			fs.StringVar(&n.UserCode, "user-code", "", "a user code every request for this user must carry")
			fs.BoolVar(&asJSON, "json", false, "print the created user as JSON")
		}, func(ctx context.Context, a *app) error {
			n.Roles, n.Groups = roles, groups
			u, err := a.svc.Store().CreateUser(ctx, n)
			if err != nil {
				return domainError(err)
			}
			if asJSON {
				return printJSON(stdout, u)
			}
			fmt.Fprintf(stdout, "User %s created (id %s).\n", u.Email, u.ID)
			return nil
		})
	case "invite":
		var email, name string
		var asJSON bool
		return adminCmd(ctx, "users invite", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.StringVar(&email, "email", "", "the user's email address (required); the user is created if there is none")
			fs.StringVar(&name, "name", "", "display name of a user created now")
			fs.BoolVar(&asJSON, "json", false, `print {"user_id", "email", "enrollment_url", "expires_at"}`)
		}, func(ctx context.Context, a *app) error {
			if email == "" {
				return errUsage{fmt.Errorf("users invite: --email is required")}
			}
			u, l, err := a.svc.Store().InviteUser(ctx, email, name)
			if err != nil {
				return domainError(err)
			}
			link := issuer(a.cfg) + "/enroll/" + l.Token
			if asJSON {
				return printJSON(stdout, map[string]any{"user_id": u.ID, "email": u.Email, "enrollment_url": link,
					"expires_at": l.ExpiresAt.UTC().Format(time.RFC3339)})
			}
			fmt.Fprintf(stdout, "Enrollment link for %s (one use, until %s):\n  %s\n", u.Email, l.ExpiresAt.UTC().Format(time.RFC3339), link)
			return nil
		})
	case "list":
		var asJSON bool
		return adminCmd(ctx, "users list", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		}, func(ctx context.Context, a *app) error {
			users, err := a.svc.Store().Users(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(stdout, users)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tEMAIL\tNAME\tROLES\tGROUPS\tSTATUS")
			for _, u := range users {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", u.ID, u.Email, u.Name, strings.Join(u.Roles, ","), strings.Join(u.Groups, ","), u.Status)
			}
			return tw.Flush()
		})
	case "suspend", "resume":
		var who string
		return adminCmd(ctx, "users "+sub, args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.StringVar(&who, "user", "", "the user's id or email (required)")
		}, func(ctx context.Context, a *app) error {
			if who == "" {
				return errUsage{fmt.Errorf("users %s: --user is required", sub)}
			}
			status := map[string]string{"suspend": "suspended", "resume": "active"}[sub]
			if err := a.svc.Store().SetUserStatus(ctx, who, status); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "User %s is now %s.\n", who, status)
			return nil
		})
	}
	return errUsage{fmt.Errorf("users: unknown subcommand %q (want add, invite, list, suspend or resume)", sub)}
}

func resourcesCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 || (args[0] != "add" && args[0] != "list") {
		return errUsage{fmt.Errorf("resources: want add or list")}
	}
	sub, args := args[0], args[1:]
	var asJSON bool
	if sub == "list" {
		return adminCmd(ctx, "resources list", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		}, func(ctx context.Context, a *app) error {
			list, err := a.svc.Store().ResourceServers(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(stdout, list)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CLIENT_ID\tNAME\tAUDIENCE\tTYPES\tSTATUS")
			for _, r := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, r.Audience, strings.Join(r.Types, ","), r.Status)
			}
			return tw.Flush()
		})
	}
	var n approvals.NewResourceServer
	var types repeatedFlag
	return adminCmd(ctx, "resources add", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
		fs.StringVar(&n.Name, "name", "", "the resource server's name (required)")
		fs.StringVar(&n.Audience, "audience", "", "its audience URI, as tokens name it in aud (required)")
		fs.Var(&types, "types", "request types it executes, comma-separated: their tokens carry its audience by default")
		fs.BoolVar(&asJSON, "json", false, "print the created resource server as JSON, secret included")
	}, func(ctx context.Context, a *app) error {
		n.Types = types
		if len(types) > 0 {
			if err := checkTypes(ctx, a, types); err != nil {
				return err
			}
		}
		rs, secret, err := a.svc.Store().CreateResourceServer(ctx, n)
		if err != nil {
			return domainError(err)
		}
		if asJSON {
			return printJSON(stdout, struct {
				approvals.ResourceServer
				ClientSecret string `json:"client_secret"`
			}{rs, secret})
		}
		fmt.Fprintf(stdout, "Resource server %q registered.\n  client_id:     %s\n  client_secret: %s\n  (shown once: store it now)\n", rs.Name, rs.ID, secret)
		return nil
	})
}

func typesCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 || args[0] != "apply" {
		return errUsage{fmt.Errorf("types: want apply -f FILE|DIR")}
	}
	var path string
	var asJSON bool
	return adminCmd(ctx, "types apply", args[1:], stdout, stderr, getenv, func(fs *flag.FlagSet) {
		fs.StringVar(&path, "f", "", "a type file, or a directory of them (*.yaml, *.yml, *.json) (required)")
		fs.BoolVar(&asJSON, "json", false, "print the changes as JSON")
	}, func(ctx context.Context, a *app) error {
		if path == "" {
			return errUsage{fmt.Errorf("types apply: -f FILE|DIR is required")}
		}
		types, err := readTypeFiles(path)
		if err != nil {
			return errUsage{err}
		}
		changes, err := a.svc.Types().Apply(ctx, types)
		if err != nil {
			return errUsage{fmt.Errorf("types apply: %w (nothing was applied)", err)}
		}
		if asJSON {
			return printJSON(stdout, changes)
		}
		changed := 0
		for _, c := range changes {
			if c.Action != "unchanged" {
				changed++
			}
			fmt.Fprintf(stdout, "%-9s %s (version %d)\n", c.Action, c.Name, c.Version)
		}
		if changed == 0 {
			fmt.Fprintln(stdout, "no change")
		}
		return nil
	})
}

// readTypeFiles reads one type file, or every type file in a directory.
func readTypeFiles(path string) ([]rar.Type, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("-f %s: %v", path, unwrapPathError(err))
	}
	files := []string{path}
	if fi.IsDir() {
		files = nil
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("-f %s: %v", path, unwrapPathError(err))
		}
		for _, e := range entries {
			if ext := filepath.Ext(e.Name()); !e.IsDir() && slices.Contains([]string{".yaml", ".yml", ".json"}, ext) {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("-f: no type files (*.yaml, *.yml, *.json) in %s", path)
		}
	}
	var out []rar.Type
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", f, unwrapPathError(err))
		}
		t, err := rar.ParseTypeFile(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, t)
	}
	return out, nil
}

func keysCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 || (args[0] != "rotate" && args[0] != "list") {
		return errUsage{fmt.Errorf("keys: want rotate or list")}
	}
	sub := args[0]
	// Rotating seals new private keys under the KEK; listing reads none.
	kind := kindAdmin
	if sub == "rotate" {
		kind = kindKeys
	}
	var asJSON, now, force bool
	return runAdmin(ctx, kind, "keys "+sub, args[1:], stdout, stderr, getenv, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		if sub == "rotate" {
			fs.BoolVar(&now, "now", false, "make the new keys current at once instead of publishing them first (resource servers that cached the JWKS meet an unknown kid)")
			fs.BoolVar(&force, "force", false, "with --now: rotate even if tokens signed with the keys it retires may still be live")
		}
	}, func(ctx context.Context, a *app) error {
		var keys []approvals.KeyInfo
		var err error
		switch {
		case sub == "rotate" && now:
			if err := rotationIsSafe(ctx, a); err != nil && !force {
				return errUsage{err}
			}
			keys, err = a.svc.Keys().Rotate(ctx)
		case sub == "rotate":
			keys, err = a.svc.Keys().Prepare(ctx)
		default:
			keys, err = a.svc.Store().SigningKeys(ctx)
		}
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, keys)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KID\tALG\tSTATUS\tCREATED\tACTIVE FROM")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.KID, k.Alg, k.Status,
				k.CreatedAt.Format("2006-01-02 15:04:05Z07:00"), k.ActivatesAt.Format("2006-01-02 15:04:05Z07:00"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if sub == "rotate" && !now && len(keys) > 0 {
			fmt.Fprintf(stdout, "The new keys are published in the JWKS now and sign tokens from %s (a running server makes them current).\n",
				keys[0].ActivatesAt.Format("2006-01-02 15:04:05Z07:00"))
		}
		return nil
	})
}

// rotationIsSafe refuses a rotation that would retire keys which may still
// have signed live tokens: the previous keys are retired by the next
// rotation, so the current ones must have been current for a whole token
// lifetime first.
func rotationIsSafe(ctx context.Context, a *app) error {
	keys, err := a.svc.Keys().List(ctx)
	if err != nil {
		return err
	}
	hasPrevious := false
	var newest time.Time
	for _, k := range keys {
		switch k.Status {
		case approvals.KeyPrevious:
			hasPrevious = true
		case approvals.KeyCurrent:
			if k.CreatedAt.After(newest) {
				newest = k.CreatedAt
			}
		}
	}
	if age := time.Since(newest); hasPrevious && age < approvals.DefaultTokenTTL {
		return fmt.Errorf("keys rotate: the last rotation was %s ago; rotating again before %s would retire keys that may have signed live tokens (use --force to rotate anyway, or rotate without --now)",
			age.Round(time.Second), approvals.DefaultTokenTTL)
	}
	return nil
}

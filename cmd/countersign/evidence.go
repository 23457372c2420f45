package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/countersign/countersign/approvals"
)

func evidenceCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 || args[0] != "verify" {
		return errUsage{errors.New("evidence: want verify REQUEST_ID")}
	}
	id, args := requestIDArg(args[1:])
	if id == "" && !slices.ContainsFunc(args, func(a string) bool { return strings.TrimLeft(a, "-") == "h" || strings.TrimLeft(a, "-") == "help" }) {
		return errUsage{errors.New("evidence verify: want a REQUEST_ID (countersign evidence verify REQUEST_ID [flags])")}
	}
	var asJSON bool
	return adminCmd(ctx, "evidence verify", args, stdout, stderr, getenv, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	}, func(ctx context.Context, a *app) error {
		if a.cfg.Issuer == "" && !a.cfg.Dev {
			return errUsage{errors.New("evidence verify: no issuer: set --issuer (COUNTERSIGN_ISSUER) to the server's public URL; the relying party id and origin come from it")}
		}
		rpID, origin, err := relyingParty(a.svc.Issuer())
		if err != nil {
			return errUsage{err}
		}
		list, err := a.svc.Store().VerifyStoredEvidence(ctx, id, rpID, []string{origin})
		if errors.Is(err, approvals.ErrNotFound) {
			return fmt.Errorf("evidence verify: there is no request %s", id)
		}
		if err != nil {
			return domainError(err)
		}
		rep := newEvidenceOutput(id, rpID, origin, list)
		if asJSON {
			if err := printJSON(stdout, rep); err != nil {
				return err
			}
		} else if err := rep.print(stdout); err != nil {
			return err
		}
		if rep.Error != "" {
			return errors.New(rep.Error)
		}
		return nil
	})
}

// requestIDArg takes the REQUEST_ID out of args, given before the flags or
// after them: the flag package stops at the first argument that is not a
// flag.
func requestIDArg(args []string) (id string, flags []string) {
	switch {
	case len(args) > 0 && !strings.HasPrefix(args[0], "-"):
		return args[0], args[1:]
	case len(args) > 0 && !strings.HasPrefix(args[len(args)-1], "-"):
		return args[len(args)-1], args[:len(args)-1]
	}
	return "", args
}

// relyingParty derives the WebAuthn relying party from the issuer, as the
// approver pages use it: the RP ID is the issuer's host (WebAuthn Level 3
// §5.1.2: a valid domain string, no scheme or port) and the origin its
// scheme://host[:port].
func relyingParty(issuer string) (rpID, origin string, err error) {
	u, err := url.Parse(issuer)
	if err != nil || u.Hostname() == "" {
		return "", "", fmt.Errorf("evidence verify: --issuer %q is not a URL with a host", issuer)
	}
	return u.Hostname(), u.Scheme + "://" + u.Host, nil
}

// evidenceOutput is the report of evidence verify, as --json prints it.
type evidenceOutput struct {
	RequestID string          `json:"request_id"`
	RPID      string          `json:"rp_id"`
	Origin    string          `json:"origin"`
	OK        bool            `json:"ok"`
	Error     string          `json:"error,omitempty"` // the first failure, when not OK
	Evidence  []evidenceEntry `json:"evidence"`
}

type evidenceEntry struct {
	ID           int64                     `json:"id"`
	UserID       string                    `json:"user_id"`
	CredentialID string                    `json:"credential_id"` // base64url
	DetailsHash  string                    `json:"details_hash"`
	CreatedAt    time.Time                 `json:"created_at"`
	OK           bool                      `json:"ok"`
	Error        string                    `json:"error,omitempty"`
	AMR          []string                  `json:"amr,omitempty"`
	Checks       []approvals.EvidenceCheck `json:"checks"`
}

func newEvidenceOutput(requestID, rpID, origin string, list []approvals.StoredEvidence) evidenceOutput {
	out := evidenceOutput{RequestID: requestID, RPID: rpID, Origin: origin, OK: len(list) > 0, Evidence: []evidenceEntry{}}
	if len(list) == 0 {
		out.Error = fmt.Sprintf("request %s has no step-up evidence: no approval of it with a passkey step-up is recorded", requestID)
	}
	for _, se := range list {
		e := se.Evidence
		entry := evidenceEntry{ID: e.ID, UserID: e.UserID, CredentialID: base64.RawURLEncoding.EncodeToString(e.CredentialID),
			DetailsHash: e.DetailsHash, CreatedAt: se.CreatedAt, OK: se.Report.OK(), AMR: se.AMR, Checks: se.Report.Checks}
		var ee *approvals.EvidenceError
		if errors.As(se.Report.Err(), &ee) {
			entry.Error = fmt.Sprintf("%s: %s", ee.Check, ee.Detail)
			if out.OK {
				out.OK = false
				out.Error = fmt.Sprintf("evidence %d (by %s) fails its %s check: %s", e.ID, e.UserID, ee.Check, ee.Detail)
			}
		}
		out.Evidence = append(out.Evidence, entry)
	}
	return out
}

func (o evidenceOutput) print(w io.Writer) error {
	fmt.Fprintf(w, "Step-up evidence of request %s (rp id %s, origin %s), newest first:\n", o.RequestID, o.RPID, o.Origin)
	for _, e := range o.Evidence {
		fmt.Fprintf(w, "\nEvidence %d by %s, %s, credential %s\n", e.ID, e.UserID, e.CreatedAt.UTC().Format(time.RFC3339), e.CredentialID)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, c := range e.Checks {
			mark := "✓"
			if !c.OK {
				mark = "✗"
			}
			fmt.Fprintf(tw, "  %s %s\t%s\n", mark, c.Name, c.Detail)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if e.OK {
			fmt.Fprintf(w, "  verifies; amr %s\n", strings.Join(e.AMR, " "))
		}
	}
	if o.OK {
		fmt.Fprintf(w, "\nAll %d verify.\n", len(o.Evidence))
	}
	return nil
}

// Command agent is an example agent: it asks Countersign for approval to
// pay an invoice, prints the binding message and the approval URL, waits
// for the decision and prints the outcome. Run it against the dev server:
//
//	go tool task dev     # prints the demo agent's client_id and client_secret
//	go run ./examples/agent --client-id ID --client-secret SECRET
//
// Exit status: 0 approved, 1 denied, expired or failed, 2 bad flags.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/countersign/countersign/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	var usage usageError
	switch {
	case errors.As(err, &usage):
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(2)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

// invoice is what the agent wants to pay.
type invoice struct {
	Number, Amount, Currency, Creditor, IBAN string
}

// details are the invoice as one payment_initiation element (RFC 9396 §2),
// the demo type of examples/demo/types.
func (inv invoice) details() any {
	return []map[string]any{{
		"type":                  "payment_initiation",
		"instructedAmount":      map[string]string{"currency": inv.Currency, "amount": inv.Amount},
		"creditorName":          inv.Creditor,
		"creditorAccount":       map[string]string{"iban": inv.IBAN},
		"remittanceInformation": "Invoice " + inv.Number,
	}}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	issuer := fs.String("issuer", envOr("COUNTERSIGN_ISSUER", "http://localhost:8080"), "Countersign's issuer URL")
	clientID := fs.String("client-id", os.Getenv("COUNTERSIGN_CLIENT_ID"), "the agent's client_id")
	secret := fs.String("client-secret", os.Getenv("COUNTERSIGN_CLIENT_SECRET"), "the agent's client_secret")
	user := fs.String("user", "alice@example.com", "who approves: the user's email or id")
	var inv invoice
	fs.StringVar(&inv.Number, "invoice", "4711", "the invoice number")
	fs.StringVar(&inv.Amount, "amount", "250.00", "the amount, a decimal string")
	fs.StringVar(&inv.Currency, "currency", "EUR", "the currency (ISO 4217)")
	fs.StringVar(&inv.Creditor, "creditor", "ACME Supplies GmbH", "who is paid")
	fs.StringVar(&inv.IBAN, "iban", "DE89370400440532013000", "the creditor's IBAN")
	ping := fs.String("ping", "", "wait for ping callbacks on this address (such as 127.0.0.1:9999) instead of polling; the agent must be registered with --delivery ping --notify-url http://ADDRESS/")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up (and withdraw the request) after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *clientID == "" || *secret == "" {
		return usageError{errors.New("--client-id and --client-secret are required (go tool task dev prints the demo agent's)")}
	}
	cfg := client.Config{Issuer: *issuer, ClientID: *clientID, ClientSecret: *secret}
	if *ping != "" {
		p, err := client.ListenPing(*ping)
		if err != nil {
			return err
		}
		defer p.Close()
		cfg.Ping = p
	}
	c, err := client.New(cfg)
	if err != nil {
		return usageError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	fmt.Fprintf(stdout, "Asking to pay %s %s to %s (invoice %s)\n", inv.Amount, inv.Currency, inv.Creditor, inv.Number)
	tok, err := c.RequestApproval(ctx, inv.details(), client.RequestOptions{
		LoginHint:      *user,
		BindingMessage: "Invoice " + inv.Number,
		OnPending: func(p client.Pending) {
			fmt.Fprintf(stdout, "Binding message: %s\n", p.BindingMessage)
			fmt.Fprintf(stdout, "Approve at: %s\n", p.ApprovalURL)
			fmt.Fprintf(stdout, "Waiting for the decision (until %s)…\n", p.ExpiresAt.Format(time.TimeOnly))
		},
	})
	var denied *client.DeniedError
	var invalid *client.InvalidDetailsError
	switch {
	case err == nil:
	case errors.As(err, &denied):
		fmt.Fprintf(stdout, "Denied: %s\n", denied.Reason)
		return errors.New("the payment was not approved")
	case errors.Is(err, client.ErrExpired):
		fmt.Fprintln(stdout, "Expired: nobody decided in time")
		return errors.New("the payment was not approved")
	case errors.As(err, &invalid):
		return fmt.Errorf("the request was refused: field %s of element %d: %s %s", invalid.Path, invalid.Index, invalid.Rule, invalid.Message)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		fmt.Fprintln(stdout, "Stopped waiting; the request was withdrawn")
		return err
	default:
		return err
	}
	var claims struct {
		Txn string `json:"txn"`
		ACR string `json:"acr"`
	}
	_ = json.Unmarshal(tokenPayload(tok.AccessToken), &claims)
	fmt.Fprintf(stdout, "Approved (%s): request %s, single-use token valid for %d s:\n%s\n", claims.ACR, claims.Txn, tok.ExpiresIn, tok.AccessToken)
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

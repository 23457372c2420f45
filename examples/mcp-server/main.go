// Command mcp-server is an example MCP server whose transfer_funds tool is
// gated by Countersign (package mcpgate) and whose get_balance tool is not.
// Run it against the dev server:
//
//	go tool task dev     # prints the demo agent's and resource server's credentials
//	go run ./examples/mcp-server --client-id ID --client-secret SECRET --rs-client-id RS --rs-client-secret RSSECRET
//
// By default it speaks MCP on stdin and stdout, for a client that starts
// it; with --transport http it serves streamable HTTP on --addr at /mcp.
// Exit status: 0 stopped by a signal, 1 failed, 2 bad flags.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/countersign/countersign/client"
	"github.com/countersign/countersign/mcpgate"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	var usage usageError
	switch {
	case errors.As(err, &usage):
		fmt.Fprintln(os.Stderr, "mcp-server:", err)
		os.Exit(2)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case err != nil && !errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "mcp-server:", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

// stateKeyEnv names the environment variable with the requestState key,
// 64 hex digits; without it the key is random, so requestStates do not
// survive a restart.
const stateKeyEnv = "COUNTERSIGN_MCP_STATE_KEY"

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mcp-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	transport := fs.String("transport", "stdio", "stdio, or http for streamable HTTP")
	addr := fs.String("addr", "127.0.0.1:8090", "with --transport http: where to listen (the endpoint is /mcp)")
	stateless := fs.Bool("stateless", false, "with --transport http: stateless streamable HTTP (2025-11-25 clients then get error -32042 instead of elicitation/create)")
	issuer := fs.String("issuer", envOr("COUNTERSIGN_ISSUER", "http://localhost:8080"), "Countersign's issuer URL")
	clientID := fs.String("client-id", os.Getenv("COUNTERSIGN_CLIENT_ID"), "the MCP server's agent client_id")
	secret := fs.String("client-secret", os.Getenv("COUNTERSIGN_CLIENT_SECRET"), "the MCP server's agent client_secret")
	rsID := fs.String("rs-client-id", os.Getenv("COUNTERSIGN_RS_CLIENT_ID"), "the resource server's client_id, to redeem tokens")
	rsSecret := fs.String("rs-client-secret", os.Getenv("COUNTERSIGN_RS_CLIENT_SECRET"), "the resource server's client_secret")
	user := fs.String("user", envOr("COUNTERSIGN_USER", "alice@example.com"), "who approves calls: the user's email or id")
	balance := fs.String("balance", "12500.00", "the account's opening balance in EUR")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *clientID == "" || *secret == "" || *rsID == "" || *rsSecret == "" {
		return usageError{errors.New("--client-id, --client-secret, --rs-client-id and --rs-client-secret are required (go tool task dev prints the demo agent's and resource server's)")}
	}
	if *transport != "stdio" && *transport != "http" {
		return usageError{fmt.Errorf("--transport %q: want stdio or http", *transport)}
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	key, err := stateKey(log)
	if err != nil {
		return usageError{err}
	}
	acct, err := newAccount(*balance)
	if err != nil {
		return usageError{err}
	}
	c, err := client.New(client.Config{Issuer: *issuer, ClientID: *clientID, ClientSecret: *secret})
	if err != nil {
		return usageError{err}
	}
	r, err := client.NewRedeemer(client.RedeemerConfig{Issuer: *issuer, ClientID: *rsID, ClientSecret: *rsSecret})
	if err != nil {
		return usageError{err}
	}
	gate, err := mcpgate.New(mcpgate.Config{Client: c, Redeem: r.Redeem, StateKey: key, DefaultUser: *user,
		Stateless: *transport == "http" && *stateless})
	if err != nil {
		return err
	}
	server := newServer(gate, acct)

	if *transport == "stdio" {
		log.Info("serving MCP on stdin and stdout", "issuer", *issuer, "user", *user)
		return server.Run(ctx, &mcp.IOTransport{Reader: io.NopCloser(stdin), Writer: nopWriteCloser{stdout}})
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{Stateless: *stateless}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("serving MCP over streamable HTTP", "url", "http://"+ln.Addr().String()+"/mcp", "stateless", *stateless, "issuer", *issuer, "user", *user)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return ctx.Err()
}

// stateKey reads the requestState key from the environment, or makes one.
func stateKey(log *slog.Logger) ([]byte, error) {
	if v := os.Getenv(stateKeyEnv); v != "" {
		key, err := hex.DecodeString(v)
		if err != nil || len(key) < 32 {
			return nil, fmt.Errorf("%s must be at least 64 hex digits (32 bytes)", stateKeyEnv)
		}
		return key, nil
	}
	log.Info("no " + stateKeyEnv + ": using a random requestState key, so pending approvals do not survive a restart")
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (Go 1.24)
	return key, nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

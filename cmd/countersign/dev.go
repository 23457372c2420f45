package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/examples/demo"
)

// Demo identities that `serve --dev` creates.
const (
	demoUserEmail  = "alice@example.com"
	demoAgentName  = "Demo agent"
	demoAudience   = "https://api.example.com"
	demoRSName     = "Demo API"
	demoDetailsStr = `[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"500.00"},"creditorName":"Alice Smith","creditorAccount":{"iban":"DE89370400440532013000"},"remittanceInformation":"Invoice 4711"}]`
)

// seedDemo loads the demo types and creates the demo user, agent and resource
// server unless they exist. The agent's and resource server's secrets are
// rotated on every start, since only their hashes are kept, and printed with
// a command that makes the agent ask for approval.
func seedDemo(ctx context.Context, a *app, w io.Writer) error {
	types, err := demo.TypeDefinitions()
	if err != nil {
		return err
	}
	if _, err := a.svc.Types().Apply(ctx, types); err != nil {
		return fmt.Errorf("demo types: %w", err)
	}
	// The demo thresholds, unless an admin has published their own.
	if _, v, err := a.svc.Policies().Current(ctx); err != nil {
		return err
	} else if v == 0 {
		if _, err := a.svc.Policies().Apply(ctx, "examples/demo/policy.yaml", demo.Policy()); err != nil {
			return fmt.Errorf("demo policy: %w", err)
		}
	}
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = t.Name
	}

	store := a.svc.Store()
	user, err := store.UserByHint(ctx, demoUserEmail)
	if errors.Is(err, approvals.ErrNotFound) {
		if user, err = store.CreateUser(ctx, approvals.NewUser{Email: demoUserEmail, Name: "Alice (demo)", Groups: []string{"maintainers"}}); err != nil {
			return fmt.Errorf("demo user: %w", err)
		}
	} else if err != nil {
		return err
	}
	// A fresh enrollment link at every start (a passkey can be added to the
	// demo user any time), and a one-time sign-in link for browsers
	// without a passkey provider.
	_, enroll, err := store.InviteUser(ctx, demoUserEmail, "")
	if err != nil {
		return fmt.Errorf("demo user: %w", err)
	}
	signInLine := "(not with an issuer outside this machine: " + a.svc.Issuer() + ")"
	if devLinks(a.cfg, a.svc.Issuer()) {
		signIn, err := store.SignInLink(ctx, user.ID)
		if err != nil {
			return fmt.Errorf("demo user: %w", err)
		}
		signInLine = a.svc.Issuer() + "/signin/link/" + signIn.Token
	}

	agentID, agentSecret, err := demoAgent(ctx, store, names)
	if err != nil {
		return err
	}
	rsID, rsSecret, err := demoResourceServer(ctx, store, names)
	if err != nil {
		return err
	}

	base := a.svc.Issuer()
	fmt.Fprintf(w, `
Countersign dev server: %[1]s
  demo user:            %[2]s
  demo agent:           client_id %[3]s  client_secret %[4]s
  demo resource server: client_id %[5]s  client_secret %[6]s  (audience %[7]s)

Enroll the demo user's passkey, then approve in the inbox (%[1]s/):
  %[9]s
No passkey provider in this browser? Dev only, one use, 15 minutes (step-up still needs a passkey):
  %[10]s

Ask for approval as the demo agent:
  curl -s -u '%[3]s:%[4]s' %[1]s/bc-authorize -d scope=openid -d login_hint=%[2]s \
    --data-urlencode 'binding_message=Invoice 4711' \
    --data-urlencode 'authorization_details=%[8]s'
Then poll with the auth_req_id it returns (every "interval" seconds):
  curl -s -u '%[3]s:%[4]s' %[1]s/token -d grant_type=urn:openid:params:grant-type:ciba -d auth_req_id=AUTH_REQ_ID
Or let the example agent (examples/agent, the Go SDK) ask and wait:
  go run ./examples/agent --issuer %[1]s --client-id %[3]s --client-secret '%[4]s' --user %[2]s
Or serve MCP tools gated by Countersign (examples/mcp-server; add --transport http for streamable HTTP on :8090/mcp):
  go run ./examples/mcp-server --issuer %[1]s --client-id %[3]s --client-secret '%[4]s' --rs-client-id %[5]s --rs-client-secret '%[6]s' --user %[2]s

`, base, demoUserEmail, agentID, agentSecret, rsID, rsSecret, demoAudience, demoDetailsStr,
		base+"/enroll/"+enroll.Token, signInLine)
	return nil
}

func demoAgent(ctx context.Context, store *approvals.Store, types []string) (string, string, error) {
	agents, err := store.Agents(ctx)
	if err != nil {
		return "", "", err
	}
	for _, ag := range agents {
		if ag.Name == demoAgentName {
			secret, err := store.RotateAgentSecret(ctx, ag.ID)
			return ag.ID, secret, err
		}
	}
	ag, secret, err := store.CreateAgent(ctx, approvals.NewAgent{Name: demoAgentName, Domain: "agent.example.com", Types: types,
		Labels: map[string]string{"env": "dev"}})
	if err != nil {
		return "", "", fmt.Errorf("demo agent: %w", err)
	}
	return ag.ID, secret, nil
}

func demoResourceServer(ctx context.Context, store *approvals.Store, types []string) (string, string, error) {
	list, err := store.ResourceServers(ctx)
	if err != nil {
		return "", "", err
	}
	for _, rs := range list {
		if rs.Audience == demoAudience {
			secret, err := store.RotateResourceServerSecret(ctx, rs.ID)
			return rs.ID, secret, err
		}
	}
	rs, secret, err := store.CreateResourceServer(ctx, approvals.NewResourceServer{Name: demoRSName, Audience: demoAudience, Types: types})
	if err != nil {
		return "", "", fmt.Errorf("demo resource server: %w", err)
	}
	return rs.ID, secret, nil
}

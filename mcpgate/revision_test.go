package mcpgate

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestFormFor(t *testing.T) {
	url := &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{URL: &mcp.URLElicitationCapabilities{}}}
	formOnly := &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}}}
	none := &mcp.ClientCapabilities{}
	cases := []struct {
		revision   string
		caps       *mcp.ClientCapabilities
		canRequest bool
		want       form
	}{
		{rev20260728, url, true, formInputRequired},
		{rev20260728, url, false, formInputRequired},
		{rev20260728, formOnly, true, formToolError},
		{rev20260728, nil, true, formToolError},
		{rev20251125, url, true, formElicit},
		{rev20251125, url, false, formURLRequired},
		{rev20251125, nil, true, formURLRequired}, // a stateless transport's synthesized session
		{rev20251125, formOnly, true, formToolError},
		{rev20251125, none, true, formToolError},
		{rev20250618, url, true, formToolError}, // no URL mode before 2025-11-25
		{rev20250618, nil, true, formToolError},
		{rev20250326, none, true, formToolError},
		{rev20241105, none, true, formToolError},
	}
	for _, c := range cases {
		got, err := formFor(c.revision, c.caps, c.canRequest)
		if err != nil || got != c.want {
			t.Errorf("formFor(%s, %+v, %v) = %v, %v; want %v", c.revision, c.caps, c.canRequest, got, err, c.want)
		}
	}
	for _, rev := range []string{"", "2026-07-29", "2027-01-01", "2024-10-07", "latest"} {
		if f, err := formFor(rev, url, true); err == nil || !strings.Contains(err.Error(), "not one the gate knows") {
			t.Errorf("formFor(%q) = %v, %v; want it refused", rev, f, err)
		}
	}
}

// TestUnknownRevision: a session at a revision the gate does not know (one
// a later SDK might negotiate) gets an error; nobody is asked and the tool
// does not run.
func TestUnknownRevision(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := t.Context()
	st, ct := mcp.NewInMemoryTransports()
	caps := &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{URL: &mcp.URLElicitationCapabilities{}}}
	ss, err := e.server.Connect(ctx, st, &mcp.ServerSessionOptions{State: &mcp.ServerSessionState{
		InitializeParams:  &mcp.InitializeParams{ProtocolVersion: "2099-01-01", Capabilities: caps},
		InitializedParams: &mcp.InitializedParams{},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	conn, err := ct.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	id, _ := jsonrpc.MakeID(float64(1))
	if err := conn.Write(ctx, &jsonrpc.Request{ID: id, Method: "tools/call",
		Params: mustJSON(map[string]any{"name": "pay", "arguments": human})}); err != nil {
		t.Fatal(err)
	}
	msg, err := conn.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resp, ok := msg.(*jsonrpc.Response)
	if !ok || resp.Error != nil {
		t.Fatalf("answer %#v, want a tool error result", msg)
	}
	var res struct {
		IsError bool `json:"isError"`
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
	}
	if err := json.Unmarshal(resp.Result, &res); err != nil || !res.IsError || len(res.Content) != 1 ||
		!strings.Contains(res.Content[0].Text, `revision "2099-01-01" is not one the gate knows`) {
		t.Fatalf("result %s, want a tool error naming the revision", resp.Result)
	}
	e.wantRuns(0)
	e.wantRequests(0)
}

func TestCallDigest(t *testing.T) {
	a, err := callDigest("pay", json.RawMessage(`{"amount":"1.00","creditor":"ACME"}`))
	if err != nil {
		t.Fatal(err)
	}
	same, _ := callDigest("pay", json.RawMessage(" {\"creditor\": \"ACME\",\n \"amount\":\"1.00\"}"))
	if a != same {
		t.Error("the same arguments spelled differently have different digests")
	}
	for _, other := range []struct {
		tool, args string
	}{{"pay", `{"amount":"1.000","creditor":"ACME"}`}, {"pay", `{"amount":"1.00","creditor":"ACME","x":1}`}, {"pay2", `{"amount":"1.00","creditor":"ACME"}`}} {
		d, _ := callDigest(other.tool, json.RawMessage(other.args))
		if d == a {
			t.Errorf("%s %s has the digest of pay's call", other.tool, other.args)
		}
	}
	if _, err := callDigest("pay", json.RawMessage(`{"a":`)); err == nil {
		t.Error("broken arguments have a digest")
	}
}

func TestSeal(t *testing.T) {
	k := sealer{key: testKey}
	now := time.Unix(1_800_000_000, 0)
	s := state{AuthReqID: "req", User: "alice@example.com", Call: "digest", Expiry: now.Add(time.Minute).Unix(), ApprovalURL: "https://cs/approve/x", Binding: "MCP AAAA-BBBB", Interval: 5}
	raw := k.seal(s)
	if !strings.HasPrefix(raw, "v1.") {
		t.Fatalf("sealed %q, want the v1 encoding", raw)
	}
	got, err := k.open(raw, now)
	if err != nil || got != s {
		t.Fatalf("open = %+v, %v; want %+v", got, err, s)
	}
	if err := got.check("alice@example.com", "digest"); err != nil {
		t.Error(err)
	}
	if got.check("bob@example.com", "digest") == nil || got.check("alice@example.com", "other") == nil {
		t.Error("a state checks out for another user or call")
	}
	if _, err := k.open(raw, now.Add(time.Minute)); err != ErrStateExpired {
		t.Errorf("open at expiry: %v, want ErrStateExpired", err)
	}
	// Every byte of the payload is covered by the MAC.
	for i := len("v1."); i < len(raw); i++ {
		b := []byte(raw)
		b[i] ^= 0x01
		if _, err := k.open(string(b), now); err == nil {
			t.Fatalf("a state altered at byte %d opens", i)
		}
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/internal/interop"
	"github.com/countersign/countersign/internal/testserver"
)

// creds are the example's Countersign flags for a test server.
func creds(t *testing.T, cs *testserver.Server) []string {
	ag := cs.Agent(t, approvals.NewAgent{Name: "MCP server"})
	return []string{"--issuer", cs.URL, "--client-id", ag.ID, "--client-secret", ag.Secret,
		"--rs-client-id", cs.RS.ID, "--rs-client-secret", cs.RS.Secret, "--user", testserver.UserEmail}
}

// build compiles the example once per test binary.
var build = sync.OnceValues(func() (string, error) { return testserver.Build("mcp-server") })

func text(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// TestStdio starts the built example as a client would, over stdio, with
// the go-sdk client at its default revision (2026-07-28): get_balance runs
// ungated, a small transfer at once, a larger one after the user approved
// the URL the input_required result carried.
func TestStdio(t *testing.T) {
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	cs := testserver.New(t, testserver.Options{})
	cmd := exec.Command(bin, append(creds(t, cs), "--transport", "stdio")...)
	cmd.Stderr = os.Stderr
	var elicited []string
	c := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, &mcp.ClientOptions{
		Capabilities: &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{URL: &mcp.URLElicitationCapabilities{}}},
		ElicitationHandler: func(_ context.Context, r *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			elicited = append(elicited, r.Params.URL)
			if len(elicited) == 1 {
				cs.Approve(t, testserver.RequestID(r.Params.URL))
			}
			return &mcp.ElicitResult{Action: "accept"}, nil
		},
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v := s.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Errorf("negotiated %s, want 2026-07-28", v)
	}
	call := func(name string, args any) *mcp.CallToolResult {
		t.Helper()
		res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.IsError {
			t.Fatalf("%s: tool error %q", name, text(res))
		}
		return res
	}
	if got := text(call("get_balance", map[string]any{})); got != `{"balance":"12500.00","currency":"EUR"}` {
		t.Errorf("get_balance = %s", got)
	}
	transfer := func(amount string) map[string]any {
		return map[string]any{"amount": amount, "currency": "EUR", "creditor_name": "ACME Supplies GmbH", "creditor_iban": "DE89370400440532013000"}
	}
	if got := text(call("transfer_funds", transfer("40.00"))); !strings.Contains(got, `"balance":"12460.00"`) {
		t.Errorf("small transfer = %s", got)
	}
	if len(elicited) != 0 {
		t.Errorf("the allowed transfer asked the user: %v", elicited)
	}
	if got := text(call("transfer_funds", transfer("250.00"))); !strings.Contains(got, `"balance":"12210.00"`) {
		t.Errorf("approved transfer = %s", got)
	}
	if len(elicited) != 1 || !strings.HasPrefix(elicited[0], cs.URL+"/approve/") {
		t.Errorf("the user was asked %v, want once with the approval URL", elicited)
	}
}

// TestTypeScriptClient runs the example over streamable HTTP and drives it
// with the official TypeScript SDK (interop/mcp.mjs), which negotiates
// 2025-11-25: with URL elicitation the approval arrives as
// elicitation/create and ends with notifications/elicitation/complete;
// without, as a tool error with the URL, and the call again runs the tool;
// from a stateless server, as error -32042, and the call again runs it.
func TestTypeScriptClient(t *testing.T) {
	interop.Require(t)
	for _, mode := range []string{"elicit", "plain", "stateless"} {
		t.Run(mode, func(t *testing.T) {
			cs := testserver.New(t, testserver.Options{})
			args := creds(t, cs)
			if mode == "stateless" {
				args = append(args, "--stateless")
			}
			url := serveHTTP(t, args)
			n := startNode(t, mode, url)
			ev := n.next("connected")
			if ev["protocolVersion"] != "2025-11-25" {
				t.Errorf("the TypeScript client negotiated %v, want 2025-11-25", ev["protocolVersion"])
			}
			if ev := n.next("tools"); !sameJSON(ev["names"], []string{"get_balance", "transfer_funds"}) {
				t.Errorf("tools %v", ev["names"])
			}
			if ev := n.next("balance"); ev["text"] != `{"balance":"12500.00","currency":"EUR"}` {
				t.Errorf("balance %v", ev)
			}
			if ev := n.next("small"); ev["isError"] != false || !strings.Contains(ev["text"].(string), `"balance":"12460.00"`) {
				t.Errorf("small transfer %v", ev)
			}
			var requestID string
			if mode == "elicit" {
				ev := n.next("elicitation")
				u, _ := ev["url"].(string)
				if ev["mode"] != "url" || !strings.HasPrefix(u, cs.URL+"/approve/") || ev["elicitationId"] == "" ||
					!strings.Contains(ev["message"].(string), "transfer 250.00 EUR to ACME Supplies GmbH") {
					t.Fatalf("elicitation %v", ev)
				}
				requestID = testserver.RequestID(u)
				cs.Approve(t, requestID)
				if c := n.next("complete"); c["elicitationId"] != ev["elicitationId"] {
					t.Errorf("complete %v, want elicitationId %v", c, ev["elicitationId"])
				}
				if ev := n.next("large"); ev["isError"] != false || !strings.Contains(ev["text"].(string), `"balance":"12210.00"`) {
					t.Errorf("approved transfer %v", ev)
				}
			} else if mode == "stateless" {
				ev := n.next("large")
				var data struct {
					Elicitations []struct{ Mode, URL, ElicitationID, Message string }
				}
				_ = json.Unmarshal(mustJSON(ev["data"]), &data)
				if ev["code"] != float64(-32042) || len(data.Elicitations) != 1 || data.Elicitations[0].Mode != "url" ||
					!strings.HasPrefix(data.Elicitations[0].URL, cs.URL+"/approve/") || data.Elicitations[0].ElicitationID == "" {
					t.Fatalf("pending transfer %v, want error -32042 listing the URL elicitation", ev)
				}
				requestID = testserver.RequestID(data.Elicitations[0].URL)
				cs.Approve(t, requestID)
				n.send("approved")
				if ev := n.next("retry"); ev["isError"] != false || !strings.Contains(ev["text"].(string), `"balance":"12210.00"`) {
					t.Errorf("retried transfer %v", ev)
				}
			} else {
				ev := n.next("large")
				msg, _ := ev["text"].(string)
				u := regexp.MustCompile(regexp.QuoteMeta(cs.URL) + `/approve/[^ ;]+`).FindString(msg)
				if ev["isError"] != true || u == "" || !regexp.MustCompile(`binding message "MCP [A-Z0-9]{4}-[A-Z0-9]{4}"`).MatchString(msg) {
					t.Fatalf("pending transfer %v, want a tool error with the approval URL and binding message", ev)
				}
				requestID = testserver.RequestID(u)
				cs.Approve(t, requestID)
				n.send("approved")
				if ev := n.next("retry"); ev["isError"] != false || !strings.Contains(ev["text"].(string), `"balance":"12210.00"`) {
					t.Errorf("retried transfer %v", ev)
				}
			}
			if ev := n.next("balance"); ev["text"] != `{"balance":"12210.00","currency":"EUR"}` {
				t.Errorf("balance after %v", ev)
			}
			n.next("done")
			var count int
			if err := cs.DB.Get(&count, `SELECT count(*) FROM requests`); err != nil || count != 2 {
				t.Errorf("Countersign holds %d requests (%v), want 2: the small and the approved transfer", count, err)
			}
		})
	}
}

// serveHTTP runs the example in this process on streamable HTTP and
// returns its endpoint.
func serveHTTP(t *testing.T, args []string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append(args, "--transport", "http", "--addr", "127.0.0.1:0"), strings.NewReader(""), io.Discard, pw)
		pw.Close()
	}()
	t.Cleanup(func() { cancel(); <-done })
	lines := bufio.NewScanner(pr)
	re := regexp.MustCompile(`url=(http://\S+/mcp)`)
	for lines.Scan() {
		if m := re.FindStringSubmatch(lines.Text()); m != nil {
			go func() { _, _ = io.Copy(io.Discard, pr) }()
			return m[1]
		}
	}
	t.Fatalf("the example ended before it served: %v", <-done)
	return ""
}

// node is a running interop/mcp.mjs.
type node struct {
	t     *testing.T
	out   *bufio.Scanner
	in    io.WriteCloser
	lines []string
}

func startNode(t *testing.T, mode, url string) *node {
	t.Helper()
	// Not t.Context(): that ends before the cleanup that waits for node.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, "node", interop.Script("mcp.mjs"), mode)
	cmd.Env = append(os.Environ(), "MCP_URL="+url, "SMALL=40.00", "LARGE=250.00")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = 2 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		if err := cmd.Wait(); err != nil && !t.Failed() {
			t.Errorf("node: %v\n%s", err, stderr.String())
		}
		if t.Failed() {
			t.Logf("node stderr:\n%s", stderr.String())
		}
	})
	return &node{t: t, out: bufio.NewScanner(stdout), in: in}
}

// next reads the script's next event, which must be want.
func (n *node) next(want string) map[string]any {
	n.t.Helper()
	if !n.out.Scan() {
		n.t.Fatalf("the script ended before %s; it printed:\n%s", want, strings.Join(n.lines, "\n"))
	}
	n.lines = append(n.lines, n.out.Text())
	var ev map[string]any
	if err := json.Unmarshal(n.out.Bytes(), &ev); err != nil || ev["event"] != want {
		n.t.Fatalf("got %s, want the %s event", n.out.Bytes(), want)
	}
	return ev
}

func (n *node) send(line string) {
	if _, err := io.WriteString(n.in, line+"\n"); err != nil {
		n.t.Fatal(err)
	}
}

func sameJSON(a, b any) bool { return string(mustJSON(a)) == string(mustJSON(b)) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

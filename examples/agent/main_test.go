package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/internal/testserver"
)

// build compiles the example once per test binary.
var build = sync.OnceValues(func() (string, error) { return testserver.Build("agent") })

// TestAgent builds the example agent and runs it against a test server to
// the end: it prints the binding message and the approval URL, the test
// decides through the domain API as the user, and the agent prints the
// outcome and exits with its status.
func TestAgent(t *testing.T) {
	t.Parallel()
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(bin)) })
	tests := []struct {
		name    string
		approve bool
		want    string
		exit    int
	}{
		{"approved", true, "Approved (urn:countersign:acr:approval): request ", 0},
		{"denied", false, "Denied: the request was denied", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := testserver.New(t, testserver.Options{})
			cred := srv.Agent(t, approvals.NewAgent{Name: "Invoice agent"})
			cmd := exec.CommandContext(t.Context(), bin, "--issuer", srv.URL, "--client-id", cred.ID, "--user", testserver.UserEmail,
				"--invoice", "4711", "--amount", "250.00")
			cmd.Env = append(os.Environ(), "COUNTERSIGN_CLIENT_SECRET="+cred.Secret)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			sc := bufio.NewScanner(stdout)
			var requestID string
			for requestID == "" && sc.Scan() {
				line := sc.Text()
				out.WriteString(line + "\n")
				if u, ok := strings.CutPrefix(line, "Approve at: "); ok {
					if !strings.HasPrefix(u, srv.URL+"/approve/") {
						t.Fatalf("approval URL %q", u)
					}
					requestID = testserver.RequestID(u)
				}
			}
			if requestID == "" {
				_ = cmd.Wait()
				t.Fatalf("no approval URL:\n%s%s", out.String(), stderr.String())
			}
			if !strings.Contains(out.String(), "Binding message: Invoice 4711\n") {
				t.Fatalf("no binding message:\n%s", out.String())
			}
			if tt.approve {
				srv.Approve(t, requestID)
			} else {
				srv.Deny(t, requestID, "")
			}
			for sc.Scan() {
				out.WriteString(sc.Text() + "\n")
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("the agent did not end:\n%s", out.String())
			}
			if code := cmd.ProcessState.ExitCode(); code != tt.exit {
				t.Fatalf("exit status %d (%v), want %d\n%s%s", code, err, tt.exit, out.String(), stderr.String())
			}
			if !strings.Contains(out.String(), tt.want) {
				t.Fatalf("output lacks %q:\n%s", tt.want, out.String())
			}
			if r := srv.Request(t, requestID); tt.approve && r.State != approvals.StateTokenIssued {
				t.Errorf("request state %s, want token_issued", r.State)
			}
		})
	}
}

package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/browser"
)

// TestDevTask runs the README's `go tool task dev` on a data directory that
// does not exist yet: it creates and starts a private cluster, migrates it and
// serves /readyz 200; a newcomer follows what it prints, in a browser, to an
// approved request; on SIGTERM it exits 0 and stops the cluster.
func TestDevTask(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the dev server; not in -short")
	}
	tmp := t.TempDir()
	// PostgreSQL runs as an unprivileged user when the tests run as root: let
	// it reach the data directory inside the test's private temp dir.
	for _, d := range []string{filepath.Dir(tmp), tmp} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dataDir := filepath.Join(tmp, ".data")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "tool", "task", "dev")
	cmd.Dir = root
	listen, base := freeLocalhost(t) // the dev issuer is http://localhost:PORT
	cmd.Env = slicesWithout(env("COUNTERSIGN_DATA_DIR="+dataDir, "COUNTERSIGN_ADDR="+listen), "COUNTERSIGN_ISSUER=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout := &lockedBuffer{}
	cmd.Stdout = stdout
	p, _ := start(t, cmd)

	waitReady(t, base, time.Minute)
	checkDevLinks(t, base, stdout.String())
	newcomerPath(t, stdout.String())
	if _, err := os.Stat(filepath.Join(dataDir, "postgres", "PG_VERSION")); err != nil {
		t.Fatalf("no private cluster under %s: %v", dataDir, err)
	}

	// Ctrl-C in a terminal signals the whole foreground process group.
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t, time.Minute); err != nil {
		t.Logf("task exit: %v (task reports its child's signal)", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := os.Stat(filepath.Join(dataDir, "postgres", "postmaster.pid"))
		if os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("private cluster still running after the dev server stopped\n%s", p.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lockedBuffer is a process's output, read while it is written.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// checkDevLinks follows the enrollment and dev sign-in links the dev server
// printed: the first opens the passkey page, the second signs the demo
// user in, once, onto the inbox.
func checkDevLinks(t *testing.T, base, out string) {
	t.Helper()
	enroll := regexp.MustCompile(`https?://\S+(/enroll/[A-Za-z0-9_-]{43})`).FindStringSubmatch(out)
	signIn := regexp.MustCompile(`https?://\S+(/signin/link/[A-Za-z0-9_-]{43})`).FindStringSubmatch(out)
	if enroll == nil || signIn == nil {
		t.Fatalf("the dev server printed no enrollment or sign-in link:\n%s", out)
	}
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Get(base + enroll[1])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Create your passkey") {
		t.Errorf("enrollment link: %d\n%s", resp.StatusCode, body)
	}
	for i, want := range []int{http.StatusSeeOther, http.StatusGone} {
		resp, err := cl.Get(base + signIn[1])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("sign-in link, use %d: %d, want %d", i+1, resp.StatusCode, want)
		}
		if i > 0 {
			break
		}
		req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
		for _, c := range resp.Cookies() {
			req.AddCookie(c)
		}
		inbox, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(inbox.Body)
		inbox.Body.Close()
		if inbox.StatusCode != http.StatusOK || !strings.Contains(string(b), "Waiting for you") {
			t.Errorf("inbox after the sign-in link: %d\n%s", inbox.StatusCode, b)
		}
	}
}

// newcomerPath is the README's first minute, in headless Chromium with a
// virtual passkey provider: the printed enrollment link makes a passkey,
// the printed curl asks for approval, the request shows in the inbox,
// Approve, and the printed poll returns the token.
func newcomerPath(t *testing.T, out string) {
	t.Helper()
	enroll := regexp.MustCompile(`https?://\S+/enroll/[A-Za-z0-9_-]{43}`).FindString(out)
	ask := regexp.MustCompile(`(?s)Ask for approval as the demo agent:\n(.*?)\nThen poll[^\n]*\n([^\n]*)\n`).FindStringSubmatch(out)
	if enroll == "" || ask == nil {
		t.Fatalf("the dev server printed no enrollment link or curl commands:\n%s", out)
	}
	tab := browser.New(t).NewTab(t)
	tab.AddAuthenticator(t, nil)
	tab.Navigate(t, enroll)
	tab.Click(t, "#enroll button[type=submit]")
	tab.WaitVisible(t, "#signout")
	tab.WaitVisible(t, "#pending-empty")

	var created struct {
		AuthReqID   string `json:"auth_req_id"`
		ApprovalURL string `json:"approval_url"`
	}
	if b := shell(t, ask[1]); json.Unmarshal(b, &created) != nil || created.AuthReqID == "" {
		t.Fatalf("the printed curl answered %s", b)
	}
	tab.Navigate(t, strings.TrimSuffix(tab.URL(t), "/")+"/")
	tab.WaitVisible(t, "#pending")
	// The live inbox may re-render while it is read: read until it settles.
	got := tab.TextHas(t, "#pending", "Demo agent")
	if !strings.Contains(got, "Demo agent") || !strings.Contains(got, "Alice Smith") {
		t.Fatalf("the inbox lists %q, want the demo agent's payment", got)
	}
	tab.Click(t, "#pending a")
	tab.WaitVisible(t, "#approve")
	if tab.URL(t) != created.ApprovalURL {
		t.Errorf("the inbox's card opened %s, want the approval_url %s", tab.URL(t), created.ApprovalURL)
	}
	// The request's notice may reach this page after it loaded (a server
	// announces a new request right after its commit), and the page then
	// reads itself again: read until it settles.
	if got := tab.TextIs(t, "#binding-message", "Invoice 4711"); got != "Invoice 4711" {
		t.Errorf("binding message %q, want the curl's", got)
	}
	tab.Click(t, "#approve")
	tab.WaitVisible(t, "#outcome")
	var token struct {
		AccessToken string `json:"access_token"`
		IDToken     string `json:"id_token"`
	}
	if b := shell(t, strings.ReplaceAll(ask[2], "AUTH_REQ_ID", created.AuthReqID)); json.Unmarshal(b, &token) != nil || token.AccessToken == "" || token.IDToken == "" {
		t.Fatalf("the printed poll after Approve answered %s", b)
	}
}

// shell runs a command line as a newcomer pastes it.
func shell(t *testing.T, line string) []byte {
	t.Helper()
	out, err := exec.Command("bash", "-c", line).Output()
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return out
}

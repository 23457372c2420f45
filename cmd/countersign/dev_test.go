package main

import (
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
)

// TestDevTask runs the README's `go tool task dev` on a data directory that
// does not exist yet: it creates and starts a private cluster, migrates it and
// serves /readyz 200; on SIGTERM it exits 0 and stops the cluster.
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
	cmd.Env = env("COUNTERSIGN_DATA_DIR="+dataDir, "COUNTERSIGN_ADDR=127.0.0.1:0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout := &lockedBuffer{}
	cmd.Stdout = stdout
	p, addr := start(t, cmd)

	waitReady(t, "http://"+addr, time.Minute)
	checkDevLinks(t, "http://"+addr, stdout.String())
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

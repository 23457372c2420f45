package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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

// binary is the countersign binary built once for the tests that run the real
// process (signals, exit codes, concurrent migrations).
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "countersign-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "countersign")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building countersign: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running countersign process whose stderr (the log) is watched.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	addr chan string
	done chan error
}

var listenRE = regexp.MustCompile(`"msg":"countersign listening","addr":"([^"]+)"|msg="countersign listening" addr=(\S+)`)

// start runs cmd and waits for it to log its listen address.
func start(t *testing.T, cmd *exec.Cmd) (*proc, string) {
	t.Helper()
	p := &proc{cmd: cmd, addr: make(chan string, 1), done: make(chan error, 1)}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Stdout == nil {
		cmd.Stdout = io.Discard
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil {
				p.addr <- m[1] + m[2]
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Process.Kill()
		}
	})
	select {
	case a := <-p.addr:
		return p, a
	case err := <-p.done:
		t.Fatalf("process exited before listening: %v\n%s", err, p.logText())
	case <-time.After(3 * time.Minute):
		t.Fatalf("process did not listen within 3 minutes\n%s", p.logText())
	}
	return nil, ""
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// wait returns the exit error once the process ends.
func (p *proc) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(within):
		t.Fatalf("process still running after %s\n%s", within, p.logText())
		return nil
	}
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// testKEK is a key-encryption key for processes the tests start.
const testKEK = "COUNTERSIGN_KEK=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// env returns the test process's environment without the variables that
// configure countersign, plus extra.
func env(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "COUNTERSIGN_") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		out = append(out, kv)
	}
	// Processes the tests start are not in dev mode: they need an issuer.
	out = append(out, "COUNTERSIGN_ISSUER=https://countersign.test")
	return append(out, extra...)
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "countersign ") {
		t.Fatalf("version printed %q", out)
	}
}

func waitReady(t *testing.T, base string, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for ctx.Err() == nil {
		if code, _ := getJSON(t, base+"/readyz"); code == http.StatusOK {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s/readyz did not answer 200 within %s", base, within)
}

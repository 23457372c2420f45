package main

import (
	"os"
	"os/exec"
	"path/filepath"
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
	p, addr := start(t, cmd)

	waitReady(t, "http://"+addr, time.Minute)
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

// Package interop prepares the node project in interop/: clients this
// project did not write (panva's openid-client, the official TypeScript MCP
// SDK), pinned in interop/package.json and package-lock.json, that the
// interop tests of web and examples/mcp-server run under the machine's
// node against Countersign.
package interop

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Dir is the absolute path of the node project.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "interop")
}

// Script is the absolute path of one of the project's scripts.
func Script(name string) string { return filepath.Join(Dir(), name) }

var (
	once sync.Once
	err  error
)

// Require makes sure node is installed and interop/node_modules holds the
// pinned packages, running `npm ci` at most once per process; otherwise it
// fails the test, saying how to get node. The interop tests are never
// skipped.
func Require(t testing.TB) {
	t.Helper()
	once.Do(func() { err = install() })
	if err != nil {
		t.Fatal(err)
	}
}

func install() error {
	const how = "install Node.js 20.19 or later with npm (https://nodejs.org/ or your package manager): the interop tests run independent clients under node and are never skipped"
	if _, err := exec.LookPath("node"); err != nil {
		return errors.New("node not found on PATH; " + how)
	}
	dir := Dir()
	if current(dir) {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return errors.New("npm not found on PATH; " + how)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--prefix", dir, "--no-audit", "--no-fund")
	if out, err := cmd.CombinedOutput(); err != nil {
		return errors.New("npm ci --prefix " + dir + ": " + err.Error() + "\n" + string(out))
	}
	if !current(dir) {
		return errors.New("npm ci --prefix " + dir + " did not install the versions pinned in interop/package.json")
	}
	return nil
}

// current reports whether every dependency pinned in dir/package.json is
// installed in exactly that version.
func current(dir string) bool {
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil || json.Unmarshal(b, &pkg) != nil || len(pkg.Dependencies) == 0 {
		return false
	}
	for name, want := range pkg.Dependencies {
		var got struct {
			Version string `json:"version"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", name, "package.json"))
		if err != nil || json.Unmarshal(b, &got) != nil || got.Version != want {
			return false
		}
	}
	return true
}

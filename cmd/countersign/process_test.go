package main

import (
	"errors"
	"io/fs"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/internal/pgtest"
	"github.com/countersign/countersign/migrations"
)

// TestGracefulShutdownDrains sends SIGTERM to the real binary while a slow
// request is in flight: /readyz blocked on a table lock the test holds. The
// request still completes with 200 and the process exits 0.
func TestGracefulShutdownDrains(t *testing.T) {
	conf := pgtest.NewConfig(t)
	cmd := exec.Command(binary, "serve", "--addr", "127.0.0.1:0")
	cmd.Env = env("DATABASE_URL="+conf.URL(), testKEK)
	p, addr := start(t, cmd)

	db, err := sqlx.Connect("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`LOCK TABLE goose_db_version IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	type result struct {
		status int
		err    error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			got <- result{err: err}
			return
		}
		resp.Body.Close()
		got <- result{status: resp.StatusCode}
	}()
	time.Sleep(300 * time.Millisecond) // the request is now waiting on the lock
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // shutdown has begun and is draining
	select {
	case r := <-got:
		t.Fatalf("request finished before the lock was released: %+v", r)
	default:
	}
	if err := tx.Rollback(); err != nil { // releases the lock
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("in-flight request: status %d, err %v; want 200\n%s", r.status, r.err, p.logText())
	}
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0\n%s", err, p.logText())
	}
	if !strings.Contains(p.logText(), "draining in-flight requests") {
		t.Fatalf("no shutdown log line:\n%s", p.logText())
	}
}

// TestConcurrentMigrate starts two migrate processes at the same instant on an
// empty database: both succeed and every migration is applied once.
func TestConcurrentMigrate(t *testing.T) {
	conf := pgtest.Empty(t)
	release := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	outs := make([][]byte, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(binary, "migrate")
			cmd.Env = env("DATABASE_URL=" + conf.URL())
			<-release
			outs[i], errs[i] = cmd.CombinedOutput()
		}()
	}
	close(release)
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("migrate #%d: %v\n%s", i, errs[i], outs[i])
		}
	}
	db, err := sqlx.Connect("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows []struct {
		Version int64 `db:"version_id"`
		N       int   `db:"n"`
	}
	if err := db.Select(&rows, `SELECT version_id, count(*) AS n FROM goose_db_version WHERE version_id > 0 GROUP BY version_id ORDER BY version_id`); err != nil {
		t.Fatal(err)
	}
	// Every embedded migration, counted by file: version numbers may have
	// gaps (numbers reserved for changes not merged yet).
	embedded, err := fs.Glob(migrations.FS(), "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(embedded) || rows[len(rows)-1].Version != migrations.Latest() {
		t.Fatalf("%d versions recorded up to %d, want %d up to %d", len(rows), rows[len(rows)-1].Version, len(embedded), migrations.Latest())
	}
	for _, r := range rows {
		if r.N != 1 {
			t.Errorf("migration %d recorded %d times", r.Version, r.N)
		}
	}
}

// TestBadConfig: bad configuration exits non-zero with one clear line and no
// stack trace.
func TestBadConfig(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown flag", []string{"serve", "--no-such-flag"}, []string{"DATABASE_URL=postgres://localhost/x"}, "flag provided but not defined: -no-such-flag"},
		{"unknown command", []string{"serv"}, nil, `unknown command "serv"`},
		{"malformed DATABASE_URL", []string{"migrate"}, []string{"DATABASE_URL=postgres://%zz"}, "DATABASE_URL is malformed"},
		{"wrong scheme", []string{"serve"}, []string{"DATABASE_URL=mysql://localhost/x"}, `DATABASE_URL has scheme "mysql"`},
		{"unreadable _FILE", []string{"serve"}, []string{"COUNTERSIGN_DATABASE_URL_FILE=/nonexistent/secret"}, "cannot read /nonexistent/secret: no such file or directory"},
		{"unreadable --file", []string{"migrate", "--database-url-file", "/nonexistent/secret"}, nil, "cannot read /nonexistent/secret"},
		{"bad env value", []string{"serve"}, []string{"DATABASE_URL=postgres://localhost/x", "COUNTERSIGN_SHUTDOWN_TIMEOUT=soon"}, `COUNTERSIGN_SHUTDOWN_TIMEOUT: invalid value "soon"`},
		{"no database", []string{"serve"}, nil, "no database: set DATABASE_URL"},
		{"malformed KEK", []string{"serve"}, []string{"DATABASE_URL=postgres://localhost/x", "COUNTERSIGN_KEK=short"}, "key-encryption key must be 32 bytes"},
		{"missing KEK", []string{"serve"}, []string{"DATABASE_URL=postgres://localhost/x"}, "no key-encryption key"},
		{"http issuer outside dev", []string{"serve", "--issuer", "http://cs.example.com"}, []string{"DATABASE_URL=postgres://localhost/x", testKEK}, "--issuer must be an https URL"},
		{"no issuer", []string{"serve"}, []string{"DATABASE_URL=postgres://localhost/x", testKEK, "COUNTERSIGN_ISSUER="}, "no issuer: set --issuer"},
		{"issuer with a path", []string{"serve", "--issuer", "https://cs.example.com/tenant"}, []string{"DATABASE_URL=postgres://localhost/x", testKEK}, "with no path"},
		{"bad log format", []string{"serve", "--dev", "--log-format", "xml"}, nil, "--log-format must be text or json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, tc.args...)
			cmd.Env = env(tc.env...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("err = %v, want a non-zero exit", err)
			}
			lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
			if len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want 1:\n%s", len(lines), stderr.String())
			}
			if !strings.HasPrefix(lines[0], "countersign: ") || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr = %q, want a line containing %q", lines[0], tc.want)
			}
			if strings.Contains(stderr.String(), "goroutine") || strings.Contains(stderr.String(), "panic") {
				t.Fatalf("stack trace on stderr:\n%s", stderr.String())
			}
		})
	}
}

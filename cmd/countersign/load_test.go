package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/pgtest"
)

// loadSummary is the --json summary of `countersign load`, field by field as
// the command documents it.
type loadSummary struct {
	Scenario       string         `json:"scenario"`
	Delivery       string         `json:"delivery"`
	Concurrency    int            `json:"concurrency"`
	Warmup         int            `json:"warmup"`
	WarmupErrors   map[string]int `json:"warmup_errors"`
	Flows          int            `json:"flows"`
	Errors         map[string]int `json:"errors"`
	Seconds        float64        `json:"seconds"`
	FlowsPerSecond float64        `json:"flows_per_second"`
	Endpoints      map[string]struct {
		Count int      `json:"count"`
		P50   *float64 `json:"p50_ms"`
		P90   *float64 `json:"p90_ms"`
		P99   *float64 `json:"p99_ms"`
		Max   *float64 `json:"max_ms"`
	} `json:"endpoints"`
	ServerCPUMsPerFlow *float64 `json:"server_cpu_ms_per_flow"`
	DB                 *struct {
		CommitsPerFlow        *float64 `json:"commits_per_flow"`
		RowsWrittenPerFlow    *float64 `json:"rows_written_per_flow"`
		WALBytesPerFlow       *float64 `json:"wal_bytes_per_flow"`
		StatementsPerFlow     *float64 `json:"statements_per_flow"`
		StatementsUnavailable string   `json:"statements_unavailable"`
	} `json:"db"`
	Stopped string `json:"stopped"`
}

// loadRun is one `countersign load` process and what it printed.
type loadRun struct {
	code           int
	stdout, stderr string
	summary        loadSummary
}

// runLoad runs `countersign load --json` on database dbURL against the
// server at base (process pid) for 50 flows after 10 discarded ones, 4 at a
// time, with args.
func runLoad(t *testing.T, dbURL, base string, pid int, args ...string) loadRun {
	t.Helper()
	args = append([]string{"load", "--json", "--url", base, "--server-pid", strconv.Itoa(pid),
		"--flows", "50", "--warmup", "10", "--concurrency", "4", "--timeout", "2m"}, args...)
	cmd := exec.Command(binary, args...)
	cmd.Env = env("DATABASE_URL=" + dbURL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := loadRun{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	if r.code == 0 {
		if err := json.Unmarshal(stdout.Bytes(), &r.summary); err != nil {
			t.Fatalf("stdout is not the JSON summary: %v\n%s\nstderr:\n%s", err, r.stdout, r.stderr)
		}
	}
	return r
}

// checkSummary checks what every complete run must report: the flows
// counted, no error, each step's latencies in order, the server's CPU time
// and non-negative PostgreSQL deltas.
func checkSummary(t *testing.T, r loadRun, scenario string, steps []string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	s := r.summary
	if s.Scenario != scenario || s.Concurrency != 4 || s.Warmup != 10 || s.WarmupErrors == nil || len(s.WarmupErrors) != 0 || s.Stopped != "" {
		t.Errorf("scenario %q concurrency %d warmup %d (errors %v) stopped %q", s.Scenario, s.Concurrency, s.Warmup, s.WarmupErrors, s.Stopped)
	}
	if s.Flows != 50 || len(s.Errors) != 0 {
		t.Errorf("flows %d, errors %v; want 50 flows, no error", s.Flows, s.Errors)
	}
	if s.Seconds <= 0 || s.FlowsPerSecond <= 0 {
		t.Errorf("seconds %v, flows/s %v", s.Seconds, s.FlowsPerSecond)
	}
	var got []string
	for step, l := range s.Endpoints {
		got = append(got, step)
		if l.P50 == nil || l.P90 == nil || l.P99 == nil || l.Max == nil {
			t.Errorf("%s: a latency field is missing: %+v", step, l)
			continue
		}
		if l.Count != 50 || !(0 < *l.P50 && *l.P50 <= *l.P90 && *l.P90 <= *l.P99 && *l.P99 <= *l.Max) {
			t.Errorf("%s: count %d, p50 %v p90 %v p99 %v max %v; want 50 and 0 < p50 ≤ p90 ≤ p99 ≤ max",
				step, l.Count, *l.P50, *l.P90, *l.P99, *l.Max)
		}
	}
	slices.Sort(got)
	slices.Sort(steps)
	if !slices.Equal(got, steps) {
		t.Errorf("steps %v, want %v", got, steps)
	}
	if s.ServerCPUMsPerFlow == nil || *s.ServerCPUMsPerFlow < 0 {
		t.Errorf("server_cpu_ms_per_flow %v, want a non-negative number", s.ServerCPUMsPerFlow)
	}
	d := s.DB
	if d == nil || d.CommitsPerFlow == nil || d.RowsWrittenPerFlow == nil || d.WALBytesPerFlow == nil {
		t.Fatalf("db %+v: want commits, rows written and WAL bytes per flow", d)
	}
	if *d.CommitsPerFlow < 0 || *d.RowsWrittenPerFlow < 0 || *d.WALBytesPerFlow < 0 {
		t.Errorf("db: negative delta: %v commits, %v rows, %v WAL bytes per flow", *d.CommitsPerFlow, *d.RowsWrittenPerFlow, *d.WALBytesPerFlow)
	}
	if (d.StatementsPerFlow == nil) == (d.StatementsUnavailable == "") {
		t.Errorf("statements_per_flow %v with statements_unavailable %q: want exactly one", d.StatementsPerFlow, d.StatementsUnavailable)
	}
	if d.StatementsPerFlow != nil && *d.StatementsPerFlow < 0 {
		t.Errorf("statements_per_flow %v", *d.StatementsPerFlow)
	}
}

// TestLoad runs `countersign load` (the real binary) against a real server
// for each poll scenario, on a database with nothing registered: the first
// run registers the request type, publishes the load policy and creates its
// resource server, later runs reuse them.
func TestLoad(t *testing.T) {
	conf := pgtest.NewConfig(t)
	serve := exec.Command(binary, "serve", "--addr", "127.0.0.1:0")
	serve.Env = env("DATABASE_URL="+conf.URL(), testKEK)
	_, addr := start(t, serve)
	base, pid := "http://"+addr, serve.Process.Pid

	t.Run("auto", func(t *testing.T) {
		// With the full wait for PostgreSQL's counters: every flow commits
		// its request and writes its row, and they are all counted.
		r := runLoad(t, conf.URL(), base, pid, "--scenario", "auto")
		checkSummary(t, r, "auto", []string{"/bc-authorize", "/token"})
		if d := r.summary.DB; d != nil && (*d.CommitsPerFlow < 1 || *d.RowsWrittenPerFlow < 1 || *d.WALBytesPerFlow <= 0) {
			t.Errorf("db: %v commits, %v rows, %v WAL bytes per flow; want at least 1, 1 and some", *d.CommitsPerFlow, *d.RowsWrittenPerFlow, *d.WALBytesPerFlow)
		}
		for _, want := range []string{"registered the request type payment_initiation", "published the load policy", "registered the load resource server"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
			}
		}
	})
	t.Run("auto-redeem", func(t *testing.T) {
		r := runLoad(t, conf.URL(), base, pid, "--scenario", "auto-redeem", "--agents", "3", "--users", "2", "--stats-wait", "1s")
		checkSummary(t, r, "auto-redeem", []string{"/bc-authorize", "/token", "/redeem"})
		for _, want := range []string{"using the live policy, version 1, unchanged", "registered 3 agents", "created 2 users", "reusing the load resource server"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
			}
		}
	})
	t.Run("human poll", func(t *testing.T) {
		r := runLoad(t, conf.URL(), base, pid, "--scenario", "human", "--stats-wait", "1s")
		checkSummary(t, r, "human", []string{"/bc-authorize", "review", "/token"})
		if r.summary.Delivery != "poll" {
			t.Errorf("delivery %q, want poll", r.summary.Delivery)
		}
	})
	t.Run("existing registrations", func(t *testing.T) {
		// An agent (client_secret_post), a user and a resource server an
		// admin registered: the run uses them and creates nothing.
		admin := func(args ...string) map[string]any {
			t.Helper()
			cmd := exec.Command(binary, append(args, "--json")...)
			cmd.Env = env("DATABASE_URL=" + conf.URL())
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %v", args, err)
			}
			var m map[string]any
			if err := json.Unmarshal(out, &m); err != nil {
				t.Fatal(err)
			}
			return m
		}
		types := exec.Command(binary, "types", "apply", "-f", "../../examples/demo/types")
		types.Env = env("DATABASE_URL=" + conf.URL())
		if out, err := types.CombinedOutput(); err != nil {
			t.Fatalf("types apply: %v\n%s", err, out)
		}
		agent := admin("agents", "add", "--name", "Admin's agent", "--domain", "agent.example.com", "--types", "payment_initiation", "--auth", "client_secret_post")
		admin("users", "add", "--email", "bob@example.com")
		rs := admin("resources", "add", "--name", "Payments API", "--audience", "https://payments.example.com", "--types", "payment_initiation")
		r := runLoad(t, conf.URL(), base, pid, "--scenario", "auto-redeem", "--stats-wait", "0",
			"--client-id", agent["client_id"].(string), "--client-secret", agent["client_secret"].(string), "--user", "bob@example.com",
			"--rs-id", rs["client_id"].(string), "--rs-secret", rs["client_secret"].(string))
		checkSummary(t, r, "auto-redeem", []string{"/bc-authorize", "/token", "/redeem"})
		if strings.Contains(r.stderr, "registered") || strings.Contains(r.stderr, "created") {
			t.Errorf("the run registered something:\n%s", r.stderr)
		}
		wrong := runLoad(t, conf.URL(), base, pid, "--client-id", agent["client_id"].(string), "--client-secret", "wrong")
		if wrong.code == 0 || !strings.Contains(wrong.stderr, "the client secret does not match") {
			t.Errorf("a wrong secret: exit %d\n%s", wrong.code, wrong.stderr)
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		// Ctrl-C stops the run and prints what it measured.
		cmd := exec.Command(binary, "load", "--json", "--url", base, "--flows", "1000000", "--warmup", "0", "--concurrency", "2", "--stats-wait", "0")
		cmd.Env = env("DATABASE_URL=" + conf.URL())
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		var log strings.Builder
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "measured flows against") {
				break
			}
		}
		time.Sleep(time.Second)
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
		}
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("exit: %v, want status 1\n%s", err, log.String())
		}
		var s loadSummary
		if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
			t.Fatalf("no JSON summary after Ctrl-C: %v\n%s\n%s", err, stdout.String(), log.String())
		}
		if s.Stopped != "interrupted" || s.Flows == 0 || s.Flows >= 1000000 || len(s.Errors) != 0 || s.Endpoints["/token"].Count < s.Flows {
			t.Errorf("after Ctrl-C: stopped %q, %d flows, errors %v, %d token calls", s.Stopped, s.Flows, s.Errors, s.Endpoints["/token"].Count)
		}
		if !strings.Contains(log.String(), "stopped early (interrupted)") {
			t.Errorf("stderr does not say it stopped early:\n%s", log.String())
		}
	})
	t.Run("policy that asks", func(t *testing.T) {
		// A policy under which the auto scenario's request waits for the
		// user: the command says so and runs nothing.
		file := filepath.Join(t.TempDir(), "approve-all.yaml")
		if err := os.WriteFile(file, []byte("types:\n  payment_initiation: [{id: all, when: \"true\", outcome: approve, reason: Approval needed}]\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := runLoad(t, conf.URL(), base, pid, "--scenario", "auto", "--policy", file)
		if r.code != 2 || !strings.Contains(r.stderr, "published "+file+" as policy version 2") ||
			!strings.Contains(r.stderr, "the live policy (version 2) decides approve for the auto scenario's request (rule all: Approval needed), which needs allow") {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("stdout %q, want nothing", r.stdout)
		}
	})
	t.Run("load policy", func(t *testing.T) {
		// --policy load publishes the load's own policy over the one that
		// asks, and the auto scenario runs again.
		r := runLoad(t, conf.URL(), base, pid, "--scenario", "auto", "--policy", "load", "--stats-wait", "0")
		checkSummary(t, r, "auto", []string{"/bc-authorize", "/token"})
		if !strings.Contains(r.stderr, "published countersign-load.yaml as policy version 3") {
			t.Errorf("stderr:\n%s", r.stderr)
		}
	})
}

// TestLoadPing runs the human scenario with ping delivery against a server
// in dev mode (which delivers pings over plain http to loopback) with the
// demo policy, which leaves the human scenario's payment to the user.
func TestLoadPing(t *testing.T) {
	conf := pgtest.NewConfig(t)
	serve := exec.Command(binary, "serve", "--dev", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir())
	serve.Env = env("DATABASE_URL="+conf.URL(), testKEK)
	_, addr := start(t, serve)

	r := runLoad(t, conf.URL(), "http://"+addr, serve.Process.Pid, "--scenario", "human", "--delivery", "ping", "--stats-wait", "1s")
	checkSummary(t, r, "human", []string{"/bc-authorize", "review", "ping", "/token"})
	if r.summary.Delivery != "ping" || !strings.Contains(r.stderr, "using the live policy") || !strings.Contains(r.stderr, "(ping delivery)") ||
		!strings.Contains(r.stderr, "rules read recent") {
		t.Errorf("delivery %q; stderr:\n%s", r.summary.Delivery, r.stderr)
	}
}

// TestLoadFlags: flags that cannot make a run stop the command before it
// touches the database, with one line saying why; above all, a server that
// is not on loopback.
func TestLoadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"remote URL", []string{"--url", "http://192.0.2.10:8080"}, "load may only go to a loopback address (127.0.0.0/8, ::1, localhost): 192.0.2.10 is not"},
		{"remote name", []string{"--url", "https://countersign.example.com"}, "countersign.example.com is not"},
		{"URL with a path", []string{"--url", "http://localhost:8080/api"}, "is not a server base URL"},
		{"unknown scenario", []string{"--scenario", "manual"}, `unknown scenario "manual"`},
		{"ping outside human", []string{"--delivery", "ping"}, "--delivery ping is for the human scenario"},
		{"no flows", []string{"--flows", "0"}, "must be at least 1"},
		{"client id alone", []string{"--client-id", "agt_x"}, "--client-id and --client-secret go together"},
		{"existing user and users", []string{"--user", "a@example.com", "--users", "2"}, "--user names one user"},
		{"no such process", []string{"--server-pid", "999999999"}, "--server-pid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, append([]string{"load"}, tc.args...)...)
			// Unreachable: the flags are refused before any connection.
			cmd.Env = env("DATABASE_URL=postgres://127.0.0.1:1/none")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("err %v, want exit status 2; stderr:\n%s", err, stderr.String())
			}
			if lines := strings.Split(strings.TrimSpace(stderr.String()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr %q, want one line containing %q", stderr.String(), tc.want)
			}
		})
	}
}

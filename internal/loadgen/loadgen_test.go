package loadgen

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestCheckURL(t *testing.T) {
	for _, tc := range []struct {
		url, want string // want "" means refused
	}{
		{"http://localhost:8080", "http://localhost:8080"},
		{"http://LOCALHOST:8080/", "http://LOCALHOST:8080"},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"http://127.3.2.1", "http://127.3.2.1"},
		{"https://[::1]:8443", "https://[::1]:8443"},
		{"http://[::ffff:127.0.0.1]:80", "http://[::ffff:127.0.0.1]:80"},
		{"http://10.0.0.1:8080", ""},
		{"http://[::2]:8080", ""},
		{"http://0.0.0.0:8080", ""},
		{"http://countersign.example.com", ""},
		{"http://localhost.example.com", ""},
		{"http://localhost:8080/api", ""},
		{"http://localhost:8080?x=1", ""},
		{"http://user:pw@localhost:8080", ""},
		{"ftp://localhost", ""},
		{"localhost:8080", ""},
	} {
		got, err := CheckURL(tc.url)
		if tc.want == "" {
			if err == nil {
				t.Errorf("CheckURL(%q) = %q, want refused", tc.url, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CheckURL(%q) = %q, %v; want %q", tc.url, got, err, tc.want)
		}
	}
	if _, err := CheckURL("http://192.0.2.1"); !errors.Is(err, ErrNotLoopback) {
		t.Errorf("a remote address: %v, want ErrNotLoopback", err)
	}
}

// TestDialerLoopbackOnly: the flows' connections reach loopback only, also
// where a name or a redirect would lead elsewhere.
func TestDialerLoopbackOnly(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://192.0.2.1/elsewhere", http.StatusFound)
	}))
	defer srv.Close()
	c := newHTTPClient(1)
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Errorf("redirect followed: %d", resp.StatusCode)
	}
	if _, err := c.Get("http://192.0.2.1:9/"); !errors.Is(err, ErrNotLoopback) {
		t.Errorf("dial to 192.0.2.1: %v, want ErrNotLoopback", err)
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // 1 ms … 100 ms, unsorted
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := summarize(ds)
	want := Latency{Count: 100, P50: 50, P90: 90, P99: 99, Max: 100}
	if got != want {
		t.Errorf("summarize(1..100 ms) = %+v, want %+v", got, want)
	}
	one := summarize([]time.Duration{1500 * time.Microsecond})
	if one != (Latency{Count: 1, P50: 1.5, P90: 1.5, P99: 1.5, Max: 1.5}) {
		t.Errorf("summarize(one) = %+v", one)
	}
	if empty := summarize(nil); empty != (Latency{}) {
		t.Errorf("summarize(nil) = %+v", empty)
	}
}

func TestParseStatCPU(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := []byte("4242 (count (er) sign) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 37 0 0 20 0 9 0 100 0 0\n")
	got, err := parseStatCPU(line)
	if err != nil || got != 287 {
		t.Errorf("parseStatCPU = %d, %v; want 287 ticks", got, err)
	}
	for _, bad := range []string{"", "4242 count S 1", "4242 (x) S 1 2 3"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) accepted", bad)
		}
	}
	if _, err := ProcessCPU(os.Getpid()); err != nil {
		t.Errorf("ProcessCPU(self): %v", err)
	}
}

func TestDBSummary(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	start := DBSample{Commits: 100, RowsWritten: 10, WALBytes: 1000, OtherRowsWritten: 5, Statements: n(50)}
	end := DBSample{Commits: 300, RowsWritten: 60, WALBytes: 4000, OtherRowsWritten: 5, Statements: n(350)}
	d := dbSummary(start, end, 100, "")
	if *d.CommitsPerFlow != 2 || *d.RowsWrittenPerFlow != 0.5 || *d.WALBytesPerFlow != 30 || *d.StatementsPerFlow != 3 ||
		d.OtherDatabasesRowsWritten != 0 || d.StatementsUnavailable != "" {
		t.Errorf("dbSummary = %+v", d)
	}
	// Entries evicted from pg_stat_statements: the count went down.
	end.Statements = n(10)
	if d := dbSummary(start, end, 100, ""); d.StatementsPerFlow != nil || !strings.Contains(d.StatementsUnavailable, "evicted") {
		t.Errorf("after eviction: %v, %q", d.StatementsPerFlow, d.StatementsUnavailable)
	}
	// No flow: totals, nothing per flow.
	start.Statements, end.Statements = nil, nil
	if d := dbSummary(start, end, 0, "not loaded"); d.CommitsPerFlow != nil || d.Commits != 200 || d.StatementsUnavailable != "not loaded" {
		t.Errorf("without flows: %+v", d)
	}
}

func TestWriteText(t *testing.T) {
	cpu := 1.25
	s := &Summary{Scenario: Human, Delivery: DeliveryPing, Concurrency: 16, Agents: 1, Users: 1, Warmup: 200, Flows: 1998,
		WarmupErrors: map[string]int{"review: deadlock_detected": 3},
		Errors:       map[string]int{"/token: slow_down": 2}, ErrorExamples: map[string]string{"/token: slow_down": "loadgen: /token answered 400"},
		Seconds: 10, FlowsPerSecond: 199.8, ServerCPUMsPerFlow: &cpu,
		Endpoints: map[string]Latency{StepToken: {Count: 1998, P50: 1, P90: 2, P99: 3, Max: 4}, StepAuthorize: {Count: 2000, P50: 1, P90: 2, P99: 3, Max: 4},
			StepPing: {Count: 1998}, StepReview: {Count: 1998}},
		DB: dbSummary(DBSample{}, DBSample{Commits: 3996, RowsWritten: 1998, WALBytes: 1998000}, 1998, "pg_stat_statements must be loaded via shared_preload_libraries")}
	var b bytes.Buffer
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"human (ping), concurrency 16, 1 agent, 1 user, 200 warm-up flows discarded",
		"warm-up errors:\n       3  review: deadlock_detected\n",
		"1998 flows in 10.00 s: 199.8 flows/s, 2 errors",
		"2  /token: slow_down  (e.g. loadgen: /token answered 400)",
		"server CPU:  1.250 ms per flow",
		"PostgreSQL:  2.000 commits, 1.000 rows written, 1000.000 WAL bytes per flow",
		"SQL statements: unavailable (pg_stat_statements must be loaded via shared_preload_libraries)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	// The steps in the order of a flow.
	table := out[strings.Index(out, "p50 ms"):]
	a, r, p, tok := strings.Index(table, "/bc-authorize"), strings.Index(table, "review"), strings.Index(table, "ping"), strings.Index(table, "/token")
	if !(a < r && r < p && p < tok) {
		t.Errorf("steps out of flow order:\n%s", out)
	}
}

package loadgen

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Summary is what a run measured, as `countersign load --json` prints it.
// Figures per flow divide by the measured flows that succeeded.
type Summary struct {
	Scenario    Scenario `json:"scenario"`
	Delivery    string   `json:"delivery,omitempty"` // human only
	Concurrency int      `json:"concurrency"`
	Agents      int      `json:"agents"`
	Users       int      `json:"users"`
	Warmup      int      `json:"warmup"`
	// WarmupErrors counts the warm-up flows that failed, by kind (they are
	// discarded with the rest of the warm-up, but not hidden).
	WarmupErrors map[string]int `json:"warmup_errors"`
	// Flows counts the measured flows that succeeded; Errors the ones that
	// failed, by kind ("<step>: <OAuth error, HTTP status or failure>").
	Flows          int                `json:"flows"`
	Errors         map[string]int     `json:"errors"`
	Seconds        float64            `json:"seconds"`
	FlowsPerSecond float64            `json:"flows_per_second"`
	Endpoints      map[string]Latency `json:"endpoints"`
	// ServerCPUMsPerFlow is the server process's CPU time over the measured
	// flows, per flow; nil without its pid.
	ServerCPUMsPerFlow *float64   `json:"server_cpu_ms_per_flow"`
	DB                 *DBSummary `json:"db"`
	// Stopped is "interrupted" or "timeout" when the run did not finish:
	// the figures are then those of the flows done so far.
	Stopped string `json:"stopped,omitempty"`

	// ErrorExamples holds the first message of each kind of error, for the
	// text report.
	ErrorExamples map[string]string `json:"-"`
}

// DBSummary is PostgreSQL's work over the measured flows: totals, and per
// flow (nil without a successful flow).
type DBSummary struct {
	CommitsPerFlow     *float64 `json:"commits_per_flow"`
	RowsWrittenPerFlow *float64 `json:"rows_written_per_flow"`
	WALBytesPerFlow    *float64 `json:"wal_bytes_per_flow"`
	StatementsPerFlow  *float64 `json:"statements_per_flow"`
	Commits            int64    `json:"commits"`
	RowsWritten        int64    `json:"rows_written"`
	WALBytes           int64    `json:"wal_bytes"`
	Statements         *int64   `json:"statements"`
	// OtherDatabasesRowsWritten is what the cluster's other databases wrote
	// meanwhile: their WAL is in WALBytes too.
	OtherDatabasesRowsWritten int64 `json:"other_databases_rows_written"`
	// StatementsUnavailable says why statements are not counted.
	StatementsUnavailable string `json:"statements_unavailable,omitempty"`
}

// dbSummary is the difference of two samples, over flows.
func dbSummary(start, end DBSample, flows int, whyNoStatements string) *DBSummary {
	d := &DBSummary{Commits: end.Commits - start.Commits, RowsWritten: end.RowsWritten - start.RowsWritten,
		WALBytes: end.WALBytes - start.WALBytes, OtherDatabasesRowsWritten: end.OtherRowsWritten - start.OtherRowsWritten,
		StatementsUnavailable: whyNoStatements}
	if start.Statements != nil && end.Statements != nil {
		n := *end.Statements - *start.Statements
		if n >= 0 { // pg_stat_statements evicts entries when full
			d.Statements = &n
		} else {
			d.StatementsUnavailable = "pg_stat_statements evicted entries during the run (raise pg_stat_statements.max)"
		}
	} else if d.StatementsUnavailable == "" {
		d.StatementsUnavailable = "pg_stat_statements could not be read"
	}
	if flows > 0 {
		d.CommitsPerFlow = perFlow(float64(d.Commits), flows)
		d.RowsWrittenPerFlow = perFlow(float64(d.RowsWritten), flows)
		d.WALBytesPerFlow = perFlow(float64(d.WALBytes), flows)
		if d.Statements != nil {
			d.StatementsPerFlow = perFlow(float64(*d.Statements), flows)
		}
	}
	return d
}

// perFlow is total/flows to three decimals.
func perFlow(total float64, flows int) *float64 {
	v := math.Round(total/float64(flows)*1000) / 1000
	return &v
}

// WriteText prints s for a person.
func (s *Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	what := string(s.Scenario)
	if s.Delivery != "" {
		what += " (" + s.Delivery + ")"
	}
	fmt.Fprintf(&b, "countersign load: %s, concurrency %d, %s, %s, %d warm-up flows discarded",
		what, s.Concurrency, plural(s.Agents, "agent"), plural(s.Users, "user"), s.Warmup)
	b.WriteString("\n")
	if len(s.WarmupErrors) > 0 {
		b.WriteString("warm-up errors:\n")
		for _, k := range slices.Sorted(maps.Keys(s.WarmupErrors)) {
			fmt.Fprintf(&b, "  %6d  %s\n", s.WarmupErrors[k], k)
		}
	}
	if s.Stopped != "" {
		fmt.Fprintf(&b, "STOPPED EARLY (%s): the figures are those of the flows done so far\n", s.Stopped)
	}
	nerr := 0
	for _, n := range s.Errors {
		nerr += n
	}
	fmt.Fprintf(&b, "%d flows in %.2f s: %.1f flows/s, %s\n", s.Flows, s.Seconds, s.FlowsPerSecond, plural(nerr, "error"))
	for _, k := range slices.Sorted(maps.Keys(s.Errors)) {
		fmt.Fprintf(&b, "  %6d  %s  (e.g. %s)\n", s.Errors[k], k, s.ErrorExamples[k])
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step\tcount\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
	for _, k := range stepOrder(s.Endpoints) {
		l := s.Endpoints[k]
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t\n", k, l.Count, l.P50, l.P90, l.P99, l.Max)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString("\n")
	if s.ServerCPUMsPerFlow != nil {
		fmt.Fprintf(&b, "server CPU:  %.3f ms per flow\n", *s.ServerCPUMsPerFlow)
	} else {
		b.WriteString("server CPU:  not measured (--server-pid PID)\n")
	}
	if d := s.DB; d != nil {
		fmt.Fprintf(&b, "PostgreSQL:  %s commits, %s rows written, %s WAL bytes per flow (totals %d, %d, %d)\n",
			orNA(d.CommitsPerFlow), orNA(d.RowsWrittenPerFlow), orNA(d.WALBytesPerFlow), d.Commits, d.RowsWritten, d.WALBytes)
		if d.OtherDatabasesRowsWritten > 0 {
			fmt.Fprintf(&b, "             (WAL is the cluster's: other databases wrote %d rows meanwhile)\n", d.OtherDatabasesRowsWritten)
		}
		if d.Statements != nil {
			fmt.Fprintf(&b, "             %s SQL statements per flow (total %d)\n", orNA(d.StatementsPerFlow), *d.Statements)
		} else {
			fmt.Fprintf(&b, "             SQL statements: unavailable (%s)\n", d.StatementsUnavailable)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// stepOrder lists the steps in flow order, any unknown ones last.
func stepOrder(m map[string]Latency) []string {
	order := []string{StepAuthorize, StepReview, StepPing, StepToken, StepRedeem}
	var out []string
	for _, k := range order {
		if _, ok := m[k]; ok {
			out = append(out, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(order, k) {
			out = append(out, k)
		}
	}
	return out
}

func orNA(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", *v)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// ProgressBar returns a Progress callback that redraws one line on w (a
// terminal), and a function that ends the line.
func ProgressBar(w io.Writer) (update func(Progress), done func()) {
	drawn := false
	update = func(p Progress) {
		const width = 30
		filled := 0
		if p.Total > 0 {
			filled = min(width, p.Done*width/p.Total)
		}
		rate := 0.0
		if p.Elapsed > 0 {
			rate = float64(p.Done) / p.Elapsed.Seconds()
		}
		fmt.Fprintf(w, "\r%-7s [%s%s] %d/%d flows  %.1f/s  %s  %s\x1b[K", p.Phase, strings.Repeat("#", filled),
			strings.Repeat(".", width-filled), p.Done, p.Total, rate, plural(p.Errors, "error"), p.Elapsed.Round(time.Second))
		drawn = true
	}
	done = func() {
		if drawn {
			fmt.Fprint(w, "\r\x1b[K")
		}
	}
	return update, done
}

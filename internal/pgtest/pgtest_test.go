package pgtest

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestNew proves the helper end to end from whichever source this run has:
// with COUNTERSIGN_PGTEST_PRIVATE=1 (as CI runs it, once as root and once as an
// unprivileged user) that is the private cluster.
func TestNew(t *testing.T) {
	s, err := Find()
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(EnvPrivate) == "1" && os.Getenv("DATABASE_URL") == "" && s.Source != "private" {
		t.Fatalf("source = %q with %s=1, want private", s.Source, EnvPrivate)
	}
	t.Logf("PostgreSQL source: %s", s.Source)

	db := New(t)
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM request_types`); err != nil {
		t.Fatalf("migrated schema missing: %v", err)
	}
	if _, err := db.Exec(`INSERT INTO request_types (name, version) VALUES ('probe', 1)`); err != nil {
		t.Fatal(err)
	}

	// A second database is independent of the first.
	other := New(t)
	if err := other.Get(&n, `SELECT count(*) FROM request_types`); err != nil || n != 0 {
		t.Fatalf("second database sees %d rows (err %v), want a fresh one", n, err)
	}
}

func TestFindFailsWithInstructions(t *testing.T) {
	env := map[string]string{EnvPrivate: "1"}
	_, err := find(context.Background(), func(k string) string { return env[k] }, []string{t.TempDir()})
	if err == nil {
		t.Fatal("find succeeded with no server and no binaries")
	}
	for _, want := range []string{"apt-get install postgresql", "brew install postgresql", "DATABASE_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}

func TestFindRejectsMalformedDatabaseURL(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "mysql://x"}
	_, err := find(context.Background(), func(k string) string { return env[k] }, nil)
	if err == nil || !strings.Contains(err.Error(), "postgres://") {
		t.Fatalf("err = %v, want one naming the expected URL form", err)
	}
}

// BenchmarkNew measures what every database test pays for its fresh, migrated
// database (a clone of the template).
func BenchmarkNew(b *testing.B) {
	New(b) // build the template outside the measurement
	b.ResetTimer()
	for b.Loop() {
		New(b)
	}
}

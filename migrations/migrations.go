// Package migrations holds the database schema as numbered SQL files, embedded
// in the binary and applied with goose under a PostgreSQL advisory lock, so that
// several replicas can start at the same instant.
package migrations

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed *.sql
var files embed.FS

// FS returns the embedded migration files.
func FS() fs.FS { return files }

// Apply brings the database up to the latest migration. It holds a session-level
// advisory lock while it works, so concurrent callers (replicas starting at once)
// wait for each other and every migration is applied exactly once.
func Apply(ctx context.Context, db *sql.DB, logger *slog.Logger) error {
	locker, err := lock.NewPostgresSessionLocker(
		// Retry every second for up to five minutes: a long migration on another
		// replica must not make this one give up.
		lock.WithLockTimeout(1, 300),
	)
	if err != nil {
		return fmt.Errorf("migrations: locker: %w", err)
	}
	opts := []goose.ProviderOption{goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true)}
	if logger != nil {
		opts = append(opts, goose.WithSlog(logger))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, files, opts...)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrations: up: %w", err)
	}
	if logger != nil {
		for _, r := range results {
			logger.InfoContext(ctx, "migration applied", "version", r.Source.Version, "file", path.Base(r.Source.Path), "duration", r.Duration)
		}
	}
	return nil
}

// Latest returns the version number of the newest embedded migration.
func Latest() int64 {
	v := versions()
	return v[len(v)-1]
}

// Current returns the newest migration version applied to db, or 0 when the
// database has never been migrated.
func Current(ctx context.Context, db *sql.DB) (int64, error) {
	const q = `SELECT CASE WHEN to_regclass('goose_db_version') IS NULL THEN 0
	  ELSE (SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied) END`
	var v int64
	if err := db.QueryRowContext(ctx, q).Scan(&v); err != nil {
		return 0, fmt.Errorf("migrations: current version: %w", err)
	}
	return v, nil
}

// Hash identifies the exact set of embedded migrations; test databases built
// from a template are keyed by it.
func Hash() string {
	h := sha256.New()
	for _, name := range names() {
		b, _ := files.ReadFile(name)
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

var names = sync.OnceValue(func() []string {
	entries, err := files.ReadDir(".")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
})

var versions = sync.OnceValue(func() []int64 {
	var out []int64
	for _, n := range names() {
		num, _, _ := strings.Cut(n, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			panic(fmt.Sprintf("migrations: %s: name must start with a version number", n))
		}
		out = append(out, v)
	}
	return out
})

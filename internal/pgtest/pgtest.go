// Package pgtest gives every test that needs PostgreSQL a fresh, migrated
// database in milliseconds: the migrations run once into a template database
// (keyed by their hash), and each test gets a clone of it (pgtestdb).
//
// Where the server comes from, in order:
//  1. DATABASE_URL (a postgres:// URL);
//  2. 127.0.0.1:5432 as user postgres (skipped when COUNTERSIGN_PGTEST_PRIVATE=1);
//  3. a private cluster under $TMPDIR/countersign-pgtest-<uid>, started from the
//     local PostgreSQL binaries and left running for the next test process.
//
// When none can be had the test fails with a message that says how to get one;
// it never skips.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the database/sql driver
	"github.com/peterldowns/pgtestdb"

	"github.com/countersign/countersign/internal/pgcluster"
	"github.com/countersign/countersign/migrations"
)

// EnvPrivate, when "1", makes the helper ignore 127.0.0.1:5432 and use (or
// start) its private cluster; CI sets it to prove that path on every run.
const EnvPrivate = "COUNTERSIGN_PGTEST_PRIVATE"

// Source says where the server came from: "DATABASE_URL", "localhost" or "private".
type Source string

// Server describes the PostgreSQL server the tests use.
type Server struct {
	Source Source
	Config pgtestdb.Config // superuser connection to its "postgres" database
}

var (
	serverOnce sync.Once
	server     Server
	serverErr  error
)

// Find locates (or starts) the server once per process.
func Find() (Server, error) {
	serverOnce.Do(func() { server, serverErr = find(context.Background(), os.Getenv, nil) })
	return server, serverErr
}

// find resolves the server; getenv and searchDirs (see pgcluster.Options) are
// parameters so the failure path can be tested.
func find(ctx context.Context, getenv func(string) string, searchDirs []string) (Server, error) {
	if u := getenv("DATABASE_URL"); u != "" {
		conf, err := configFromURL(u)
		if err != nil {
			return Server{}, err
		}
		if err := ping(ctx, conf); err != nil {
			return Server{}, fmt.Errorf("pgtest: DATABASE_URL is set but unreachable: %w", err)
		}
		return Server{Source: "DATABASE_URL", Config: conf}, nil
	}
	var tried []string
	if getenv(EnvPrivate) != "1" {
		conf := pgtestdb.Config{DriverName: "postgres", Host: "127.0.0.1", Port: "5432", User: "postgres", Database: "postgres", Options: "sslmode=disable&binary_parameters=yes"}
		err := ping(ctx, conf)
		if err == nil {
			return Server{Source: "localhost", Config: conf}, nil
		}
		tried = append(tried, fmt.Sprintf("127.0.0.1:5432: %v", err))
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("countersign-pgtest-%d", os.Getuid()), "postgres")
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, SearchDirs: searchDirs})
	if err != nil {
		tried = append(tried, err.Error())
		return Server{}, fmt.Errorf("pgtest: no PostgreSQL server for the tests. Tried:\n  - %s\n"+
			"Get one: set DATABASE_URL=postgres://user:pass@host:5432/postgres, run a server on 127.0.0.1:5432 "+
			"(user postgres, trust auth), or install the server binaries (Debian/Ubuntu: apt-get install postgresql; "+
			"macOS: brew install postgresql) so a private cluster can be started", strings.Join(tried, "\n  - "))
	}
	conf := pgtestdb.Config{DriverName: "postgres", Port: "5432", User: pgcluster.Superuser, Database: "postgres",
		Options: "host=" + url.QueryEscape(c.Dir()) + "&sslmode=disable&binary_parameters=yes"}
	if err := ping(ctx, conf); err != nil {
		return Server{}, fmt.Errorf("pgtest: private cluster in %s: %w", c.Dir(), err)
	}
	return Server{Source: "private", Config: conf}, nil
}

func configFromURL(raw string) (pgtestdb.Config, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return pgtestdb.Config{}, fmt.Errorf("pgtest: DATABASE_URL must be a postgres:// URL")
	}
	pass, _ := u.User.Password()
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	q := u.Query()
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	if q.Get("binary_parameters") == "" {
		q.Set("binary_parameters", "yes") // as the server connects
	}
	return pgtestdb.Config{DriverName: "postgres", Host: u.Hostname(), Port: port, User: u.User.Username(),
		Password: pass, Database: strings.TrimPrefix(u.Path, "/"), Options: q.Encode()}, nil
}

func ping(ctx context.Context, conf pgtestdb.Config) error {
	db, err := sql.Open("postgres", conf.URL())
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// migrator builds the template database with the embedded migrations.
type migrator struct{}

func (migrator) Hash() (string, error) { return migrations.Hash(), nil }

func (migrator) Migrate(ctx context.Context, db *sql.DB, _ pgtestdb.Config) error {
	return migrations.Apply(ctx, db, nil)
}

// New returns a connection pool to a fresh, migrated database that is dropped
// when the test passes.
func New(t testing.TB) *sqlx.DB {
	t.Helper()
	return sqlx.NewDb(pgtestdb.New(t, mustServer(t), migrator{}), "postgres")
}

// NewConfig is New for tests that need the connection settings (to hand a
// DATABASE_URL to a subprocess, say) rather than a pool.
func NewConfig(t testing.TB) pgtestdb.Config {
	t.Helper()
	return *pgtestdb.Custom(t, mustServer(t), migrator{})
}

// Empty returns the settings of a new database with no schema at all, dropped
// when the test ends.
func Empty(t testing.TB) pgtestdb.Config {
	t.Helper()
	return *pgtestdb.Custom(t, mustServer(t), pgtestdb.NoopMigrator{})
}

func mustServer(t testing.TB) pgtestdb.Config {
	t.Helper()
	s, err := Find()
	if err != nil {
		t.Fatal(err)
	}
	return s.Config
}

// Addr returns the network address of the server behind conf, for tests that
// put something (a proxy that can fail) between a client and the server.
func Addr(conf pgtestdb.Config) (network, address string) {
	if conf.Host != "" {
		return "tcp", net.JoinHostPort(conf.Host, conf.Port)
	}
	q, _ := url.ParseQuery(conf.Options)
	return "unix", filepath.Join(q.Get("host"), ".s.PGSQL."+conf.Port)
}

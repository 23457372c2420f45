package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the database/sql driver

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/internal/pgcluster"
)

// openDB connects to the configured database. In dev mode without a database
// URL it first starts (or reuses) the private cluster under DataDir; the
// returned close function stops it again if this process started it.
func openDB(ctx context.Context, cfg *Config, logger *slog.Logger) (*sqlx.DB, string, func(), error) {
	dsn := cfg.DatabaseURL
	stopCluster := func() {}
	if dsn == "" {
		c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(cfg.DataDir, "postgres"), Durable: true, Logger: logger})
		if err != nil {
			return nil, "", nil, err
		}
		stopCluster = func() {
			if err := c.Stop(); err != nil {
				logger.Error("stopping private PostgreSQL cluster", "err", err)
			}
		}
		if err := c.EnsureDatabase(ctx, "countersign"); err != nil {
			stopCluster()
			return nil, "", nil, err
		}
		dsn = c.DSN("countersign")
	}
	db, err := sqlx.Open("postgres", singleRoundTrip(dsn))
	if err != nil {
		stopCluster()
		return nil, "", nil, fmt.Errorf("database: %w", err)
	}
	approvals.ConfigurePool(db)
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		stopCluster()
		return nil, "", nil, fmt.Errorf("cannot reach the database: %w", err)
	}
	return db, dsn, func() { db.Close(); stopCluster() }, nil
}

// singleRoundTrip sets lib/pq's binary_parameters unless dsn sets it: a
// statement with parameters is then parsed, bound and executed in one round
// trip instead of two (lib/pq otherwise asks PostgreSQL for the parameter
// types first). The domain sends jsonb and text as text, bytea as []byte.
func singleRoundTrip(dsn string) string {
	if strings.Contains(dsn, "binary_parameters") {
		return dsn
	}
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("binary_parameters", "yes")
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " binary_parameters=yes"
}

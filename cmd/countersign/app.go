package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/internal/egress"
	"github.com/countersign/countersign/migrations"
)

// app is a process's wiring: the database and the domain service.
type app struct {
	cfg *Config
	db  *sqlx.DB
	// listener hears every replica's changes (serve only; Run it).
	listener *approvals.Listener
	svc      *approvals.Service
	metrics  *prometheus.Registry // what /metrics serves
}

// openApp connects, migrates and wires the domain. close releases it all.
// Only a subcommand that needs the KEK (cfg.kind) loads it and has a
// KeyStore; the others get none (Service.Keys is nil) and never touch key
// material.
func openApp(ctx context.Context, cfg *Config, logger *slog.Logger) (*app, func(), error) {
	var kek []byte
	if cfg.kind.needsKEK() {
		var err error
		if kek, err = loadKEK(cfg); err != nil {
			return nil, nil, err
		}
	} else {
		// The service keys its auth_req_id MAC from the KEK. No such
		// subcommand issues or reads one; a throwaway key keeps any it
		// could make worthless outside this process.
		kek = make([]byte, approvals.KEKSize)
		_, _ = rand.Read(kek)
	}
	db, dsn, closeDB, err := openDB(ctx, cfg, logger)
	if err != nil {
		return nil, nil, err
	}
	if err := migrations.Apply(ctx, db.DB, logger); err != nil {
		closeDB()
		return nil, nil, err
	}
	store := approvals.NewStore(db)
	var keys *approvals.KeyStore
	if cfg.kind.needsKEK() {
		if keys, err = approvals.NewKeyStore(db, kek, nil); err != nil {
			closeDB()
			return nil, nil, err
		}
		if err := keys.Ensure(ctx); err != nil {
			closeDB()
			return nil, nil, err
		}
	}
	var hintIssuers []approvals.LoginHintIssuer
	for _, li := range cfg.LoginHintIssuers {
		h, _ := approvals.ParseLoginHintIssuer(li) // checked by Validate
		hintIssuers = append(hintIssuers, h)
	}
	tz, err := time.LoadLocation(cfg.TimeZone)
	if err != nil {
		closeDB()
		return nil, nil, err
	}
	// serve keeps one LISTEN connection: its caches are dropped by the
	// events of every replica. Admin commands read everything afresh.
	var listener *approvals.Listener
	if cfg.kind == kindServe {
		if listener, err = approvals.NewListener(dsn, logger); err != nil {
			closeDB()
			return nil, nil, err
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewDBStatsCollector(db.DB, "countersign"))
	svc := approvals.NewService(store, approvals.NewTypeStore(store), keys, approvals.Config{
		Issuer: issuer(cfg), KEK: kek, Logger: logger, LoginHintIssuers: hintIssuers, TimeZone: tz,
		HTTPClient: outboundPolicy(cfg).Client(5*time.Second, nil, nil), Metrics: approvals.NewMetrics(reg),
		Listener: listener, Fatigue: fatigue(cfg), AnnounceAfterCommit: cfg.kind == kindServe || cfg.announce,
	})
	// The service's queued announcements go out before the database closes.
	return &app{cfg: cfg, db: db, listener: listener, svc: svc, metrics: reg}, func() { svc.Close(); closeDB() }, nil
}

// outboundPolicy says where requests to URLs that clients chose (ping
// callbacks, JWKS URLs) may go: https to public addresses, plus the
// --ping-allow ranges, plus loopback http in dev mode.
func outboundPolicy(cfg *Config) egress.Policy {
	allow, _ := egress.ParseAllowlist(cfg.PingAllow) // checked by Validate
	return egress.Policy{Allow: allow, DevLoopback: cfg.Dev}
}

// issuer is the configured issuer, or in dev mode http://localhost:PORT.
func issuer(cfg *Config) string {
	if cfg.Issuer != "" {
		return cfg.Issuer
	}
	port := "8080"
	if _, p, err := net.SplitHostPort(cfg.Addr); err == nil && p != "" && p != "0" {
		port = p
	}
	return "http://localhost:" + port
}

// loadKEK returns the configured key-encryption key; in dev mode without one
// it is generated once into the data directory and kept there.
func loadKEK(cfg *Config) ([]byte, error) {
	if cfg.KEK != "" {
		return decodeKEK(cfg.KEK)
	}
	path := filepath.Join(cfg.DataDir, "kek")
	b, err := os.ReadFile(path)
	if err == nil {
		return decodeKEK(string(b))
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("dev key-encryption key: %w", err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return nil, fmt.Errorf("dev key-encryption key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, os.ErrExist) { // another process just wrote it
		return loadKEK(cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("dev key-encryption key: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
		return nil, fmt.Errorf("dev key-encryption key: %w", err)
	}
	return key, f.Sync()
}

// fatigue is the serve command's guards; other commands admit nothing.
func fatigue(cfg *Config) *approvals.Fatigue {
	if cfg.kind != kindServe {
		return nil
	}
	f := cfg.Fatigue
	return &f
}

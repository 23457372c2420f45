package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"time"

	"github.com/countersign/countersign/notify"
	"github.com/countersign/countersign/web"
)

func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	cfg, err := loadConfig("serve", args, stdout, getenv, kindServe, nil)
	if err != nil {
		return err
	}
	logger := newLogger(cfg, stderr)
	a, closeApp, err := openApp(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer closeApp()
	if cfg.Dev {
		if err := seedDemo(ctx, a, stdout); err != nil {
			return err
		}
	}
	// One LISTEN connection per process hands committed events to the
	// subscribers in it.
	listenCtx, stopListening := context.WithCancel(context.WithoutCancel(ctx))
	defer stopListening()
	go a.listener.Run(listenCtx)

	sweepCtx, stopSweep := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSweep()
	go a.svc.Sweep(sweepCtx, 5*time.Second)

	// The audit sealer runs on every replica; one leads at a time.
	if cfg.AuditSealInterval > 0 {
		host, _ := os.Hostname()
		sealer := a.svc.NewSealer(fmt.Sprintf("%s/%d", host, os.Getpid()), a.metrics)
		sealCtx, stopSealing := context.WithCancel(context.WithoutCancel(ctx))
		sealDone := make(chan struct{})
		go func() { defer close(sealDone); sealer.Run(sealCtx, cfg.AuditSealInterval) }()
		defer func() { stopSealing(); <-sealDone }()
	}

	// The outbox worker runs on every replica; on shutdown it finishes the
	// sends in flight and records them.
	keys := a.svc.Keys()
	worker, err := notify.NewWorker(notify.Config{DB: a.db, AuthReqID: a.svc.AuthReqID, Logger: logger,
		Policy: outboundPolicy(cfg), Metrics: a.metrics, Subscriber: a.svc.Issuer(),
		VAPID: func(ctx context.Context) (string, string, error) {
			k, err := keys.VAPID(ctx)
			return k.Public, k.Private, err
		}})
	if err != nil {
		return err
	}
	// Rows are sent as soon as they are queued: by this process's
	// admissions, or by any replica's decisions, which the listener hears of.
	a.svc.OnOutbox(worker.Wake)
	a.listener.Subscribe(worker.Notice)
	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	workerDone := make(chan struct{})
	go func() { defer close(workerDone); worker.Run(workerCtx) }()
	defer func() { stopWorker(); <-workerDone }()

	srv := &http.Server{
		Handler: web.New(web.Options{DB: a.db, Service: a.svc, Logger: logger, Metrics: a.metrics, Dev: devLinks(cfg, a.svc.Issuer()),
			Listener: a.listener}).Handler(),
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    web.ServerMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger.Info("countersign listening", "addr", ln.Addr().String(), "issuer", a.svc.Issuer(), "version", version, "dev", cfg.Dev)

	if addr := cfg.metricsAddr(); addr != "" {
		mln, err := net.Listen("tcp", addr)
		switch {
		case err != nil && cfg.MetricsAddr == "":
			// Dev mode's default address is taken (another dev server):
			// metrics are a convenience there, not a reason to stop.
			logger.Warn("metrics not served: the dev default address is taken; set --metrics-addr", "addr", addr, "err", err)
		case err != nil:
			return fmt.Errorf("listen on --metrics-addr: %w", err)
		default:
			msrv := &http.Server{Handler: web.MetricsHandler(a.metrics, cfg.Pprof), ReadHeaderTimeout: httpReadHeaderTimeout,
				// A CPU profile or trace streams for its ?seconds=.
				WriteTimeout: 5 * time.Minute, IdleTimeout: httpIdleTimeout}
			go func() { _ = msrv.Serve(mln) }()
			defer msrv.Close()
			logger.Info("metrics listening", "addr", mln.Addr().String(), "pprof", cfg.Pprof)
		}
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: draining in-flight requests", "timeout", cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// Server timeouts, set from the start so that a slow or stalled client can hold
// a connection only so long.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 30 * time.Second
	httpWriteTimeout      = 60 * time.Second
	httpIdleTimeout       = 120 * time.Second
)

// devLinks says whether the dev-only sign-in links are served: in dev mode,
// and only for an issuer on this machine (localhost or a loopback
// address), never for one others can reach.
func devLinks(cfg *Config, issuer string) bool {
	if !cfg.Dev {
		return false
	}
	u, err := url.Parse(issuer)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

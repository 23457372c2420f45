//go:build failpoints

package notify

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"
)

// Failpoints for crash tests, present only in binaries built with
// -tags failpoints.
//
//	COUNTERSIGN_FAILPOINT=ping-before-send  the worker claims a row, logs
//	                                        "failpoint reached", then blocks
//	                                        until it is stopped (or killed)
//	COUNTERSIGN_FAILPOINT_LEASE=2s          claim leases last this long, so a
//	                                        restart need not wait 30 s
const (
	envFailpoint      = "COUNTERSIGN_FAILPOINT"
	envFailpointLease = "COUNTERSIGN_FAILPOINT_LEASE"
	fpPingBeforeSend  = "ping-before-send"
)

func beforeSend(ctx context.Context, logger *slog.Logger, rowID int64) error {
	if !slices.Contains(strings.Split(os.Getenv(envFailpoint), ","), fpPingBeforeSend) {
		return nil
	}
	logger.WarnContext(ctx, "failpoint reached", "failpoint", fpPingBeforeSend, "outbox_id", rowID)
	<-ctx.Done()
	return ctx.Err()
}

func leaseOverride(d time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(envFailpointLease)); err == nil && v > 0 {
		return v
	}
	return d
}

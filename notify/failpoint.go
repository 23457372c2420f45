//go:build !failpoints

package notify

import (
	"context"
	"log/slog"
	"time"
)

// beforeSend is the failpoint right before a row is sent. Only a build with
// the failpoints tag has one (failpoint_on.go); here it does nothing, and the
// compiler drops the call and any trace of the failpoint's name.
func beforeSend(context.Context, *slog.Logger, int64) error { return nil }

// leaseOverride is the identity outside failpoints builds.
func leaseOverride(d time.Duration) time.Duration { return d }

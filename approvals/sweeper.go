package approvals

import (
	"context"
	"time"
)

// Sweep expires due requests every interval until ctx ends, makes prepared
// signing keys current when their time comes, and once a minute forgets what
// no one reads any more (the jtis of expired client assertions and
// login_hint_tokens, velocity counters older than a day). It is safe to run on every replica: each batch claims
// its rows with SKIP LOCKED, key promotion runs under a lock per algorithm,
// and the purges are idempotent.
func (s *Service) Sweep(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastPurge time.Time
	for {
		for {
			ids, err := s.store.ExpireDue(ctx, 500)
			if err != nil {
				if ctx.Err() == nil {
					s.logger.WarnContext(ctx, "expiry sweep failed", "err", err)
				}
				break
			}
			for _, id := range ids {
				s.logger.InfoContext(ctx, "request expired", "id", id)
			}
			if len(ids) < 500 {
				break
			}
		}
		if keys, err := s.keys.PromoteDue(ctx); err != nil {
			if ctx.Err() == nil {
				s.logger.WarnContext(ctx, "promoting signing keys failed", "err", err)
			}
		} else {
			for _, k := range keys {
				s.logger.InfoContext(ctx, "signing key now current", "kid", k.KID, "alg", k.Alg)
			}
		}
		if time.Since(lastPurge) >= time.Minute {
			lastPurge = time.Now()
			if n, err := s.store.PurgeAssertionJTIs(ctx); err != nil && ctx.Err() == nil {
				s.logger.WarnContext(ctx, "purging client assertion jtis failed", "err", err)
			} else if n > 0 {
				s.logger.DebugContext(ctx, "client assertion jtis purged", "count", n)
			}
			if n, err := s.store.PurgeExpiredAccess(ctx); err != nil && ctx.Err() == nil {
				s.logger.WarnContext(ctx, "purging expired links, sessions and ceremonies failed", "err", err)
			} else if n > 0 {
				s.logger.DebugContext(ctx, "expired links, sessions and ceremonies purged", "count", n)
			}
			if n, err := s.store.PurgeVelocity(ctx); err != nil && ctx.Err() == nil {
				s.logger.WarnContext(ctx, "purging velocity counters failed", "err", err)
			} else if n > 0 {
				s.logger.DebugContext(ctx, "old velocity counters purged", "count", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

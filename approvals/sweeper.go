package approvals

import (
	"context"
	"time"
)

// Sweep expires due requests every interval until ctx ends. It is safe to
// run on every replica: each batch claims its rows with SKIP LOCKED.
func (s *Service) Sweep(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
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
		if n, err := s.store.PurgeAssertionJTIs(ctx); err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "purging client assertion jtis failed", "err", err)
		} else if n > 0 {
			s.logger.DebugContext(ctx, "client assertion jtis purged", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

package relay

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/asynqlayout"
	"github.com/dj-signals/signals/internal/throttle"
)

// Recoverer takes back, into their queues, the running tasks whose worker
// stopped renewing their lease for RecoverAfter: it was killed, or lost
// Redis. asynq's own recoverer would take them back only 30 s to 90 s
// after the lease ended (it waits 30 s for clock skew and looks once a
// minute), 60 s to 120 s after the kill. A worker cut off from Redis stops
// its runs sooner than RecoverAfter (the Worker's lease watch), so a run
// taken back is not still going on; one that stalled stops them as it
// resumes. Each task goes back as it is, with its
// task ID, so its outbox row needs nothing. It shares only Redis with the
// Relay beside it, and runs on its own cadence, once a second.
type Recoverer struct {
	redis  redis.UniversalClient
	queues func() []string
	cfg    Config
	log    *throttle.Logger
}

// recoverEvery is how often a Recoverer looks at the leases.
const recoverEvery = time.Second

// NewRecoverer returns a Recoverer for the queues that queues returns, in
// the Redis behind rc, which the caller owns.
func NewRecoverer(rc redis.UniversalClient, queues func() []string, cfg Config) *Recoverer {
	return &Recoverer{redis: rc, queues: queues, cfg: cfg, log: throttle.New(cfg.Logger, 30*time.Second)}
}

// Run takes tasks back each second until ctx is done. A failure (Redis
// unreachable) is logged, at most once per 30 s, and tried again the next
// second.
func (c *Recoverer) Run(ctx context.Context) {
	t := time.NewTicker(recoverEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := c.recover(ctx); err != nil && ctx.Err() == nil {
				c.log.Log(slog.LevelWarn, "signals: could not look for running tasks whose worker died; trying again each second", "error", err)
			}
		}
	}
}

// recover takes back, in each queue, up to BatchSize tasks whose lease has
// gone unrenewed for RecoverAfter.
func (c *Recoverer) recover(ctx context.Context) error {
	for _, q := range c.queues() {
		ids, err := asynqlayout.RequeueStale(ctx, c.redis, q, c.cfg.RecoverAfter, c.cfg.BatchSize)
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			c.cfg.Logger.Warn("signals: took back running tasks whose worker stopped renewing their lease (it died, or lost Redis); they run again",
				"queue", q, "tasks", len(ids), "unrenewed_for", c.cfg.RecoverAfter)
		}
	}
	return nil
}

package relay

import (
	"context"

	"github.com/dj-signals/signals/internal/asynqlayout"
)

// recoverLeases takes back, into their queues, the tasks whose worker
// stopped renewing their lease for RecoverAfter: it was killed, or lost
// Redis. asynq's own recoverer would take them back only 30 s to 90 s
// after the lease ended (it waits 30 s for clock skew and looks once a
// minute), 60 s to 120 s after the kill. A worker cut off from Redis stops
// its runs sooner than RecoverAfter (the Worker's lease watch), so a run
// taken back is not still going on. Each task goes back as it is, with its
// task ID, so its outbox row needs nothing.
func (r *Relay) recoverLeases(ctx context.Context) error {
	if r.queues == nil {
		return nil
	}
	for _, q := range r.queues() {
		ids, err := asynqlayout.RequeueStale(ctx, r.redis, q, r.cfg.RecoverAfter, r.cfg.BatchSize)
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			r.cfg.Logger.Warn("signals: took back running tasks whose worker stopped renewing their lease (it died, or lost Redis); they run again",
				"queue", q, "tasks", len(ids), "unrenewed_for", r.cfg.RecoverAfter)
		}
	}
	return nil
}

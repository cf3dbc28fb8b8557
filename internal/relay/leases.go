package relay

import (
	"context"
	"time"
)

// leaseGrace is how long after a running task's lease ended the relay
// takes the task back: a worker that lost Redis cancels its run when the
// lease ends, so a run still going on has been told to stop by then. It
// covers the lease's whole-second score and small clock differences.
const leaseGrace = time.Second

// recoverLeases takes back, into their queues, the tasks whose worker
// stopped renewing their lease: it was killed, or lost Redis for longer
// than the lease. asynq's own recoverer would take them back 30 s to 90 s
// after the lease ended (it waits 30 s for clock skew and looks once a
// minute); this brings a killed worker's receivers back within about
// 30 s of the kill, the lease's length. Each task goes back as it is,
// with its task ID, so its outbox row needs nothing.
func (r *Relay) recoverLeases(ctx context.Context) error {
	if r.queues == nil {
		return nil
	}
	cutoff := time.Now().Add(-leaseGrace)
	for _, q := range r.queues() {
		ids, err := requeueExpired(ctx, r.redis, q, cutoff, r.cfg.BatchSize)
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			r.cfg.Logger.Warn("signals: took back running tasks whose worker stopped renewing their lease (it died, or lost Redis); they run again",
				"queue", q, "tasks", len(ids))
		}
	}
	return nil
}

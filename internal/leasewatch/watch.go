// Package leasewatch stops a worker's runs whose asynq lease the worker
// has not renewed for a while: asynq's heartbeat renews a running task's
// lease every 5 s, and the Dispatcher gives a task whose lease went
// unrenewed for its RecoverAfter (15 s at least) to another worker. A
// worker cut off from Redis, or stalled, stops its runs first, so that a
// task taken back is not still running here.
package leasewatch

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/asynqlayout"
	"github.com/dj-signals/signals/internal/throttle"
)

// ErrLost is the cause of the ctx of a run the watch stopped.
var ErrLost = errors.New("signals: this worker could not renew the task's lease in Redis (Redis unreachable, or the process stalled): the run was stopped, and the task runs again")

// every is how often a Watch reads its runs' leases.
const every = time.Second

// Watch tracks the runs of one worker. It is safe for concurrent use.
type Watch struct {
	rc    redis.UniversalClient
	after time.Duration
	log   *throttle.Logger

	mu   sync.Mutex
	runs map[*run]struct{}
}

// run is one tracked run. end is only read and written by Run's goroutine
// once Track has handed the run over.
type run struct {
	queue, taskID string
	cancel        context.CancelCauseFunc
	end           time.Time // when its lease ends, as last read; zero: the lease set no longer holds it
}

// New returns a Watch that reads leases through rc and stops a run whose
// lease has gone unrenewed for after, logging through log.
func New(rc redis.UniversalClient, after time.Duration, log *throttle.Logger) *Watch {
	return &Watch{rc: rc, after: after, log: log, runs: map[*run]struct{}{}}
}

// Track returns ctx for a run of task taskID from queue, canceled with
// cause ErrLost if the watch stops the run, and the function to call when
// the run returns. The run's lease was granted when asynq dequeued the
// task, just before: Track counts it renewed a second ago.
func (w *Watch) Track(ctx context.Context, queue, taskID string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	r := &run{queue: queue, taskID: taskID, cancel: cancel, end: time.Now().Add(asynqlayout.LeaseDuration - time.Second)}
	w.mu.Lock()
	w.runs[r] = struct{}{}
	w.mu.Unlock()
	return ctx, func() {
		w.mu.Lock()
		delete(w.runs, r)
		w.mu.Unlock()
		cancel(nil)
	}
}

// Run reads the runs' leases every second until ctx is done.
func (w *Watch) Run(ctx context.Context) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.check(ctx)
		}
	}
}

// check reads the runs' leases, in one round trip, and stops each run
// whose lease has gone unrenewed for after: as last read, which catches a
// process that stalled past it (its Redis may hold a newer run's lease by
// now), or as read now.
func (w *Watch) check(ctx context.Context) {
	w.mu.Lock()
	runs := make([]*run, 0, len(w.runs))
	for r := range w.runs {
		runs = append(runs, r)
	}
	w.mu.Unlock()
	if len(runs) == 0 {
		return
	}
	queues, ids := make([]string, len(runs)), make([]string, len(runs))
	for i, r := range runs {
		queues[i], ids[i] = r.queue, r.taskID
	}
	before := time.Now()
	rctx, cancel := context.WithTimeout(ctx, every)
	ends, err := asynqlayout.LeaseScores(rctx, w.rc, queues, ids)
	cancel()
	now, stopped := time.Now(), 0
	for i, r := range runs {
		stale := w.stale(before, r.end)
		if err == nil {
			r.end = ends[i]
			stale = stale || w.stale(now, r.end)
		}
		if stale {
			r.cancel(ErrLost)
			r.end = time.Time{}
			stopped++
		}
	}
	if stopped > 0 {
		attrs := []any{"runs", stopped, "unrenewed_for", w.after}
		if err != nil {
			attrs = append(attrs, "error", err)
		}
		w.log.Log(slog.LevelWarn, "signals: stopped runs whose task lease this worker could not renew; the Dispatcher puts them back in their queue, to run again", attrs...)
	}
}

// stale reports whether a lease ending at end was, at now, unrenewed for
// after. A run the lease set no longer holds (a zero end) is nobody's to
// take back: it finished, or Redis lost its data.
func (w *Watch) stale(now, end time.Time) bool {
	return !end.IsZero() && asynqlayout.Unrenewed(now, end) >= w.after
}

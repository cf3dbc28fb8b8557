// Package leasewatch stops a worker's runs whose asynq lease the worker
// has not renewed for a while: asynq's heartbeat renews a running task's
// lease every 5 s, and the Dispatcher gives a task whose lease went
// unrenewed for its RecoverAfter (15 s at least) to another worker. A
// worker cut off from Redis stops its runs first, so that a task taken back
// is not still running here; a worker that stalled past RecoverAfter stops
// them as soon as it resumes. A stopped run then hands asynq its outcome
// only once the task's run in another worker has finished, so that asynq
// writes nothing of it over that run, whose entries share its task ID.
package leasewatch

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
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

// run is one tracked run.
type run struct {
	queue, taskID string
	cancel        context.CancelCauseFunc
	end           atomic.Int64 // when its lease ends, as last read, in Unix seconds; 0: not judged
	stopped       atomic.Bool
	timer         *time.Timer // stops the run once its lease, as last read, may have gone unrenewed for after
}

// New returns a Watch that reads leases through rc and stops a run whose
// lease may have gone unrenewed for after, logging through log.
func New(rc redis.UniversalClient, after time.Duration, log *throttle.Logger) *Watch {
	return &Watch{rc: rc, after: after, log: log, runs: map[*run]struct{}{}}
}

// Track returns ctx for a run of task taskID from queue, canceled with
// cause ErrLost if the watch stops the run, and the function to call when
// the run returns. The run's lease was granted when asynq dequeued the
// task, just before: Track counts it renewed a second ago. Each stop is a
// timer, so that no Redis call, however slow, holds one back, and it
// counts from the earliest renewal the lease's score allows.
//
// For a stopped run, the function returned waits until the task has left
// asynq's active list (its run in the worker that took it back finished),
// or asynq gave up on the run (ctx is done): asynq then writes nothing of
// the stopped run over the other one, whose entries share its task ID. A
// stopped run that nobody took back waits for asynq to give up on it, at
// its Timeout, and is retried then.
func (w *Watch) Track(ctx context.Context, queue, taskID string) (context.Context, func()) {
	given := ctx.Done()
	ctx, cancel := context.WithCancelCause(ctx)
	r := &run{queue: queue, taskID: taskID, cancel: cancel}
	end := time.Now().Add(asynqlayout.LeaseDuration - time.Second)
	r.end.Store(end.Unix())
	r.timer = time.AfterFunc(w.stopIn(end), func() { w.stop(r) })
	w.mu.Lock()
	w.runs[r] = struct{}{}
	w.mu.Unlock()
	return ctx, func() {
		w.mu.Lock()
		delete(w.runs, r)
		w.mu.Unlock()
		r.timer.Stop()
		cancel(nil)
		if r.stopped.Load() {
			w.awaitInactive(given, r)
		}
	}
}

// awaitInactive returns once r's task is no longer in its queue's active
// list, or given is done, looking every quarter second.
func (w *Watch) awaitInactive(given <-chan struct{}, r *run) {
	look := time.NewTicker(every / 4)
	defer look.Stop()
	for {
		select {
		case <-given:
			return
		case <-look.C:
			ctx, cancel := context.WithTimeout(context.Background(), every)
			active, err := asynqlayout.Active(ctx, w.rc, r.queue, r.taskID)
			cancel()
			if err == nil && !active {
				return
			}
		}
	}
}

// stopIn is how long from now a run whose lease ends at end may go on:
// until the lease, renewed at the earliest its score allows, is after old.
func (w *Watch) stopIn(end time.Time) time.Duration {
	return time.Until(asynqlayout.EarliestRenewal(end).Add(w.after))
}

// stop stops r, once.
func (w *Watch) stop(r *run) {
	if !r.stopped.CompareAndSwap(false, true) {
		return
	}
	r.cancel(ErrLost)
	w.log.Log(slog.LevelWarn, "signals: stopped a run whose task lease this worker could not renew; the Dispatcher puts it back in its queue, to run again",
		"task_id", r.taskID, "queue", r.queue, "unrenewed_for", w.after)
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

// check reads the runs' leases, in one round trip, and moves each run's
// stop to its lease's new end. A run the lease set no longer holds is left
// to run: it finished, or Redis lost its data and the ledger sends the
// task again, so nobody takes it back from here.
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
	rctx, cancel := context.WithTimeout(ctx, every)
	ends, err := asynqlayout.LeaseScores(rctx, w.rc, queues, ids)
	cancel()
	if err != nil {
		return // each run's timer stops it in time, from its lease as last read
	}
	for i, r := range runs {
		if r.stopped.Load() || r.end.Load() == 0 {
			continue
		}
		if w.stopIn(time.Unix(r.end.Load(), 0)) <= 0 {
			// A stall outlived the lease as last read, and its timer has
			// not fired yet: the lease read now may be another run's.
			w.stop(r)
			continue
		}
		if ends[i].IsZero() {
			r.end.Store(0)
			r.timer.Stop()
			continue
		}
		r.end.Store(ends[i].Unix())
		r.timer.Reset(w.stopIn(ends[i]))
	}
}

// Package leasewatch stops a worker's runs once the worker has not reached
// Redis for a while: asynq's heartbeat renews a running task's lease every
// 5 s, and the Dispatcher gives a task whose lease went unrenewed for its
// RecoverAfter (20 s at least) to another worker. A worker cut off from
// Redis stops its runs first, so that a task taken back is not still
// running here; a worker that stalled stops them as soon as it resumes. A stopped run then hands asynq its outcome
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

// every is how often the watch reads its runs' leases.

const every = time.Second

// Watch tracks the runs of one worker. It is safe for concurrent use.
type Watch struct {
	rc    redis.UniversalClient
	after time.Duration
	log   *throttle.Logger

	mu     sync.Mutex
	runs   map[*run]struct{}
	closed bool // Run has returned: no run is judged any more
}

// run is one tracked run.
type run struct {
	queue, taskID string
	started       time.Time
	cancel        context.CancelCauseFunc
	seen          atomic.Int64 // when a read last found its lease, in Unix nanoseconds; 0: not judged
	stopped       atomic.Bool
	timer         *time.Timer // stops the run after of not seeing its lease
}

// New returns a Watch that reads leases through rc and stops a run whose
// lease it has not seen for after, logging through log.
func New(rc redis.UniversalClient, after time.Duration, log *throttle.Logger) *Watch {
	return &Watch{rc: rc, after: after, log: log, runs: map[*run]struct{}{}}
}

// Track returns ctx for a run of task taskID from queue, canceled with
// cause ErrLost if the watch stops the run, and the function to call when
// the run returns. The run's lease was granted when asynq dequeued the
// task, just before: Track counts it seen now. Each stop is a timer, so
// that no Redis call, however slow, holds one back.
//
// The watch judges whether this worker reaches Redis, not the lease's
// score: asynq's heartbeat renews the lease, and a score it has not moved
// while Redis answers is left to the Dispatcher.
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
	r := &run{queue: queue, taskID: taskID, started: time.Now(), cancel: cancel}
	r.seen.Store(r.started.UnixNano())
	r.timer = time.AfterFunc(w.after, func() { w.stop(r) })
	w.mu.Lock()
	w.runs[r] = struct{}{}
	if w.closed {
		r.seen.Store(0)
		r.timer.Stop()
	}
	w.mu.Unlock()
	return ctx, func() {
		w.mu.Lock()
		delete(w.runs, r)
		r.timer.Stop() // under mu: check moves only the timers of runs still tracked
		w.mu.Unlock()
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

// stop stops r, once.
func (w *Watch) stop(r *run) {
	if !r.stopped.CompareAndSwap(false, true) {
		return
	}
	r.cancel(ErrLost)
	w.log.Log(slog.LevelWarn, "signals: stopped a run whose task lease this worker could not renew; the Dispatcher puts it back in its queue, to run again",
		"task_id", r.taskID, "queue", r.queue, "unrenewed_for", w.after,
		"running_for", time.Since(r.started).Round(time.Millisecond))
}

// Run reads the runs' leases every second until ctx is done. Then it
// judges no run any more: a run that outlives its worker's shutdown, which
// asynq has put back in its queue, is not stopped for the reads that no
// longer happen.
func (w *Watch) Run(ctx context.Context) {
	t := time.NewTicker(every)
	defer t.Stop()
	defer w.unjudge()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.check(ctx)
		}
	}
}

// unjudge stops the stop of every run tracked now or later.
func (w *Watch) unjudge() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	for r := range w.runs {
		r.seen.Store(0)
		r.timer.Stop()
	}
}

// check reads the runs' leases, in one round trip, and moves the stop of
// each run whose lease it found. A run the lease set no longer holds is
// left to run: it finished, or Redis lost its data and the ledger sends the
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
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, r := range runs {
		if _, tracked := w.runs[r]; !tracked || r.stopped.Load() || r.seen.Load() == 0 {
			continue
		}
		if now.Sub(time.Unix(0, r.seen.Load())) >= w.after {
			// A stall outlived after, and the run's timer has not fired
			// yet: the lease read now may be another run's.
			w.stop(r)
			continue
		}
		if ends[i].IsZero() {
			r.seen.Store(0)
			r.timer.Stop()
			continue
		}
		r.seen.Store(now.UnixNano())
		r.timer.Reset(w.after)
	}
}

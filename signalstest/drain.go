package signalstest

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/store"
)

// DrainTimeout bounds Drain.
const DrainTimeout = 30 * time.Second

// Drain runs a real Dispatcher and Worker for reg until the outbox is empty
// and no task of reg's queues is pending, running, scheduled or waiting to
// retry, then stops both. It fails the test after DrainTimeout. Receivers
// that keep failing hold Drain until their retries run out, so give them
// short Backoff and MaxRetries in tests. Dead-lettered tasks stay in asynq's
// archive for the test to inspect.
func Drain(t testing.TB, db signals.TxBeginner, redisOpt asynq.RedisConnOpt, reg *signals.Registry) {
	t.Helper()
	q, err := store.New(reg.Schema())
	if err != nil {
		t.Fatalf("signalstest: %v", err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := signals.NewDispatcher(reg, db, redisOpt, signals.DispatcherConfig{PollInterval: 10 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatalf("signalstest: %v", err)
	}
	w, err := signals.NewWorker(reg, redisOpt, signals.WorkerConfig{DelayedTaskCheckInterval: 50 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatalf("signalstest: %v", err)
	}
	insp := asynq.NewInspector(redisOpt)
	defer insp.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, run := range []func(context.Context) error{d.Run, w.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- run(ctx)
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("signalstest: %v", err)
			}
		}
	}()

	deadline := time.Now().Add(DrainTimeout)
	for time.Now().Before(deadline) {
		if drained(t, db, q, insp, reg.Queues()) {
			return
		}
		time.Sleep(10 * time.Millisecond) // poll tick
	}
	t.Fatalf("signalstest: outbox and queues of schema %q not drained within %v", reg.Schema(), DrainTimeout)
}

// drained reports whether the queues were idle, then the outbox empty, then
// the queues idle again with no task finished in between: a task moved from
// the outbox meanwhile would be unfinished at the second look.
func drained(t testing.TB, db signals.TxBeginner, q *store.Queries, insp *asynq.Inspector, queues []string) bool {
	t.Helper()
	before, idle := queueState(insp, queues)
	if !idle {
		return false
	}
	var pending int64
	tx, err := db.Begin(context.Background())
	if err != nil {
		t.Fatalf("signalstest: %v", err)
	}
	pending, _, err = q.Count(context.Background(), tx)
	_ = tx.Rollback(context.Background())
	if err != nil {
		t.Fatalf("signalstest: count outbox rows: %v", err)
	}
	if pending > 0 {
		return false
	}
	after, idle := queueState(insp, queues)
	return idle && after == before
}

// queueState returns how many tasks the queues finished so far and whether
// none is pending, running, scheduled or waiting to retry.
func queueState(insp *asynq.Inspector, queues []string) (finished int, idle bool) {
	for _, name := range queues {
		info, err := insp.GetQueueInfo(name)
		if err != nil {
			continue // a queue no task reached yet does not exist in Redis
		}
		finished += info.ProcessedTotal
		if info.Pending+info.Active+info.Scheduled+info.Retry+info.Aggregating > 0 {
			return finished, false
		}
	}
	return finished, true
}

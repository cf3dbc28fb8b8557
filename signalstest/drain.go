package signalstest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/kithook"
	"github.com/dj-signals/signals/internal/store"
)

// DrainTimeout is how long Drain waits for a registry's work before it
// fails the test.
const DrainTimeout = 30 * time.Second

// started is when the test binary started. Drain leaves alone the work
// written before it, by an earlier run.
var started = time.Now()

const (
	// drainTick is how often Drain looks again.
	drainTick = 10 * time.Millisecond
	// reportLimit bounds the outbox rows and the tasks a timeout lists.
	reportLimit = 5
	// listPage is how many tasks one asynq list call returns.
	listPage = 100
)

// Drain runs a real Dispatcher and Worker for reg until reg's work is done,
// then stops both. reg's work is the outbox rows of reg's signals, and the
// tasks of reg's signals in reg's queues that are pending, running,
// scheduled or waiting to retry. Other work does not hold Drain: rows and
// tasks of other registries' signals, in the same schema or queues, and
// leftovers of an earlier run, written before the test binary started.
//
// Drain fails the test after DrainTimeout, listing what it still waits for:
// outbox rows and tasks, with their queue, state, task ID, signal, receiver
// and last error. Receivers that keep failing hold Drain until their
// retries run out, so give them short Backoff and MaxRetries in tests.
// Dead deliveries stay in the schema's dead letters for the test to
// inspect (signals.Ledger.DeadLetters).
//
// What Drain runs is not isolated. Its Dispatcher, like any, moves every
// row of reg's schema to Redis, other registries' and other tests' rows
// included: an Eager on that schema committing meanwhile may find its rows
// gone, which its Commit reports. Its Worker takes every task of reg's
// queues, whatever its signal: a task of a signal reg does not know fails
// there as unknown and is retried until it is dead. So tests that Drain in parallel
// need a registry, schema and queues each. Tests that share a registry,
// such as signals made with signals.New at package level, wait for each
// other's work when they Drain, and run it: have those that run in
// parallel use Eager, and Drain only in tests that do not run in parallel.
// Drain never closes db.
func Drain(t testing.TB, db signals.DB, redisOpt asynq.RedisConnOpt, reg *signals.Registry) {
	t.Helper()
	drain(t, db, redisOpt, reg, DrainTimeout)
}

func drain(t testing.TB, db signals.DB, redisOpt asynq.RedisConnOpt, reg *signals.Registry, timeout time.Duration) {
	t.Helper()
	kit, err := store.NewKitQueries(reg.Schema())
	if err != nil {
		t.Fatalf("signalstest: %v", err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := signals.NewDispatcher(reg, db, redisOpt, signals.DispatcherConfig{PollInterval: drainTick, Logger: quiet})
	if err != nil {
		t.Fatalf("signalstest: %v", err)
	}
	w, err := signals.NewWorker(reg, db, redisOpt, signals.WorkerConfig{DelayedTaskCheckInterval: 50 * time.Millisecond, Logger: quiet})
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

	wk := &work{db: db, kit: kit, insp: insp, queues: reg.Queues(), signals: kithook.SignalNames(reg)}
	wk.since.SetTime(ulid.Timestamp(started))
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(drainTick)
	defer tick.Stop()
	for {
		done, err := wk.drained(ctx)
		if err != nil {
			t.Fatalf("signalstest: Drain: %v", err)
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		<-tick.C
	}
	left, err := wk.collect(ctx)
	if err != nil {
		t.Fatalf("signalstest: Drain: not drained within %v, and listing what is left failed: %v", timeout, err)
	}
	t.Fatalf("%s", left.report(reg.Schema(), timeout, time.Now()))
}

// work finds a registry's unfinished work.
type work struct {
	db      signals.DB
	kit     *store.KitQueries
	insp    *asynq.Inspector
	queues  []string
	signals []string  // sorted
	since   ulid.ULID // work with an older ID is an earlier run's
}

// drained reports whether the queues held none of the work, then the outbox
// none, then the queues none again, with no task of the queues finished
// between the first look and the last. Work moves from the outbox to a
// queue before it leaves the outbox, and a receiver's cascade is in the
// outbox before its task finishes; so work that was in the outbox at the
// first look is either in a queue at the last look, or its task finished
// in between, which the queues' processed counters show. The counters count
// every task of the queues, others' too: their activity only makes Drain
// look again.
func (w *work) drained(ctx context.Context) (bool, error) {
	processed, tasks, err := w.tasks(true)
	if err != nil || len(tasks) > 0 {
		return false, err
	}
	n, err := w.rows(ctx)
	if err != nil || n > 0 {
		return false, err
	}
	if _, tasks, err = w.tasks(true); err != nil || len(tasks) > 0 {
		return false, err
	}
	after, _, err := w.tasks(false)
	return err == nil && after == processed, err
}

// tasks returns how many tasks the queues have finished so far and, if
// list is set, the unfinished tasks of the registry's signals.
func (w *work) tasks(list bool) (processed int, ours []*asynq.TaskInfo, err error) {
	existing, err := w.insp.Queues()
	if err != nil {
		return 0, nil, fmt.Errorf("list asynq queues: %w", err)
	}
	for _, queue := range w.queues {
		if !slices.Contains(existing, queue) {
			continue // no task reached it yet
		}
		info, err := w.insp.GetQueueInfo(queue)
		if err != nil {
			return 0, nil, fmt.Errorf("read queue %q: %w", queue, err)
		}
		processed += info.ProcessedTotal
		if !list || info.Pending+info.Active+info.Scheduled+info.Retry == 0 {
			continue
		}
		// In the order tasks move (scheduled or retry, then pending, then
		// active), so that a task moving on during the listing is seen in
		// its next state; a task that finishes moves the counter.
		for _, state := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
			w.insp.ListScheduledTasks, w.insp.ListRetryTasks, w.insp.ListPendingTasks, w.insp.ListActiveTasks,
		} {
			for page := 1; ; page++ {
				infos, err := state(queue, asynq.PageSize(listPage), asynq.Page(page))
				if err != nil {
					return 0, nil, fmt.Errorf("list tasks of queue %q: %w", queue, err)
				}
				for _, info := range infos {
					if w.ours(info) {
						ours = append(ours, info)
					}
				}
				if len(infos) < listPage {
					break
				}
			}
		}
	}
	return processed, ours, nil
}

// ours reports whether a task is of one of the registry's signals and was
// not sent before the test binary started.
func (w *work) ours(info *asynq.TaskInfo) bool {
	signal, _, ok := envelope.SplitType(info.Type)
	if !ok {
		return false
	}
	if _, found := slices.BinarySearch(w.signals, signal); !found {
		return false
	}
	id, err := ulid.ParseStrict(info.ID)
	return err != nil || id.Compare(w.since) >= 0 // not a ULID: not ours to judge old
}

// rows counts the registry's pending outbox rows.
func (w *work) rows(ctx context.Context) (int64, error) {
	tx, err := w.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	n, err := w.kit.CountPending(ctx, tx, w.signals, w.since)
	if err != nil {
		return 0, fmt.Errorf("count outbox rows: %w", err)
	}
	return n, nil
}

// collect lists what is left of the work.
func (w *work) collect(ctx context.Context) (unfinished, error) {
	var left unfinished
	_, tasks, err := w.tasks(true)
	if err != nil {
		return left, err
	}
	left.tasks = tasks
	tx, err := w.db.Begin(ctx)
	if err != nil {
		return left, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	if left.rows, err = w.kit.CountPending(ctx, tx, w.signals, w.since); err != nil {
		return left, fmt.Errorf("count outbox rows: %w", err)
	}
	if left.someRows, err = w.kit.ListPending(ctx, tx, w.signals, w.since, reportLimit); err != nil {
		return left, fmt.Errorf("list outbox rows: %w", err)
	}
	return left, nil
}

// unfinished is the work a timed-out Drain still waits for.
type unfinished struct {
	rows     int64       // outbox rows
	someRows []store.Row // the first few of them
	tasks    []*asynq.TaskInfo
}

// report says what a Drain that timed out at now still waits for, in at
// most a dozen lines.
func (l unfinished) report(schema string, timeout time.Duration, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "signalstest: Drain: the registry's work (schema %q) not done within %v", schema, timeout)
	if l.rows == 0 && len(l.tasks) == 0 {
		b.WriteString("; none is left now: it finished as the time ran out, or kept moving between the outbox and the queues")
		return b.String()
	}
	b.WriteString("; still waiting for:")
	if l.rows > 0 {
		fmt.Fprintf(&b, "\n  outbox of schema %q: %d row(s) whose receivers have not succeeded", schema, l.rows)
		for _, r := range l.someRows {
			fmt.Fprintf(&b, "\n    task %s: signal %q, receiver %q, queue %q", ulid.ULID(r.ID), r.Signal, r.Receiver, r.Queue)
			if r.Enqueues == 0 {
				b.WriteString(", not enqueued yet")
			}
			if r.Attempts > 0 && r.LastError != nil {
				fmt.Fprintf(&b, ", %d failed enqueue(s), last error: %s", r.Attempts, oneLine(*r.LastError))
			}
		}
		if more := l.rows - int64(len(l.someRows)); more > 0 {
			fmt.Fprintf(&b, "\n    and %d more", more)
		}
	}
	if len(l.tasks) > 0 {
		fmt.Fprintf(&b, "\n  %d task(s) in Redis:", len(l.tasks))
		for _, t := range l.tasks[:min(len(l.tasks), reportLimit)] {
			signal, receiver, _ := envelope.SplitType(t.Type)
			fmt.Fprintf(&b, "\n    queue %q, %s: task %s: signal %q, receiver %q", t.Queue, t.State, t.ID, signal, receiver)
			switch t.State {
			case asynq.TaskStateRetry:
				fmt.Fprintf(&b, ", retried %d of %d times, next in %v, last error: %s",
					t.Retried, t.MaxRetry, t.NextProcessAt.Sub(now).Round(time.Second), oneLine(t.LastErr))
			case asynq.TaskStateScheduled:
				fmt.Fprintf(&b, ", due in %v", t.NextProcessAt.Sub(now).Round(time.Second))
			}
		}
		if more := len(l.tasks) - reportLimit; more > 0 {
			fmt.Fprintf(&b, "\n    and %d more", more)
		}
		b.WriteString("\n  (receivers that keep failing hold Drain until their retries run out: give them short Backoff and MaxRetries in tests)")
	}
	return b.String()
}

// oneLine keeps the first line of an error, at most 200 bytes: a panic's
// error carries its stack.
func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

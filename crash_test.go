package signals_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// Environment of the worker child process that
// TestWorkerKilledMidRunRunsItsReceiversAgain starts and SIGKILLs.
const (
	crashChildSchemaEnv = "SIGNALS_TEST_CRASH_CHILD_SCHEMA"
	crashChildQueueEnv  = "SIGNALS_TEST_CRASH_CHILD_QUEUE"
	crashEvents         = 12
)

// crash_runs records each receiver run's start: by whom, when;
// crash_stops why each of the child's runs ended, if it lived to see it.
const crashTables = `CREATE TABLE IF NOT EXISTS %[1]s.crash_runs (event text, receiver text, child bool, at timestamptz);
CREATE TABLE IF NOT EXISTS %[1]s.crash_stops (event text, receiver text, cause text)`

// crashSignal connects the test's receivers: "once" with MaxRetries(0),
// "default" with the default retries. Each records its run's start; in the
// child it then blocks until its ctx ends, and records why; in the test it
// returns once hold is closed (at once for a nil hold).
func crashSignal(t *testing.T, reg *signals.Registry, pool *pgxpool.Pool, schema, queue string, child bool, hold <-chan struct{}) *signals.Signal[orderPlaced] {
	t.Helper()
	sig := signals.Register[orderPlaced](reg, "order.placed")
	for _, opt := range []struct {
		name string
		opt  signals.ReceiverOption
	}{{"once", signals.MaxRetries(0)}, {"default", signals.MaxRetries(signals.DefaultReceiverMaxRetries)}} {
		sig.Connect(opt.name, func(ctx context.Context, e signals.Event[orderPlaced]) error {
			if _, err := pool.Exec(ctx, `INSERT INTO `+schema+`.crash_runs VALUES ($1, $2, $3, clock_timestamp())`, e.ID.String(), e.Receiver, child); err != nil {
				return err
			}
			if !child {
				if hold != nil {
					<-hold
				}
				return nil
			}
			<-ctx.Done()
			_, err := pool.Exec(context.WithoutCancel(ctx), `INSERT INTO `+schema+`.crash_stops VALUES ($1, $2, $3)`,
				e.ID.String(), e.Receiver, context.Cause(ctx).Error())
			return errors.Join(ctx.Err(), err)
		}, signals.Queue(queue), opt.opt)
	}
	return sig
}

// TestWorkerKilledMidRunRunsItsReceiversAgain SIGKILLs a worker process
// while its receivers run and requires that each runs again, once, in the
// surviving worker, within 30 s, where asynq alone takes 60 to 120 s: the
// test's Dispatcher, at its defaults, takes the tasks back once their lease
// has gone unrenewed for RecoverAfter (20 s). A receiver with MaxRetries(0)
// is included. It logs the time from the kill to each run again.
func TestWorkerKilledMidRunRunsItsReceiversAgain(t *testing.T) {
	t.Parallel()
	f, child := startCrashChild(t, nil)
	require.NoError(t, child.Process.Kill())
	killedAt := time.Now()

	f.runWorker(t)
	requireRunAgain(t, f, killedAt, "the kill")
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick, "every row acked")
	require.Equal(t, 2*crashEvents, crashRuns(t, f, false), "each receiver ran again once, not twice")
}

// TestWorkerStalledPastRecoverAfterStopsItsRuns SIGSTOPs a worker process
// while its receivers run: to the Dispatcher it looks killed, and the
// surviving worker runs each receiver again within 30 s. While those runs
// go on, the process resumes: its lease watch stops the runs it still had
// (their ctx canceled, as the lease lost), which records no failure and
// buries nothing, MaxRetries(0) included, and it leaves the tasks alone in
// Redis, so the surviving worker's runs complete there and nothing runs a
// third time.
func TestWorkerStalledPastRecoverAfterStopsItsRuns(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	f, child := startCrashChild(t, hold)
	require.NoError(t, child.Process.Signal(syscall.SIGSTOP))
	stoppedAt := time.Now()
	released := false
	release := func() {
		if !released {
			close(hold)
			released = true
		}
	}
	t.Cleanup(release)

	w, err := signals.NewWorker(f.reg, f.pool, f.redis, signals.WorkerConfig{
		Queues: map[string]int{f.queue: 1}, Concurrency: 2 * crashEvents, Logger: f.logger,
	})
	require.NoError(t, err)
	run(t, w.Run) // room for every held run at once
	requireRunAgain(t, f, stoppedAt, "the stop")
	require.NoError(t, child.Process.Signal(syscall.SIGCONT))
	stops := func() (causes []string) {
		rows, err := f.pool.Query(t.Context(), `SELECT cause FROM `+f.schema+`.crash_stops`)
		require.NoError(t, err)
		causes, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return causes
	}
	require.Eventually(t, func() bool { return len(stops()) == 2*crashEvents }, eventually, tick, "the resumed worker stops each of its runs")
	for _, cause := range stops() {
		require.Contains(t, cause, "could not renew the task's lease", "stopped by the lease watch")
	}
	dead, err := f.ledger(t).DeadLetters(t.Context(), signals.DeadFilter{})
	require.NoError(t, err)
	require.Empty(t, dead, "a stopped run is no failure: nothing is buried")
	require.Equal(t, 2*crashEvents, f.pending(t), "the rows wait for the surviving worker's runs")

	// The stopped runs wait for the runs that took their tasks over, then
	// hand asynq their outcome, which finds nothing of theirs left to write.
	release()
	insp := f.inspector(t)
	require.Eventually(t, func() bool {
		info, err := insp.GetQueueInfo(f.queue)
		return err == nil && info.Completed == 2*crashEvents && info.Active+info.Pending+info.Retry+info.Scheduled == 0
	}, eventually, tick, "the surviving worker's runs complete in Redis: the stopped ones took nothing from them")
	require.Eventually(t, func() bool {
		servers, err := insp.Servers()
		if err != nil {
			return false
		}
		for _, s := range servers {
			if s.PID == child.Process.Pid {
				return len(s.ActiveWorkers) == 0
			}
		}
		return false
	}, eventually, 100*time.Millisecond, "the resumed worker's stopped runs return to asynq")
	info, err := insp.GetQueueInfo(f.queue)
	require.NoError(t, err)
	require.Equal(t, 2*crashEvents, info.Completed, "and asynq recorded nothing of them")
	require.Zero(t, info.Active+info.Pending+info.Retry+info.Scheduled)
	require.Zero(t, f.pending(t), "every row acked")
	require.Equal(t, 2*crashEvents, crashRuns(t, f, false), "no run in the test's worker beyond the one each")
	require.Equal(t, 2*crashEvents, crashRuns(t, f, true), "no run again in the resumed worker")
}

// startCrashChild sets up a test bundle with the crash receivers (the
// test's own held by hold), its Dispatcher running, starts a worker child
// process on the bundle's queue, sends crashEvents orders, and returns
// once each of the child's receivers is running. The child is killed at
// the test's end.
func startCrashChild(t *testing.T, hold <-chan struct{}) (*testBundle, *exec.Cmd) {
	t.Helper()
	f := setup(t)
	_, err := f.pool.Exec(t.Context(), fmt.Sprintf(crashTables, f.schema))
	require.NoError(t, err)
	sig := crashSignal(t, f.reg, f.pool, f.schema, f.queue, false, hold)

	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildSchemaEnv+"="+f.schema, crashChildQueueEnv+"="+f.queue)
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("worker child output:\n%s", out.String())
		}
	})

	f.runDispatcher(t, signals.DispatcherConfig{})
	sendOrders(t, f, sig, "crash", crashEvents)
	require.Eventually(t, func() bool { return crashRuns(t, f, true) == 2*crashEvents }, eventually, tick, "the child runs every receiver")
	return f, cmd
}

// crashRuns counts the runs that started in the child, or in the test.
func crashRuns(t *testing.T, f *testBundle, child bool) int {
	var n int
	require.NoError(t, f.pool.QueryRow(t.Context(), `SELECT count(*) FROM `+f.schema+`.crash_runs WHERE child = $1`, child).Scan(&n))
	return n
}

// requireRunAgain requires that each receiver starts again in the test's
// worker within 30 s of since; it logs the times from since, what happened
// then, to each run.
func requireRunAgain(t *testing.T, f *testBundle, since time.Time, what string) {
	t.Helper()
	require.Eventually(t, func() bool { return crashRuns(t, f, false) >= 2*crashEvents }, 60*time.Second, 100*time.Millisecond,
		"every receiver runs again in the surviving worker")

	rows, err := f.pool.Query(t.Context(), `SELECT extract(epoch FROM at)::float8 FROM `+f.schema+`.crash_runs WHERE NOT child`)
	require.NoError(t, err)
	ats, err := pgx.CollectRows(rows, pgx.RowTo[float64])
	require.NoError(t, err)
	after := make([]time.Duration, len(ats))
	for i, at := range ats {
		after[i] = time.Unix(0, int64(at*1e9)).Sub(since)
	}
	slices.Sort(after)
	t.Logf("%s → receiver runs again: min %v, median %v, max %v (%d runs)", what,
		after[0].Round(100*time.Millisecond), after[len(after)/2].Round(100*time.Millisecond), after[len(after)-1].Round(100*time.Millisecond), len(after))
	require.Less(t, after[len(after)-1], 30*time.Second, "back within RecoverAfter and a second or two, not asynq's 60-120 s")
}

// TestCrashChildProcess is not a test: it is the worker process that
// TestWorkerKilledMidRunRunsItsReceiversAgain starts and SIGKILLs. Without
// its environment it returns at once.
func TestCrashChildProcess(t *testing.T) {
	schema, queue := os.Getenv(crashChildSchemaEnv), os.Getenv(crashChildQueueEnv)
	if schema == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a last resort
	defer cancel()
	pool := testenv.PoolFor(t, testenv.DatabaseURL())
	reg := newRegistry(t, signals.RegistryConfig{Schema: schema})
	crashSignal(t, reg, pool, schema, queue, true, nil)
	w, err := signals.NewWorker(reg, pool, asynq.RedisClientOpt{Addr: testenv.RedisAddr()}, signals.WorkerConfig{
		Queues: map[string]int{queue: 1}, Concurrency: 2 * crashEvents, Logger: quietLogger(),
	})
	require.NoError(t, err)
	require.NoError(t, w.Run(ctx))
}

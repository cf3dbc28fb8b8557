package signals_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"
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

// crashRuns records each receiver run's start: by whom, when.
const crashRunsTable = `CREATE TABLE IF NOT EXISTS %s.crash_runs (event text, receiver text, child bool, at timestamptz)`

// crashSignal connects the test's receivers: "once" with MaxRetries(0),
// "default" with the default retries. Each records its run's start; in the
// child it then blocks until the process dies.
func crashSignal(t *testing.T, reg *signals.Registry, pool *pgxpool.Pool, schema, queue string, child bool) *signals.Signal[orderPlaced] {
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
			if child {
				<-ctx.Done() // the kill ends it first
			}
			return nil
		}, signals.Queue(queue), opt.opt)
	}
	return sig
}

// TestWorkerKilledMidRunRunsItsReceiversAgain SIGKILLs a worker process
// while its receivers run and requires that each runs again, once, in the
// surviving worker, within about the lease asynq gives a running task (30
// s), where asynq alone takes 60 to 120 s. The test's Dispatcher takes the
// tasks back once their lease ends; a receiver with MaxRetries(0) is
// included. It logs the time from the kill to each run again.
func TestWorkerKilledMidRunRunsItsReceiversAgain(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, err := f.pool.Exec(t.Context(), fmt.Sprintf(crashRunsTable, f.schema))
	require.NoError(t, err)
	sig := crashSignal(t, f.reg, f.pool, f.schema, f.queue, false)

	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildSchemaEnv+"="+f.schema, crashChildQueueEnv+"="+f.queue)
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Logf("worker child output:\n%s", out.String())
		}
	})

	f.runDispatcher(t, signals.DispatcherConfig{})
	sendOrders(t, f, sig, "crash", crashEvents)
	runs := func(child bool) int {
		var n int
		require.NoError(t, f.pool.QueryRow(t.Context(), `SELECT count(*) FROM `+f.schema+`.crash_runs WHERE child = $1`, child).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return runs(true) == 2*crashEvents }, eventually, tick, "the child runs every receiver")
	require.NoError(t, cmd.Process.Kill())
	killedAt := time.Now()
	_ = cmd.Wait()
	killed = true

	f.runWorker(t)
	require.Eventually(t, func() bool { return runs(false) >= 2*crashEvents }, 60*time.Second, 100*time.Millisecond,
		"every receiver runs again in the surviving worker")
	require.Eventually(t, func() bool { return f.pending(t) == 0 }, eventually, tick, "every row acked")
	require.Equal(t, 2*crashEvents, runs(false), "each receiver ran again once, not twice")

	rows, err := f.pool.Query(t.Context(), `SELECT extract(epoch FROM at)::float8 FROM `+f.schema+`.crash_runs WHERE NOT child`)
	require.NoError(t, err)
	var after []time.Duration
	for rows.Next() {
		var at float64
		require.NoError(t, rows.Scan(&at))
		after = append(after, time.Unix(0, int64(at*1e9)).Sub(killedAt))
	}
	require.NoError(t, rows.Err())
	slices.Sort(after)
	t.Logf("kill → receiver runs again: min %v, median %v, max %v (%d runs)",
		after[0].Round(100*time.Millisecond), after[len(after)/2].Round(100*time.Millisecond), after[len(after)-1].Round(100*time.Millisecond), len(after))
	require.Less(t, after[len(after)-1], 45*time.Second, "back within the lease and a few seconds, not asynq's 60-120 s")
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
	crashSignal(t, reg, pool, schema, queue, true)
	w, err := signals.NewWorker(reg, pool, asynq.RedisClientOpt{Addr: testenv.RedisAddr()}, signals.WorkerConfig{
		Queues: map[string]int{queue: 1}, Concurrency: 2 * crashEvents, Logger: quietLogger(),
	})
	require.NoError(t, err)
	require.NoError(t, w.Run(ctx))
}

package signals_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// Failure tests: the relay process killed mid-stream, Redis going away and
// coming back empty, and the relay's PostgreSQL connections being cut. In
// each, every committed event must reach every receiver exactly once.

// Environment of the relay child process started by
// TestRelayProcessKilledMidStreamLosesNothing.
const (
	relayChildEnv       = "SIGNALS_TEST_RELAY_CHILD"
	relayChildSchemaEnv = "SIGNALS_TEST_RELAY_CHILD_SCHEMA"
	relayChildRedisEnv  = "SIGNALS_TEST_RELAY_CHILD_REDIS"
)

// relayChildBatchSize is small so that the kill lands mid-stream, with
// batches committed before it and more after it.
const relayChildBatchSize = 20

// TestRelayChildProcess is not a test: it is the relay process that
// TestRelayProcessKilledMidStreamLosesNothing starts (re-executing the test
// binary) and SIGKILLs. Without relayChildEnv it returns at once.
func TestRelayChildProcess(t *testing.T) {
	if os.Getenv(relayChildEnv) != "1" {
		return
	}
	schema, addr := os.Getenv(relayChildSchemaEnv), os.Getenv(relayChildRedisEnv)
	require.NotEmpty(t, schema, relayChildSchemaEnv)
	require.NotEmpty(t, addr, relayChildRedisEnv)

	// Never outlive the parent: it holds our stdin open until it has waited
	// for us, so EOF means it is gone. The timeout is a last resort.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	pool := testenv.PoolFor(t, testenv.DatabaseURL())
	reg := newRegistry(t, signals.RegistryConfig{Schema: schema})
	d, err := signals.NewDispatcher(reg, pool, asynq.RedisClientOpt{Addr: addr}, signals.DispatcherConfig{
		BatchSize: relayChildBatchSize,
		// One enqueue at a time: a batch then spends most of its time between
		// its first enqueue and its delete, where a kill hurts most.
		Concurrency: 1,
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	require.NoError(t, d.Run(ctx))
}

// runRecorder counts receiver runs both per asynq task and per (event,
// receiver), which must agree: one task per pair, run once.
type runRecorder struct {
	byTask  *counter // Event.TaskID
	byEvent *counter // Event.ID + "/" + Event.Receiver
}

func (r *runRecorder) receive(_ context.Context, e signals.Event[orderPlaced]) error {
	r.byTask.add(e.TaskID.String())
	r.byEvent.add(e.ID.String() + "/" + e.Receiver)
	return nil
}

// receivers are the receivers of "order.placed" in the failure tests.
var receivers = []string{"email-receipt", "analytics"}

// recordedSignal registers "order.placed" with receivers on the fixture's
// queue, recording their runs.
func recordedSignal(t *testing.T, f *testBundle, opts ...signals.ReceiverOption) (*signals.Signal[orderPlaced], *runRecorder) {
	t.Helper()
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	runs := &runRecorder{byTask: newCounter(), byEvent: newCounter()}
	for _, name := range receivers {
		sig.Connect(name, runs.receive, append([]signals.ReceiverOption{signals.Queue(f.queue)}, opts...)...)
	}
	return sig, runs
}

// expectedRuns is the (event, receiver) keys of runRecorder.byEvent that
// events must produce, each once.
func expectedRuns(events ...[]ulid.ULID) map[string]int {
	want := map[string]int{}
	for _, ids := range events {
		for _, id := range ids {
			for _, r := range receivers {
				want[id.String()+"/"+r] = 1
			}
		}
	}
	return want
}

// requireDeliveredExactlyOnce waits until every (event, receiver) of events
// ran, the outbox is empty and the queue has nothing left to run, so that no
// further run can happen, then requires that each ran exactly once, under
// as many distinct task IDs.
func requireDeliveredExactlyOnce(t *testing.T, f *testBundle, ins *asynq.Inspector, runs *runRecorder, events ...[]ulid.ULID) {
	t.Helper()
	want := expectedRuns(events...)
	waitForRuns(t, runs, want)
	require.Eventually(t, func() bool {
		return f.pending(t) == 0 && f.queueDrained(ins)
	}, eventually, tick, "outbox and queue drain")

	require.Equal(t, want, runs.byEvent.snapshot(), "each (event, receiver) ran exactly once")
	byTask := runs.byTask.snapshot()
	require.Len(t, byTask, len(want), "one task per (event, receiver)")
	for id, n := range byTask {
		require.Equal(t, 1, n, "task %s ran %d times", id, n)
	}
	info, err := ins.GetQueueInfo(f.queue)
	require.NoError(t, err)
	require.Zero(t, info.Archived, "nothing dead-lettered")
}

// waitForRuns waits until every (event, receiver) in want has run.
func waitForRuns(t *testing.T, runs *runRecorder, want map[string]int) {
	t.Helper()
	require.Eventually(t, func() bool {
		got := runs.byEvent.snapshot()
		for k := range want {
			if got[k] == 0 {
				return false
			}
		}
		return true
	}, eventually, tick, "every (event, receiver) runs")
}

// outboxIDs returns the task IDs of the rows pending in the outbox.
func outboxIDs(t *testing.T, f *testBundle) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, row := range f.outbox(t) {
		out[ulid.ULID(row.ID).String()] = true
	}
	return out
}

// pendingTaskIDs returns the IDs of the tasks pending in queue.
func pendingTaskIDs(t *testing.T, ins *asynq.Inspector, queue string) map[string]bool {
	t.Helper()
	const size = 500
	out := map[string]bool{}
	for page := 1; ; page++ {
		tasks, err := ins.ListPendingTasks(queue, asynq.PageSize(size), asynq.Page(page))
		require.NoError(t, err)
		for _, task := range tasks {
			out[task.ID] = true
		}
		if len(tasks) < size {
			return out
		}
	}
}

func TestRelayProcessKilledMidStreamLosesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sig, runs := recordedSignal(t, f)

	const events = 300
	sent := sendOrders(t, f, sig, "killed", events)
	rows := outboxIDs(t, f)
	require.Len(t, rows, 2*events)

	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^TestRelayChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		relayChildEnv+"=1",
		relayChildSchemaEnv+"="+f.schema,
		relayChildRedisEnv+"="+f.redis.Addr,
	)
	cmd.Stdout, cmd.Stderr = &out, &out
	stdin, err := cmd.StdinPipe() // closed by Wait; the child exits on EOF
	require.NoError(t, err)
	defer stdin.Close()
	require.NoError(t, cmd.Start())
	waited := false
	t.Cleanup(func() {
		if !waited { // the test failed before the kill
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Logf("relay child output:\n%s", out.String())
		}
	})

	// No worker runs yet, so whatever the child relays piles up in Redis:
	// kill it once it has committed some batches but not all.
	ins := f.inspector(t)
	var atKill int
	require.Eventually(t, func() bool {
		atKill = f.notEnqueued(t)
		if atKill == 0 || atKill == 2*events {
			return false
		}
		info, err := ins.GetQueueInfo(f.queue)
		return err == nil && info.Pending > 0
	}, eventually, tick, "the child relays part of the outbox")
	require.NoError(t, cmd.Process.Kill())
	err = cmd.Wait()
	waited = true
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr, "the child died of the kill, not of its own accord; output:\n%s", out.String())
	require.False(t, exitErr.Success())
	if out.Len() > 0 {
		t.Logf("relay child output:\n%s", out.String())
	}

	// The child enqueued before recording it: every row is still in the
	// outbox (the ledger keeps it until its receiver succeeds), and every
	// row recorded as enqueued has its task queued. A pending row may be
	// queued too: enqueued by a batch that never committed.
	left, queued := map[string]bool{}, pendingTaskIDs(t, ins, f.queue)
	require.NotEmpty(t, queued, "killed mid-stream")
	both := 0
	all := f.outbox(t)
	require.Len(t, all, 2*events, "no row leaves the outbox before its receiver succeeds")
	for _, row := range all {
		id := ulid.ULID(row.ID).String()
		if row.Enqueues > 0 {
			require.True(t, queued[id], "row %s was recorded as enqueued without its task in Redis", id)
			continue
		}
		left[id] = true
		if queued[id] {
			both++
		}
	}
	require.NotEmpty(t, left, "killed mid-stream")
	for id := range queued {
		require.True(t, rows[id], "unknown task %s", id)
	}
	t.Logf("kill: %d rows pending at the last poll before it, %d after it; %d tasks queued; %d pending rows queued by a batch that never committed",
		atKill, len(left), len(queued), both)

	// A new relay re-enqueues the rows the child enqueued but did not delete:
	// their task IDs are taken, so asynq keeps a single task for each.
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	requireDeliveredExactlyOnce(t, f, ins, runs, sent)
	for id := range runs.byTask.snapshot() {
		require.True(t, rows[id], "task %s is not one of the outbox rows", id)
	}
}

// relayLog counts the relay's batch failures and records its longest
// backoff, discarding everything else it logs.
type relayLog struct {
	failures  atomic.Int64
	recovered atomic.Int64
	// lateFailures counts failed batches that had already enqueued their
	// rows: their delete or commit failed.
	lateFailures atomic.Int64

	mu      sync.Mutex
	maxWait time.Duration
}

func (l *relayLog) logger() *slog.Logger { return slog.New(l) }

func (l *relayLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *relayLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *relayLog) WithGroup(string) slog.Handler            { return l }

func (l *relayLog) Handle(_ context.Context, r slog.Record) error {
	switch r.Message {
	case "signals: dispatcher batch failed; backing off":
		l.failures.Add(1)
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "retry_in":
				l.mu.Lock()
				l.maxWait = max(l.maxWait, a.Value.Duration())
				l.mu.Unlock()
			case "error":
				if msg := a.Value.String(); strings.HasPrefix(msg, "delete enqueued rows") || strings.HasPrefix(msg, "commit relay batch") {
					l.lateFailures.Add(1)
				}
			}
			return true
		})
	case "signals: dispatcher recovered":
		l.recovered.Add(1)
	}
	return nil
}

func (l *relayLog) longestWait() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxWait
}

// Quick relay backoff for outage tests: the cap bounds how long after the
// outage the relay resumes.
const (
	outageBackoffMin = 20 * time.Millisecond
	outageBackoffMax = 500 * time.Millisecond
)

// outage is what the outage tests share: the recorded signal, a relay with
// quick backoff reading the outbox through relayDB and counting its failures
// in log, and a worker.
type outage struct {
	f    *testBundle
	sig  *signals.Signal[orderPlaced]
	runs *runRecorder
	log  *relayLog
	d    *signals.Dispatcher
	ins  *asynq.Inspector
}

func startOutage(t *testing.T, f *testBundle, relayDB signals.DB, cfg signals.DispatcherConfig) *outage {
	t.Helper()
	o := &outage{f: f, log: &relayLog{}}
	o.sig, o.runs = recordedSignal(t, f, fastRetry)
	cfg.BackoffMin, cfg.BackoffMax, cfg.Logger = outageBackoffMin, outageBackoffMax, o.log.logger()
	var err error
	o.d, err = signals.NewDispatcher(f.reg, relayDB, f.redis, cfg)
	require.NoError(t, err)
	run(t, o.d.Run)
	f.runWorker(t)
	o.ins = f.inspector(t)
	return o
}

// send commits n events, one per transaction, and returns their IDs.
func (o *outage) send(t *testing.T, prefix string, n int) []ulid.ULID {
	t.Helper()
	return sendOrders(t, o.f, o.sig, prefix, n)
}

// requireDeliveredExactlyOnce is the function of that name on o's fixture.
func (o *outage) requireDeliveredExactlyOnce(t *testing.T, events ...[]ulid.ULID) {
	t.Helper()
	requireDeliveredExactlyOnce(t, o.f, o.ins, o.runs, events...)
}

// requireRelayKeepsFailing waits until at least lasting has passed since
// began and the relay has failed at least failures more batches, and
// requires that the rows sent meanwhile, pending, are all still there.
func (o *outage) requireRelayKeepsFailing(t *testing.T, began time.Time, lasting time.Duration, failures int64, pending []ulid.ULID) {
	t.Helper()
	before := o.log.failures.Load()
	require.Eventually(t, func() bool {
		return time.Since(began) >= lasting && o.log.failures.Load()-before >= failures
	}, eventually, tick, "the relay keeps trying during the outage")
	require.Equal(t, 2*len(pending), o.f.pending(t), "the outage keeps every row in the outbox")
}

func (o *outage) requireNoneSetAside(t *testing.T) {
	t.Helper()
	dead, err := o.f.ledger(t).DeadLetters(t.Context(), signals.DeadFilter{})
	require.NoError(t, err)
	require.Empty(t, dead, "no row was recorded as dead")
}

// asynqAllQueues is the Redis set in which asynq lists the known queues.
const asynqAllQueues = "asynq:queues"

func TestRedisOutageDeliversEverything(t *testing.T) {
	t.Parallel()
	f := setup(t)
	r := testenv.StartRedis(t) // stopped after the relay and worker (cleanups run last first)
	f.redis = asynq.RedisClientOpt{Addr: r.Addr}
	o := startOutage(t, f, f.pool, signals.DispatcherConfig{})

	// Before: delivered in full, so that nothing is in Redis when it dies
	// (it keeps no data, so queued tasks would die with it).
	before := o.send(t, "before", 50)
	o.requireDeliveredExactlyOnce(t, before)

	// During: senders only need PostgreSQL, so they are unaffected. The
	// outage lasts 3s, and at least until the relay has failed and backed
	// off several times, up to its cap.
	r.Stop(t)
	stopped := time.Now()
	during := o.send(t, "during", 50)
	o.requireRelayKeepsFailing(t, stopped, 3*time.Second, 5, during)
	maxAttempts := 0
	for _, row := range f.outbox(t) {
		maxAttempts = max(maxAttempts, row.Attempts)
	}
	require.Zero(t, maxAttempts, "an outage counts no enqueue attempt against the rows")
	require.LessOrEqual(t, o.log.longestWait(), outageBackoffMax, "the relay's backoff is capped")
	require.Equal(t, expectedRuns(before), o.runs.byEvent.snapshot(), "nothing ran during the outage")

	// After: Redis is back, empty; the relay resumes within its capped
	// backoff and relays the rows sent during the outage and after it.
	r.Start(t)
	restarted := time.Now()
	after := o.send(t, "after", 50)
	waitForRuns(t, o.runs, expectedRuns(before, during, after))
	// An asynq client registers a queue in Redis's set of queues once; the
	// relay must use a fresh client after an outage, or a Redis that came
	// back empty would never list the queue for Inspector or asynqmon.
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rc.Close()
	known, err := rc.SIsMember(t.Context(), asynqAllQueues, f.queue).Result()
	require.NoError(t, err)
	require.True(t, known, "after Redis came back empty, the relay registers queue %s in %s again, so asynq's tools see it", f.queue, asynqAllQueues)
	o.requireDeliveredExactlyOnce(t, before, during, after)
	t.Logf("outage %v, %d relay batches failed (longest backoff %v); drained %v after restart",
		restarted.Sub(stopped).Round(time.Millisecond), o.log.failures.Load(), o.log.longestWait(), time.Since(restarted).Round(time.Millisecond))
	require.Positive(t, o.log.recovered.Load(), "the relay logs its recovery")
	o.requireNoneSetAside(t)
}

// postgresAddr returns the host:port of testenv.DatabaseURL.
func postgresAddr(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(testenv.DatabaseURL())
	require.NoError(t, err)
	host, port := u.Hostname(), u.Port()
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(host, port)
}

func TestPostgresConnectionsCutRelayResumes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	proxy := testenv.StartProxy(t, postgresAddr(t))
	relayPool := testenv.PoolFor(t, testenv.URLVia(t, proxy)) // closed before the proxy
	// Only the relay goes through the proxy; senders use the direct f.pool.
	o := startOutage(t, f, relayPool, signals.DispatcherConfig{BatchSize: 10})

	before := o.send(t, "before", 30)
	o.requireDeliveredExactlyOnce(t, before)

	// Blocked: the relay's connections are cut and new ones refused.
	proxy.Block()
	blocked := time.Now()
	during := o.send(t, "blocked", 30)
	failuresBefore := o.log.failures.Load()
	o.requireRelayKeepsFailing(t, blocked, 1500*time.Millisecond, 3, during)
	proxy.Unblock()
	unblocked := time.Now()
	o.requireDeliveredExactlyOnce(t, before, during)
	t.Logf("blocked %v: %d relay batches failed; drained %v after unblock",
		unblocked.Sub(blocked).Round(time.Millisecond), o.log.failures.Load()-failuresBefore, time.Since(unblocked).Round(time.Millisecond))

	// Cut: the relay's connections drop repeatedly while events stream in,
	// some mid-batch (after enqueue, before commit): those rows are enqueued
	// again, and the taken task IDs keep them from running twice.
	const streamed, cutEvery = 200, 20
	failuresBefore = o.log.failures.Load()
	lateBefore := o.log.lateFailures.Load()
	var cuts []ulid.ULID
	for i := range streamed {
		cuts = append(cuts, o.send(t, fmt.Sprintf("cut%d", i), 1)...)
		if i%cutEvery == cutEvery-1 {
			proxy.Cut()
		}
	}
	o.requireDeliveredExactlyOnce(t, before, during, cuts)
	t.Logf("%d cuts during %d sends: %d relay batches failed, %d of them after enqueueing their rows",
		streamed/cutEvery, streamed, o.log.failures.Load()-failuresBefore, o.log.lateFailures.Load()-lateBefore)
	o.requireNoneSetAside(t)
}

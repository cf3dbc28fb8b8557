package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// validRow returns a row of a root event that Task accepts.
func validRow() store.Row {
	id := ulid.Make()
	return store.Row{
		ID: ulid.Make(), EventID: id, CorrelationID: id,
		Signal: "order.placed", Receiver: "email-receipt", Queue: "signals",
		MaxRetry: 20, TimeoutMS: 60_000, Payload: []byte(`{"order_id":"o-1"}`),
	}
}

// options returns the values of opts by type.
func options(opts []asynq.Option) map[asynq.OptionType]any {
	out := map[asynq.OptionType]any{}
	for _, o := range opts {
		out[o.Type()] = o.Value()
	}
	return out
}

func TestTaskCarriesTheRow(t *testing.T) {
	t.Parallel()
	row := validRow()
	cause := ulid.Make()
	row.CausationID, row.Depth = (*[16]byte)(&cause), 2
	row.Queue, row.MaxRetry, row.TimeoutMS = "low", 3, 1500

	task, opts, err := Task(row, 15*time.Minute)
	require.NoError(t, err)
	require.Equal(t, "signals:order.placed:email-receipt", task.Type())
	require.Equal(t, row.Payload, task.Payload(), "the payload travels untouched")
	meta, err := envelope.Decode(task.Type(), task.Headers())
	require.NoError(t, err)
	require.Equal(t, envelope.Meta{
		Signal: "order.placed", Receiver: "email-receipt",
		TaskID: row.ID, EventID: row.EventID, CorrelationID: row.CorrelationID, CausationID: cause,
		Depth: 2, Timeout: 1500 * time.Millisecond,
	}, meta)
	require.Equal(t, map[asynq.OptionType]any{
		asynq.TaskIDOpt:    ulid.ULID(row.ID).String(),
		asynq.QueueOpt:     "low",
		asynq.MaxRetryOpt:  3,
		asynq.TimeoutOpt:   2 * time.Second, // asynq's lease, in whole seconds, at least the timeout
		asynq.RetentionOpt: 15 * time.Minute,
	}, options(opts))

	root := validRow()
	task, _, err = Task(root, time.Minute)
	require.NoError(t, err)
	meta, err = envelope.Decode(task.Type(), task.Headers())
	require.NoError(t, err)
	require.Zero(t, meta.CausationID, "a root event has no cause")
	require.Zero(t, meta.Depth)
}

func TestTaskSchedulesToTheNextWholeSecond(t *testing.T) {
	t.Parallel()
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		at, want time.Time
	}{
		{base, base},
		{base.Add(time.Nanosecond), base.Add(time.Second)},
		{base.Add(500 * time.Millisecond), base.Add(time.Second)},
		{base.Add(999 * time.Millisecond), base.Add(time.Second)},
		{base.Add(-time.Nanosecond), base},
		{base.In(time.FixedZone("UTC+5:30", 5*3600+1800)).Add(time.Millisecond), base.Add(time.Second)},
	} {
		require.True(t, c.want.Equal(ceilSecond(c.at)), "ceilSecond(%v) = %v, want %v", c.at, ceilSecond(c.at), c.want)
	}

	row := validRow()
	at := base.Add(250 * time.Millisecond)
	row.ProcessAt = &at
	_, opts, err := Task(row, time.Minute)
	require.NoError(t, err)
	processAt, ok := options(opts)[asynq.ProcessAtOpt].(time.Time)
	require.True(t, ok, "a delayed row is scheduled")
	require.True(t, base.Add(time.Second).Equal(processAt), "never early: %v", processAt)
}

func TestTaskRejectsRowsNoRetryCanEnqueue(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		change func(*store.Row)
	}{
		{"zero timeout", func(r *store.Row) { r.TimeoutMS = 0 }},
		{"negative timeout", func(r *store.Row) { r.TimeoutMS = -1 }},
		{"negative max retry", func(r *store.Row) { r.MaxRetry = -1 }},
		{"negative depth", func(r *store.Row) { r.Depth = -1 }},
		{"bad signal", func(r *store.Row) { r.Signal = "Order.Placed" }},
		{"empty receiver", func(r *store.Row) { r.Receiver = "" }},
		{"bad queue", func(r *store.Row) { r.Queue = "has spaces" }},
		{"empty queue", func(r *store.Row) { r.Queue = "" }},
	} {
		row := validRow()
		c.change(&row)
		task, opts, err := Task(row, time.Minute)
		require.ErrorIs(t, err, errInvalidRow, c.name)
		require.Nil(t, task, c.name)
		require.Nil(t, opts, c.name)
	}
}

// serverError is a Redis error reply, as go-redis returns it.
type serverError string

func (e serverError) Error() string { return string(e) }
func (serverError) RedisError()     {}

func TestIsOutage(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	for _, c := range []struct {
		name   string
		err    error
		outage bool
	}{
		{"connection refused", refused, true},
		{"wrapped network error", fmt.Errorf("redis command error: SADD failed: %w", refused), true},
		{"out of memory", serverError("OOM command not allowed when used memory > 'maxmemory'"), true},
		{"loading", serverError("LOADING Redis is loading the dataset in memory"), true},
		{"read-only replica", fmt.Errorf("enqueue: %w", serverError("READONLY You can't write against a read only replica")), true},
		{"connection dropped", io.EOF, true},
		{"connection cut mid-reply", io.ErrUnexpectedEOF, true},
		{"client closed", redis.ErrClosed, true},
		{"batch timeout", context.DeadlineExceeded, true},
		{"nil", nil, false},
		{"invalid row", errInvalidRow, false},
		{"canceled", context.Canceled, false},
		// asynq flattens its enqueue script's error into text: Batch pings to
		// tell an outage from a row's failure.
		{"flattened script error", errors.New("redis eval error: dial tcp 127.0.0.1:6379: connect: connection refused"), false},
	} {
		require.Equal(t, c.outage, isOutage(c.err), c.name)
	}
}

// errInjected is the enqueue failure faults inject: not a Redis reply nor a
// network error, so it says nothing about whether Redis is up.
var errInjected = errors.New("injected enqueue failure")

// faults is a go-redis hook that fails the enqueue of chosen tasks, and
// optionally every Ping, while Redis itself stays up.
type faults struct {
	mu        sync.Mutex
	tasks     map[string]bool // task IDs whose enqueue fails; nil means every task
	pingFails bool
}

func (f *faults) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *faults) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (f *faults) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.fails(cmd) {
			cmd.SetErr(errInjected)
			return errInjected
		}
		return next(ctx, cmd)
	}
}

func (f *faults) fails(cmd redis.Cmder) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch cmd.Name() {
	case "ping":
		return f.pingFails
	case "evalsha", "eval":
		for _, arg := range cmd.Args() {
			key, _ := arg.(string)
			if _, id, ok := strings.Cut(key, "}:t:"); ok && (f.tasks == nil || f.tasks[id]) {
				return true
			}
		}
	}
	return false
}

// testBundle is what a Batch test works on besides its Relay.
type testBundle struct {
	queries *store.Queries
	db      store.Executor
	redis   *redis.Client
	queue   string
}

// setup migrates a schema of the test's own and returns a relay on it
// enqueueing to redisAddr, through a client with hooks, with at most
// maxAttempts enqueue attempts per row.
func setup(t *testing.T, redisAddr string, maxAttempts int, hooks ...redis.Hook) (*Relay, *testBundle) {
	t.Helper()
	pool, schema := testenv.Pool(t), testenv.Schema(t)
	require.NoError(t, store.Migrate(t.Context(), pool, schema))
	queries, err := store.New(schema)
	require.NoError(t, err)
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rc.Close() })
	for _, h := range hooks {
		rc.AddHook(h)
	}
	r := New(queries, pool, rc, Config{
		BatchSize:          100,
		Concurrency:        4,
		Retention:          time.Minute,
		MaxEnqueueAttempts: maxAttempts,
		BatchTimeout:       10 * time.Second,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	return r, &testBundle{queries: queries, db: pool, redis: rc, queue: testenv.Queue(t)}
}

// insert writes one row per receiver of a fresh event on queue and returns
// the rows' task IDs.
func (b *testBundle) insert(t *testing.T, queue string, receivers ...string) []string {
	t.Helper()
	id := ulid.Make()
	e := store.Event{ID: id, CorrelationID: id, Signal: "order.placed", Payload: []byte(`{"order_id":"o-1"}`)}
	var targets []store.Target
	var ids []string
	for _, r := range receivers {
		task := ulid.Make()
		targets = append(targets, store.Target{TaskID: task, Receiver: r, Queue: queue, MaxRetry: 20, TimeoutMS: 60_000})
		ids = append(ids, task.String())
	}
	require.NoError(t, b.queries.Insert(t.Context(), b.db, e, targets))
	return ids
}

// pending returns the attempt count of each pending row by task ID.
func (b *testBundle) pending(t *testing.T) map[string]int {
	t.Helper()
	rows, err := b.queries.Pending(t.Context(), b.db)
	require.NoError(t, err)
	out := map[string]int{}
	for _, r := range rows {
		out[ulid.ULID(r.ID).String()] = r.Attempts
	}
	return out
}

func (b *testBundle) failed(t *testing.T) []store.FailedRow {
	t.Helper()
	rows, err := b.queries.Failed(t.Context(), b.db, 100)
	require.NoError(t, err)
	return rows
}

// requireQueued requires that each task is in the bundle's queue.
func (b *testBundle) requireQueued(t *testing.T, ids ...string) {
	t.Helper()
	ins := asynq.NewInspectorFromRedisClient(b.redis)
	for _, id := range ids {
		info, err := ins.GetTaskInfo(b.queue, id)
		require.NoError(t, err, "task %s", id)
		require.Equal(t, b.queue, info.Queue)
		require.True(t, strings.HasPrefix(info.Type, "signals:order.placed:"), info.Type)
	}
}

func TestBatchDeletesWhatItEnqueued(t *testing.T) {
	t.Parallel()
	r, b := setup(t, testenv.RedisAddr(), 3)
	n, err := r.Batch(t.Context())
	require.NoError(t, err)
	require.Zero(t, n, "an empty outbox")

	ids := b.insert(t, b.queue, "email-receipt", "analytics")
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Empty(t, b.pending(t))
	b.requireQueued(t, ids...)

	// A row enqueued by a relay that died before deleting it: its task ID
	// is taken, so it counts as enqueued.
	again := b.insert(t, b.queue, "audit")
	rows, err := b.queries.Pending(t.Context(), b.db)
	require.NoError(t, err)
	task, opts, err := Task(rows[0], time.Minute)
	require.NoError(t, err)
	_, err = asynq.NewClientFromRedisClient(b.redis).EnqueueContext(t.Context(), task, opts...)
	require.NoError(t, err)
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Empty(t, b.pending(t))
	b.requireQueued(t, again...)
}

func TestBatchSetsAsideAnInvalidRowAtOnce(t *testing.T) {
	t.Parallel()
	r, b := setup(t, testenv.RedisAddr(), 3)
	bad := b.insert(t, "has spaces", "r")
	good := b.insert(t, b.queue, "r")

	n, err := r.Batch(t.Context())
	require.NoError(t, err, "a row set aside is not a failed batch")
	require.Equal(t, 2, n)
	require.Empty(t, b.pending(t))
	b.requireQueued(t, good...)
	failed := b.failed(t)
	require.Len(t, failed, 1)
	require.Equal(t, bad[0], ulid.ULID(failed[0].ID).String())
	require.Equal(t, 1, failed[0].Attempts)
	require.Contains(t, *failed[0].LastError, `queue "has spaces"`)
}

func TestBatchCountsARowsFailuresThenSetsItAside(t *testing.T) {
	t.Parallel()
	hook := &faults{tasks: map[string]bool{}}
	r, b := setup(t, testenv.RedisAddr(), 3, hook)
	failing := b.insert(t, b.queue, "r")[0]
	hook.tasks[failing] = true

	// Alone in its batch: Redis answers a Ping, so the failure is the row's.
	n, err := r.Batch(t.Context())
	require.ErrorContains(t, err, errInjected.Error(), "asynq keeps only the text")
	require.Equal(t, 1, n)
	require.Equal(t, map[string]int{failing: 1}, b.pending(t))

	// Beside a row that goes through.
	good := b.insert(t, b.queue, "r")
	n, err = r.Batch(t.Context())
	require.ErrorContains(t, err, errInjected.Error(), "asynq keeps only the text")
	require.Equal(t, 2, n)
	require.Equal(t, map[string]int{failing: 2}, b.pending(t))
	b.requireQueued(t, good...)

	// The last attempt sets it aside.
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Empty(t, b.pending(t))
	failed := b.failed(t)
	require.Len(t, failed, 1)
	require.Equal(t, failing, ulid.ULID(failed[0].ID).String())
	require.Equal(t, 3, failed[0].Attempts)
	require.Contains(t, *failed[0].LastError, errInjected.Error())
}

func TestBatchLeavesRowsUntouchedDuringAnOutage(t *testing.T) {
	t.Parallel()
	// requireOutage requires that a batch fails and leaves every row as it
	// was: no attempt counted, nothing set aside.
	requireOutage := func(t *testing.T, r *Relay, b *testBundle) {
		t.Helper()
		want := b.pending(t)
		require.NotEmpty(t, want)
		_, err := r.Batch(t.Context())
		require.Error(t, err)
		require.Equal(t, want, b.pending(t))
		require.Empty(t, b.failed(t))
	}

	t.Run("redis stopped", func(t *testing.T) {
		t.Parallel()
		server := testenv.StartRedis(t)
		r, b := setup(t, server.Addr, 3)
		b.insert(t, b.queue, "a", "b")
		server.Stop(t)
		requireOutage(t, r, b)
	})
	t.Run("redis stopped after the client enqueued", func(t *testing.T) {
		t.Parallel()
		// The client registered the queue already, so the enqueue's error
		// is asynq's text, not a network error: the Ping tells.
		server := testenv.StartRedis(t)
		r, b := setup(t, server.Addr, 3)
		b.insert(t, b.queue, "a")
		_, err := r.Batch(t.Context())
		require.NoError(t, err)
		b.insert(t, b.queue, "a", "b")
		server.Stop(t)
		requireOutage(t, r, b)
	})
	t.Run("unknown errors while ping fails", func(t *testing.T) {
		t.Parallel()
		r, b := setup(t, testenv.RedisAddr(), 3, &faults{pingFails: true})
		b.insert(t, b.queue, "a", "b")
		requireOutage(t, r, b)
	})
}

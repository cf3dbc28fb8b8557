package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
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
	row.Queue, row.MaxRetry, row.TimeoutMS, row.XID = "low", 3, 1500, 1<<33

	before := time.Now().Truncate(time.Millisecond)
	task, opts, err := Task(row, "tenant_a", 15*time.Minute)
	require.NoError(t, err)
	require.Equal(t, "signals:order.placed:email-receipt", task.Type())
	require.Equal(t, row.Payload, task.Payload(), "the payload travels untouched")
	meta, err := envelope.Decode(task.Type(), task.Headers())
	require.NoError(t, err)
	require.False(t, meta.EnqueuedAt.Before(before), "the enqueue's time travels with the task")
	require.False(t, meta.EnqueuedAt.After(time.Now()))
	meta.EnqueuedAt = time.Time{}
	require.Equal(t, envelope.Meta{
		Schema: "tenant_a", Signal: "order.placed", Receiver: "email-receipt", XID: 1 << 33,
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
	task, _, err = Task(root, "signals", time.Minute)
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
	_, opts, err := Task(row, "signals", time.Minute)
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
		{"timeout beyond time.Duration", func(r *store.Row) { r.TimeoutMS = math.MaxInt64 / 1000 }},
		{"negative max retry", func(r *store.Row) { r.MaxRetry = -1 }},
		{"negative depth", func(r *store.Row) { r.Depth = -1 }},
		{"bad signal", func(r *store.Row) { r.Signal = "Order.Placed" }},
		{"empty receiver", func(r *store.Row) { r.Receiver = "" }},
		{"bad queue", func(r *store.Row) { r.Queue = "has spaces" }},
		{"empty queue", func(r *store.Row) { r.Queue = "" }},
	} {
		row := validRow()
		c.change(&row)
		task, opts, err := Task(row, "signals", time.Minute)
		require.ErrorIs(t, err, errInvalidRow, c.name)
		require.Nil(t, task, c.name)
		require.Nil(t, opts, c.name)
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
	kit     *store.KitQueries
	db      store.DB
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
	kit, err := store.NewKitQueries(schema)
	require.NoError(t, err)
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rc.Close() })
	for _, h := range hooks {
		rc.AddHook(h)
	}
	queue := testenv.Queue(t)
	r := New(queries, pool, rc, Config{
		BatchSize:          100,
		Concurrency:        4,
		Retention:          time.Minute,
		MaxEnqueueAttempts: maxAttempts,
		BatchTimeout:       10 * time.Second,
		BatchBytes:         1 << 20,
		RepairAge:          time.Second,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, nil)
	b := &testBundle{queries: queries, kit: kit, db: pool, redis: rc, queue: queue}
	t.Cleanup(func() { b.forgetLedger(t) })
	return r, b
}

// forgetLedger deletes what the relays of the bundle's ledger keep in Redis
// beside the queue: its marker, clock, position and lock.
func (b *testBundle) forgetLedger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := b.queries.LedgerID(ctx, b.db)
	if err != nil {
		return // the schema is gone already
	}
	m := newMarker(b.redis, id)
	k := newPositionKeys(m.key)
	_ = b.redis.Del(ctx, m.key, "{"+m.key+"}:clock", k.position, k.lock).Err()
}

// insert writes one row per receiver of a fresh event on queue, in a
// transaction of its own, and returns the rows' task IDs.
func (b *testBundle) insert(t *testing.T, queue string, receivers ...string) []string {
	t.Helper()
	return b.insertWith(t, b.db, queue, receivers...)
}

// insertWith is insert through db, a transaction the caller commits, say.
func (b *testBundle) insertWith(t *testing.T, db store.Executor, queue string, receivers ...string) []string {
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
	require.NoError(t, b.queries.Insert(t.Context(), db, e, targets))
	return ids
}

// live returns the attempt count of each live row, by task ID: what a
// failed batch must leave as it was.
func (b *testBundle) live(t *testing.T) map[string]int {
	t.Helper()
	rows, err := b.kit.Live(t.Context(), b.db)
	require.NoError(t, err)
	out := map[string]int{}
	for _, r := range rows {
		out[ulid.ULID(r.ID).String()] = r.Attempts
	}
	return out
}

// failing returns the attempt count of each row that failed to enqueue
// and waits for its next try, by task ID.
func (b *testBundle) failing(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for id, attempts := range b.live(t) {
		if attempts > 0 {
			out[id] = attempts
		}
	}
	return out
}

func (b *testBundle) counts(t *testing.T) store.Counts {
	t.Helper()
	c, err := b.queries.Count(t.Context(), b.db)
	require.NoError(t, err)
	return c
}

func (b *testBundle) dead(t *testing.T) []store.Dead {
	t.Helper()
	rows, err := b.queries.ListDead(t.Context(), b.db, store.DeadFilter{Limit: 100})
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

// queued returns the task IDs waiting in the bundle's queue.
func (b *testBundle) queued(t *testing.T) []string {
	t.Helper()
	ids, err := b.redis.LRange(t.Context(), "asynq:{"+b.queue+"}:pending", 0, -1).Result()
	require.NoError(t, err)
	return ids
}

func TestBatchRecordsWhatItEnqueued(t *testing.T) {
	t.Parallel()
	r, b := setup(t, testenv.RedisAddr(), 3)
	n, err := r.Batch(t.Context())
	require.NoError(t, err)
	require.Zero(t, n, "an empty outbox")

	ids := b.insert(t, b.queue, "email-receipt", "analytics")
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, store.Counts{Live: 2}, b.counts(t), "rows stay, as the ledger, until their receivers succeed")
	b.requireQueued(t, ids...)
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Zero(t, n, "enqueued rows are not read again: the position passed them")

	// A row enqueued by a relay that died before moving the position: its
	// task ID is taken, so it counts as enqueued.
	again := b.insert(t, b.queue, "audit")
	rows, err := b.kit.Live(t.Context(), b.db)
	require.NoError(t, err)
	task, opts, err := Task(rows[len(rows)-1], "signals", time.Minute)
	require.NoError(t, err)
	_, err = asynq.NewClientFromRedisClient(b.redis).EnqueueContext(t.Context(), task, opts...)
	require.NoError(t, err)
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, store.Counts{Live: 3}, b.counts(t))
	b.requireQueued(t, again...)
	require.Len(t, b.queued(t), 3, "no task twice")
}

func TestBatchBuriesAnInvalidRowAtOnce(t *testing.T) {
	t.Parallel()
	r, b := setup(t, testenv.RedisAddr(), 3)
	bad := b.insert(t, "has spaces", "r")
	good := b.insert(t, b.queue, "r")

	n, err := r.Batch(t.Context())
	require.NoError(t, err, "a dead row is not a failed batch")
	require.Equal(t, 2, n)
	require.Equal(t, store.Counts{Live: 1, Dead: 1}, b.counts(t))
	b.requireQueued(t, good...)
	dead := b.dead(t)
	require.Len(t, dead, 1)
	require.Equal(t, bad[0], ulid.ULID(dead[0].ID).String())
	require.Equal(t, store.ReasonUnenqueueable, dead[0].Reason)
	require.Equal(t, 1, dead[0].Attempts)
	require.Contains(t, *dead[0].LastError, `queue "has spaces"`)
}

func TestBatchHoldsBackAFailingRowAloneThenBuriesIt(t *testing.T) {
	t.Parallel()
	hook := &faults{tasks: map[string]bool{}}
	r, b := setup(t, testenv.RedisAddr(), 3, hook)
	r.cfg.BackoffMin, r.cfg.BackoffMax = time.Hour, time.Hour
	failing := b.insert(t, b.queue, "r")[0]
	hook.tasks[failing] = true

	// Redis answers a Ping, so the failure is the row's: not the batch's.
	n, err := r.Batch(t.Context())
	require.NoError(t, err, "a row's failure does not back the relay off")
	require.Equal(t, 1, n)
	require.Equal(t, map[string]int{failing: 1}, b.failing(t))

	// The failing row waits out its own backoff; the others flow.
	good := b.insert(t, b.queue, "r")
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n, "only the row that is due")
	b.requireQueued(t, good...)

	// A second failure with no delay, as a batch records it with a backoff
	// of zero, makes it due at once: its third attempt buries it.
	rows, err := b.kit.Live(t.Context(), b.db)
	require.NoError(t, err)
	var ref store.Ref
	for _, row := range rows {
		if ulid.ULID(row.ID).String() == failing {
			ref = row.Ref()
		}
	}
	require.NoError(t, b.queries.RetryLater(t.Context(), b.db, []store.Failure{{Ref: ref, Error: errInjected.Error()}}))
	n, err = r.Batch(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Empty(t, b.failing(t))
	dead := b.dead(t)
	require.Len(t, dead, 1)
	require.Equal(t, failing, ulid.ULID(dead[0].ID).String())
	require.Equal(t, 3, dead[0].Attempts)
	require.Contains(t, *dead[0].LastError, errInjected.Error())
}

func TestBatchLeavesRowsUntouchedDuringAnOutage(t *testing.T) {
	t.Parallel()
	// requireOutage requires that a batch fails and leaves every row as it
	// was: no attempt counted, nothing buried.
	requireOutage := func(t *testing.T, r *Relay, b *testBundle) {
		t.Helper()
		want := b.live(t)
		require.NotEmpty(t, want)
		_, err := r.Batch(t.Context())
		require.Error(t, err)
		require.Equal(t, want, b.live(t))
		require.Empty(t, b.dead(t))
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
		// is asynq's text, not a network error: the Ping tells. With one
		// attempt allowed, a row blamed for it would be buried at once.
		server := testenv.StartRedis(t)
		r, b := setup(t, server.Addr, 1)
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

package signalstest_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/dj-signals/signals/signalstest"
)

func TestDrainReturnsOnceEveryReceiverHasRun(t *testing.T) {
	t.Parallel()
	w := setup(t)
	queue := testenv.Queue(t)
	redis := asynq.RedisClientOpt{Addr: testenv.RedisAddr()}
	placed := signals.Register[signedUp](w.reg, "user.signed_up")
	welcomed := signals.Register[int64](w.reg, "user.welcomed")

	var mu sync.Mutex
	runs := map[string]int{}
	add := func(key string) int {
		mu.Lock()
		defer mu.Unlock()
		runs[key]++
		return runs[key]
	}
	fast := signals.Backoff(10*time.Millisecond, 50*time.Millisecond)
	placed.Connect("count", func(context.Context, signals.Event[signedUp]) error {
		add("count")
		return nil
	}, signals.Queue(queue))
	placed.Connect("flaky", func(_ context.Context, e signals.Event[signedUp]) error {
		if add("flaky "+e.TaskID.String()) == 1 {
			return errors.New("try again")
		}
		add("flaky succeeded")
		return nil
	}, signals.Queue(queue), fast)
	placed.Connect("gives-up", func(context.Context, signals.Event[signedUp]) error {
		add("gives-up")
		return signals.Permanent(errors.New("no such mailbox"))
	}, signals.Queue(queue))
	placed.Connect("cascade", func(ctx context.Context, e signals.Event[signedUp]) error {
		return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
			_, err := welcomed.SendReliable(ctx, tx, e.Payload.UserID)
			return err
		})
	}, signals.Queue(queue))
	welcomed.Connect("record", func(context.Context, signals.Event[int64]) error {
		add("welcomed")
		return nil
	}, signals.Queue(queue))

	signalstest.Drain(t, w.pool, redis, w.reg) // nothing to do yet

	const users = 3
	for i := range int64(users) {
		require.NoError(t, send(t, w.pool, placed, signedUp{UserID: i}))
	}
	signalstest.Drain(t, w.pool, redis, w.reg)

	mu.Lock()
	require.Equal(t, users, runs["count"])
	require.Equal(t, users, runs["flaky succeeded"], "retried receivers finished")
	require.Equal(t, users, runs["welcomed"], "the cascade finished")
	require.Equal(t, users, runs["gives-up"], "a dead-lettered receiver does not hold Drain")
	mu.Unlock()
	ledger, err := signals.NewLedger(w.reg, w.pool, redis)
	require.NoError(t, err)
	dead, err := ledger.DeadLetters(t.Context(), signals.DeadFilter{Receiver: "gives-up", Limit: users})
	require.NoError(t, err)
	require.Len(t, dead, users, "dead letters stay for the test to inspect")
	signalstest.RequireNotSent(t, w.pool, placed, nil)
}

// TestDrainRunsAReceiverThatConsumesItsRowOnce drains a receiver that
// applies its effect with signals.Consume and fails after its commit on
// its first attempt: Drain waits for the retry, which applies nothing, and
// the effect is there once.
func TestDrainRunsAReceiverThatConsumesItsRowOnce(t *testing.T) {
	t.Parallel()
	w := setup(t)
	queue := testenv.Queue(t)
	redis := asynq.RedisClientOpt{Addr: testenv.RedisAddr()}
	placed := signals.Register[signedUp](w.reg, "user.signed_up")
	credits := pgx.Identifier{w.schema, "credits"}.Sanitize()
	_, err := w.pool.Exec(t.Context(), `CREATE TABLE `+credits+` (user_id bigint NOT NULL)`)
	require.NoError(t, err)
	var attempts atomic.Int32
	placed.Connect("grant", func(ctx context.Context, e signals.Event[signedUp]) error {
		attempts.Add(1)
		err := pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
			mine, err := signals.Consume(ctx, tx, e)
			if err != nil || !mine {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO `+credits+` (user_id) VALUES ($1)`, e.Payload.UserID)
			return err
		})
		if err == nil && e.Attempt == 1 {
			return errors.New("the process died after the commit")
		}
		return err
	}, signals.Queue(queue), signals.Backoff(10*time.Millisecond, 50*time.Millisecond))

	require.NoError(t, send(t, w.pool, placed, signedUp{UserID: 7}))
	signalstest.Drain(t, w.pool, redis, w.reg)

	var n int
	require.NoError(t, w.pool.QueryRow(t.Context(), `SELECT count(*) FROM `+credits+` WHERE user_id = 7`).Scan(&n))
	require.Equal(t, 1, n, "granted once")
	require.Equal(t, int32(2), attempts.Load(), "Drain waited for the retry")
	signalstest.RequireNotSent(t, w.pool, placed, nil)
}

// sendID commits one event of sig through db and returns its ID.
func sendID[T any](t *testing.T, db signals.DB, sig *signals.Signal[T], payload T, opts ...signals.SendOption) ulid.ULID {
	t.Helper()
	var id ulid.ULID
	require.NoError(t, pgx.BeginFunc(t.Context(), db, func(tx pgx.Tx) (err error) {
		id, err = sig.SendReliable(t.Context(), tx, payload, opts...)
		return err
	}))
	return id
}

// holdRows deletes the event's outbox rows in a transaction left open until
// the test ends, as a receiver's transaction with signals.Consume does while
// it runs: until then no ack removes them, and everyone else still sees
// them. It returns their IDs.
func (w testBundle) holdRows(t *testing.T, event ulid.ULID) []ulid.ULID {
	t.Helper()
	tx, err := w.pool.Begin(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	rows, err := tx.Query(t.Context(), `DELETE FROM `+pgx.Identifier{w.schema, "outbox"}.Sanitize()+` WHERE event_id = $1 RETURNING id`, event)
	require.NoError(t, err)
	raw, err := pgx.CollectRows(rows, pgx.RowTo[[16]byte])
	require.NoError(t, err)
	require.NotEmpty(t, raw)
	ids := make([]ulid.ULID, len(raw))
	for i, id := range raw {
		ids[i] = id
	}
	return ids
}

func TestDrainWaitsOnlyForItsRegistrysWork(t *testing.T) {
	t.Parallel()
	w := setup(t)
	queue := testenv.Queue(t)
	redisOpt := asynq.RedisClientOpt{Addr: testenv.RedisAddr()}
	placed := signals.Register[signedUp](w.reg, "user.signed_up")
	var welcomed atomic.Int64
	placed.Connect("welcome", func(context.Context, signals.Event[signedUp]) error {
		welcomed.Add(1)
		return nil
	}, signals.Queue(queue))

	// Another application's registry, on the same schema and queue. Each of
	// the three below held the Drain that waited for the whole schema and
	// queue until it timed out.
	other, err := signals.NewRegistry(signals.RegistryConfig{Schema: w.schema})
	require.NoError(t, err)
	audited := signals.Register[int](other, "audit.logged")
	audited.Connect("store", nop[int], signals.Queue(queue))
	purged := signals.Register[int](other, "account.purged")
	purged.Connect("erase", nop[int], signals.Queue(queue))

	// Its delayed event: Drain's Dispatcher moves it to the queue, where it
	// waits an hour as a scheduled task.
	sendID(t, w.pool, audited, 1, signals.At(time.Now().Add(time.Hour)))
	// Its row, held by its own relay mid-batch.
	w.holdRows(t, sendID(t, w.pool, purged, 2))
	// A task of this registry's signal left by an earlier run, due in an
	// hour: its ID, a ULID, dates from before this test binary started.
	client := asynq.NewClient(redisOpt)
	defer client.Close()
	earlier := ulid.MustNew(ulid.Timestamp(time.Now().Add(-time.Hour)), rand.Reader)
	_, err = client.EnqueueContext(t.Context(), asynq.NewTask(envelope.TaskType("user.signed_up", "welcome"), []byte(`{}`)),
		asynq.TaskID(earlier.String()), asynq.Queue(queue), asynq.ProcessIn(time.Hour))
	require.NoError(t, err)

	sendID(t, w.pool, placed, signedUp{UserID: 1})
	signalstest.Drain(t, w.pool, redisOpt, w.reg)
	require.Equal(t, int64(1), welcomed.Load(), "the registry's own work is done")

	insp := asynq.NewInspector(redisOpt)
	defer insp.Close()
	scheduled, err := insp.ListScheduledTasks(queue)
	require.NoError(t, err)
	var types []string
	for _, task := range scheduled {
		types = append(types, task.Type)
	}
	require.ElementsMatch(t, []string{"signals:audit.logged:store", "signals:user.signed_up:welcome"}, types, "the other work is still waiting")
	require.Equal(t, []int{2}, signalstest.RequireSent(t, w.pool, purged, nil))
}

func TestDrainTimeoutSaysWhatItWaitsFor(t *testing.T) {
	t.Parallel()
	w := setup(t)
	queue := testenv.Queue(t)
	redisOpt := asynq.RedisClientOpt{Addr: testenv.RedisAddr()}
	placed := signals.Register[signedUp](w.reg, "user.signed_up")
	failed := make(chan ulid.ULID, 1)
	placed.Connect("welcome", func(_ context.Context, e signals.Event[signedUp]) error {
		select {
		case failed <- e.TaskID:
		default:
		}
		return errors.New("smtp: connection refused\ngoroutine 7 [running]:")
	}, signals.Queue(queue), signals.Backoff(time.Hour, time.Hour), signals.MaxRetries(3))
	purged := signals.Register[int](w.reg, "account.purged")
	purged.Connect("erase", nop[int], signals.Queue(queue))

	held := w.holdRows(t, sendID(t, w.pool, purged, 2))
	sendID(t, w.pool, placed, signedUp{UserID: 1})
	msg := failure(t, func(tb testing.TB) {
		signalstest.DrainWithin(tb, w.pool, redisOpt, w.reg, 2*time.Second)
	})

	require.Contains(t, msg, fmt.Sprintf("the registry's work (schema %q) not done within 2s", w.schema))
	require.Contains(t, msg, "2 row(s) whose receivers have not succeeded")
	require.Contains(t, msg, fmt.Sprintf(`task %s: signal "account.purged", receiver "erase", queue %q, not enqueued yet`, held[0], queue))
	var taskID ulid.ULID
	select {
	case taskID = <-failed:
	default:
		t.Fatalf("the receiver never ran; Drain said: %s", msg)
	}
	require.Contains(t, msg, fmt.Sprintf(`queue %q, retry: task %s: signal "user.signed_up", receiver "welcome", retried 1 of 3 times`, queue, taskID))
	require.Contains(t, msg, "last error: smtp: connection refused")
	require.NotContains(t, msg, "goroutine 7", "only an error's first line")
}

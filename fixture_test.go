package signals_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// deliveryFixture is one test's world: a migrated schema, a registry on it,
// a Redis queue of its own, and helpers to run relays and workers on them.
type deliveryFixture struct {
	pool   *pgxpool.Pool
	schema string
	reg    *signals.Registry
	queue  string
	redis  asynq.RedisClientOpt
}

func setupDelivery(t *testing.T) *deliveryFixture {
	t.Helper()
	f := &deliveryFixture{
		pool:   testenv.Pool(t),
		schema: testenv.Schema(t),
		queue:  testenv.Queue(t),
		redis:  asynq.RedisClientOpt{Addr: testenv.RedisAddr()},
	}
	require.NoError(t, signals.MigrateSchema(t.Context(), f.pool, f.schema))
	f.reg = signals.MustNewRegistry(signals.RegistryConfig{Schema: f.schema, Logger: quietLogger()})
	return f
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fastRetry makes retries quick enough for tests.
var fastRetry = signals.Backoff(10*time.Millisecond, 50*time.Millisecond)

// run starts fn in a goroutine until the test ends, then cancels it and
// requires that it returned nil.
func run(t *testing.T, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var err error
	wg.Add(1)
	go func() {
		defer wg.Done()
		err = fn(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		require.NoError(t, err)
	})
}

func (f *deliveryFixture) dispatcher(t *testing.T, cfg signals.DispatcherConfig) *signals.Dispatcher {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	d, err := signals.NewDispatcher(f.reg, f.pool, f.redis, cfg)
	require.NoError(t, err)
	return d
}

func (f *deliveryFixture) runDispatcher(t *testing.T, cfg signals.DispatcherConfig) {
	t.Helper()
	run(t, f.dispatcher(t, cfg).Run)
}

func (f *deliveryFixture) runWorker(t *testing.T) {
	t.Helper()
	w, err := signals.NewWorker(f.reg, f.redis, signals.WorkerConfig{
		Queues:                   map[string]int{f.queue: 1},
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		ShutdownTimeout:          2 * time.Second,
		Logger:                   quietLogger(),
	})
	require.NoError(t, err)
	run(t, w.Run)
}

// send commits one event in its own transaction.
func send[T any](t *testing.T, f *deliveryFixture, sig *signals.Signal[T], payload T, opts ...signals.SendOption) {
	t.Helper()
	err := pgx.BeginFunc(t.Context(), f.pool, func(tx pgx.Tx) error {
		_, err := sig.SendReliable(t.Context(), tx, payload, opts...)
		return err
	})
	require.NoError(t, err)
}

// countedSignal registers "order.placed" with one receiver, "r", on the
// fixture's queue, counting its runs per order ID.
func countedSignal(t *testing.T, f *deliveryFixture) (*signals.Signal[orderPlaced], *counter) {
	t.Helper()
	sig, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)
	runs := newCounter()
	sig.Connect("r", func(_ context.Context, e signals.Event[orderPlaced]) error {
		runs.add(e.Payload.OrderID)
		return nil
	}, signals.Queue(f.queue))
	return sig, runs
}

// pending counts the rows still in the outbox.
func (f *deliveryFixture) pending(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, f.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{f.schema, "outbox"}.Sanitize()).Scan(&n))
	return n
}

func (f *deliveryFixture) inspector(t *testing.T) *asynq.Inspector {
	t.Helper()
	i := asynq.NewInspector(f.redis)
	t.Cleanup(func() { _ = i.Close() })
	return i
}

// counter counts runs per key, safe for concurrent receivers.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func newCounter() *counter { return &counter{n: map[string]int{}} }

func (c *counter) add(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[key]++
	return c.n[key]
}

func (c *counter) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

const eventually = 20 * time.Second
const tick = 10 * time.Millisecond

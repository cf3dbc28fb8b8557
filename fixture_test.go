package signals_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/dj-signals/signals/signalstest"
)

// The root package's tests share this file's vocabulary: one fixture, the
// payload most tests send, and the helpers to register, send, read the
// outbox, and run relays and workers.

// testBundle is one test's world: a pool that counts its statements, a migrated
// schema of the test's own with a registry on it, an asynq queue of the
// test's own, and the store's statements for reading the outbox.
type testBundle struct {
	pool       *pgxpool.Pool
	statements *testenv.Statements // statements sent through pool
	schema     string
	reg        *signals.Registry
	queries    *store.Queries
	kit        *store.KitQueries
	queue      string
	regQueue   string // the registry's queue, of receivers connected without the Queue option
	redis      asynq.RedisClientOpt
	logger     *slog.Logger // runWorker's; quiet unless a test sets it
}

// setup returns a fixture whose registry has the default config.
func setup(t *testing.T) *testBundle {
	t.Helper()
	return setupRegistry(t, signals.RegistryConfig{})
}

// setupRegistry returns a fixture whose registry has cfg, with the fixture's
// schema.
func setupRegistry(t *testing.T, cfg signals.RegistryConfig) *testBundle {
	t.Helper()
	f := newFixture(t, testenv.Schema(t), cfg)
	require.NoError(t, f.reg.Migrate(t.Context(), f.pool))
	return f
}

// setupOnSchema returns a fixture on schema as the test built it, not
// migrated, for a test of the migrations.
func setupOnSchema(t *testing.T, schema string) *testBundle {
	t.Helper()
	return newFixture(t, schema, signals.RegistryConfig{})
}

func newFixture(t *testing.T, schema string, cfg signals.RegistryConfig) *testBundle {
	t.Helper()
	f := &testBundle{
		statements: &testenv.Statements{},
		schema:     schema,
		queue:      testenv.Queue(t),
		redis:      asynq.RedisClientOpt{Addr: testenv.RedisAddr()},
		logger:     quietLogger(),
	}
	f.pool = newPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = f.statements })
	cfg.Schema = f.schema
	f.regQueue = cfg.WithDefaults().Queue
	var err error
	f.reg, err = signals.NewRegistry(cfg)
	require.NoError(t, err)
	f.queries, err = store.New(f.schema)
	require.NoError(t, err)
	f.kit, err = store.NewKitQueries(f.schema)
	require.NoError(t, err)
	return f
}

// newPool connects a pool of the test's own, configured by configure, for
// a test that needs one unlike testenv.Pool's. It is closed when the test
// ends.
func newPool(t *testing.T, configure func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testenv.DatabaseURL())
	require.NoError(t, err)
	configure(cfg)
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// orderPlaced is the payload most tests send.
type orderPlaced struct {
	OrderID string `json:"order_id"`
	Cents   int    `json:"cents"`
}

func nop[T any](context.Context, signals.Event[T]) error { return nil }

// fastRetry makes retries quick enough for tests.
var fastRetry = signals.Backoff(10*time.Millisecond, 50*time.Millisecond)

// newRegistry returns a registry with cfg, for a test that needs one beside
// its fixture's.
func newRegistry(t *testing.T, cfg signals.RegistryConfig) *signals.Registry {
	t.Helper()
	reg, err := signals.NewRegistry(cfg)
	require.NoError(t, err)
	return reg
}

// wiringError runs wire, wiring that panics on a programmer error (Register,
// Connect), and returns the error it panicked with, or nil.
func wiringError(t *testing.T, wire func()) (err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			var ok bool
			err, ok = p.(error)
			require.True(t, ok, "wiring panicked with %T, not an error: %v", p, p)
		}
	}()
	wire()
	return nil
}

// nopSignal registers "order.placed" with receivers that do nothing, on
// the fixture's queue.
func nopSignal(t *testing.T, f *testBundle, receivers ...string) *signals.Signal[orderPlaced] {
	t.Helper()
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	for _, name := range receivers {
		sig.Connect(name, nop[orderPlaced], signals.Queue(f.queue))
	}
	return sig
}

// countedSignal registers "order.placed" with one receiver, "r", on the
// fixture's queue, counting its runs per order ID.
func countedSignal(t *testing.T, f *testBundle) (*signals.Signal[orderPlaced], *counter) {
	t.Helper()
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	runs := newCounter()
	sig.Connect("r", func(_ context.Context, e signals.Event[orderPlaced]) error {
		runs.add(e.Payload.OrderID)
		return nil
	}, signals.Queue(f.queue))
	return sig, runs
}

// commit sends payload in a transaction of its own on db and commits it. It
// returns the event's ID and the error of the send or of the commit (an
// Eager's carries its receivers' errors). Receivers and goroutines use it;
// tests use send.
func commit[T any](ctx context.Context, db signals.DB, sig *signals.Signal[T], payload T, opts ...signals.SendOption) (ulid.ULID, error) {
	var id ulid.ULID
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) (err error) {
		id, err = sig.SendReliable(ctx, tx, payload, opts...)
		return err
	})
	return id, err
}

// send commits one event through db and returns its ID.
func send[T any](t *testing.T, db signals.DB, sig *signals.Signal[T], payload T, opts ...signals.SendOption) ulid.ULID {
	t.Helper()
	id, err := commit(t.Context(), db, sig, payload, opts...)
	require.NoError(t, err)
	return id
}

// sendOrders commits n events, one per transaction, with order IDs
// prefix-0 to prefix-<n-1>, and returns their IDs.
func sendOrders(t *testing.T, f *testBundle, sig *signals.Signal[orderPlaced], prefix string, n int) []ulid.ULID {
	t.Helper()
	ids := make([]ulid.ULID, n)
	for i := range ids {
		ids[i] = send(t, f.pool, sig, orderPlaced{OrderID: fmt.Sprintf("%s-%d", prefix, i), Cents: i})
	}
	return ids
}

// begin opens a transaction on the fixture's pool that is rolled back when
// the test ends unless it was committed first.
func (f *testBundle) begin(t *testing.T) pgx.Tx {
	t.Helper()
	tx, err := f.pool.Begin(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

// outbox returns the rows still in the fixture's outbox, oldest first.
func (f *testBundle) outbox(t *testing.T) []store.Row {
	t.Helper()
	rows, err := f.kit.Live(context.Background(), f.pool)
	require.NoError(t, err)
	return rows
}

// pending counts the rows still in the fixture's outbox: their receivers
// have not succeeded yet, whether or not they are enqueued.
func (f *testBundle) pending(t *testing.T) int {
	t.Helper()
	c, err := f.queries.Count(context.Background(), f.pool)
	require.NoError(t, err)
	return int(c.Live)
}

// notEnqueued counts the rows waiting for a Dispatcher to enqueue them, as
// the ledger's Stats count them.
func (f *testBundle) notEnqueued(t *testing.T) int {
	t.Helper()
	st, err := f.ledger(t).Stats(context.Background())
	require.NoError(t, err)
	n := 0
	for _, r := range st.Receivers {
		n += r.Pending
	}
	return n
}

// eager returns an Eager running the fixture's receivers at commit.
func (f *testBundle) eager(t *testing.T) *signalstest.Eager {
	t.Helper()
	e, err := signalstest.NewEager(f.pool, f.reg)
	require.NoError(t, err)
	return e
}

// ledger returns the ledger of the fixture's registry, reading Redis too.
func (f *testBundle) ledger(t *testing.T) *signals.Ledger {
	t.Helper()
	l, err := signals.NewLedger(f.reg, f.pool, f.redis)
	require.NoError(t, err)
	return l
}

// awaitDead waits until the ledger holds n dead letters, and returns them.
func (f *testBundle) awaitDead(t *testing.T, n int) []signals.DeadLetter {
	t.Helper()
	l := f.ledger(t)
	var dead []signals.DeadLetter
	require.Eventually(t, func() bool {
		var err error
		dead, err = l.DeadLetters(t.Context(), signals.DeadFilter{})
		return err == nil && len(dead) == n
	}, eventually, tick, "%d dead letters", n)
	return dead
}

func (f *testBundle) dispatcher(t *testing.T, cfg signals.DispatcherConfig) *signals.Dispatcher {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	d, err := signals.NewDispatcher(f.reg, f.pool, f.redis, cfg)
	require.NoError(t, err)
	return d
}

func (f *testBundle) runDispatcher(t *testing.T, cfg signals.DispatcherConfig) {
	t.Helper()
	run(t, f.dispatcher(t, cfg).Run)
}

func (f *testBundle) runWorker(t *testing.T) {
	t.Helper()
	w, err := signals.NewWorker(f.reg, f.pool, f.redis, signals.WorkerConfig{
		Queues:                   map[string]int{f.queue: 1},
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		ShutdownTimeout:          2 * time.Second,
		Logger:                   f.logger,
	})
	require.NoError(t, err)
	run(t, w.Run)
}

// run runs fn in a goroutine until the test ends, then requires that it
// returns nil.
func run(t *testing.T, fn func(context.Context) error) {
	t.Helper()
	stop := start(t, fn)
	t.Cleanup(func() { stop(30 * time.Second) })
}

// start runs fn in a goroutine and returns stop, which cancels fn's ctx and
// requires that fn returns nil within timeout. fn's ctx also ends with the
// test.
func start(t *testing.T, fn func(context.Context) error) (stop func(timeout time.Duration)) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	return func(timeout time.Duration) {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err, "Run returns nil after a ctx-caused shutdown")
		case <-time.After(timeout):
			t.Fatalf("Run did not return within %v after cancel", timeout)
		}
	}
}

func (f *testBundle) inspector(t *testing.T) *asynq.Inspector {
	t.Helper()
	i := asynq.NewInspector(f.redis)
	t.Cleanup(func() { _ = i.Close() })
	return i
}

// queueDrained reports whether the fixture's queue has nothing left to run.
func (f *testBundle) queueDrained(ins *asynq.Inspector) bool {
	info, err := ins.GetQueueInfo(f.queue)
	return err == nil && info.Pending == 0 && info.Active == 0 && info.Scheduled == 0 && info.Retry == 0
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

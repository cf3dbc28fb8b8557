package signals_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// pgbouncerQuery is what an application's pgx pool needs behind PgBouncer
// 1.18 in transaction pooling mode, which keeps no prepared statement from
// one transaction to the next: pgx's default mode prepares each statement
// once per connection and runs it by name later, on whichever server
// connection PgBouncer hands out then. In cache_describe mode pgx asks the
// server once per connection for a statement's parameter and result types,
// then parses, binds and runs it in one round trip with the unnamed
// statement every time. (describe_exec spreads a statement over two round
// trips, between which PgBouncer may switch server connections; exec and
// simple_protocol cannot encode the library's uuid and jsonb arguments.)
const pgbouncerQuery = "default_query_exec_mode=cache_describe"

// setupPgBouncer returns a fixture like setup's whose pool goes through
// bouncer with pgbouncerQuery, as an application's would; the schema is
// migrated through it too. The pool may open twice as many connections
// as PgBouncer has server connections, so that transactions take turns on
// them.
func setupPgBouncer(t *testing.T, bouncer *testenv.PgBouncer, cfg signals.RegistryConfig) *testBundle {
	t.Helper()
	f := newFixture(t, testenv.Schema(t), cfg)
	f.pool = pgbouncerPool(t, bouncer, func(c *pgxpool.Config) { c.ConnConfig.Tracer = f.statements })
	require.NoError(t, f.reg.Migrate(t.Context(), f.pool), "migrate through PgBouncer; its log:\n%s", bouncer.Log())
	return f
}

// pgbouncerPool connects a pool through bouncer with pgbouncerQuery in its
// URL, configured by configure, closed when the test ends.
func pgbouncerPool(t *testing.T, bouncer *testenv.PgBouncer, configure func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(bouncer.URL(pgbouncerQuery))
	require.NoError(t, err)
	cfg.MaxConns = 2 * testenv.PgBouncerPoolSize
	configure(cfg)
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// TestPgBouncer runs the library through a PgBouncer in transaction pooling
// mode: every statement of the senders, the Dispatchers, the Workers, the
// receivers' Once and Consume and the Ledger goes through it, on a pool
// set up as the README says and nothing else.
func TestPgBouncer(t *testing.T) {
	t.Parallel()
	bouncer := testenv.StartPgBouncer(t)

	// Not parallel: it runs before the other subtests start, so that only
	// its own clients use PgBouncer's server connections.
	t.Run("pgx's default mode breaks: a statement prepared on one server connection runs on another", func(t *testing.T) {
		a := pgbouncerConn(t, bouncer)
		var x int
		err := a.QueryRow(t.Context(), `SELECT pg_backend_pid() + $1::int`, 0).Scan(&x)
		if err == nil {
			// Other clients' transactions take the idle server connections,
			// the one a prepared its statement on among them, before
			// PgBouncer opens new ones; a's next run gets another.
			held := false
			for range testenv.PgBouncerPoolSize - 1 {
				tx, err := pgbouncerConn(t, bouncer).Begin(t.Context())
				require.NoError(t, err)
				defer tx.Rollback(context.Background()) //nolint:errcheck // the transactions only read
				var pid int
				require.NoError(t, tx.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&pid))
				if held = pid == x; held {
					break
				}
			}
			require.True(t, held, "a transaction holds server connection %d", x)
			err = a.QueryRow(t.Context(), `SELECT pg_backend_pid() + $1::int`, 0).Scan(&x)
		}
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "26000", pgErr.Code, "invalid_sql_statement_name: %v", err)
	})

	t.Run("senders in application transactions, Dispatchers and Workers", func(t *testing.T) {
		t.Parallel()
		f := setupPgBouncer(t, bouncer, signals.RegistryConfig{Middleware: []signals.Middleware{traceHeader}})
		orders := pgx.Identifier{f.schema, "orders"}.Sanitize()
		_, err := f.pool.Exec(t.Context(), `CREATE TABLE `+orders+` (id text PRIMARY KEY, cents int NOT NULL)`)
		require.NoError(t, err)
		sig := signals.Register[orderPlaced](f.reg, "order.placed")
		emails, audits := newCounter(), newCounter()
		sig.Connect("email-receipt", func(ctx context.Context, e signals.Event[orderPlaced]) error {
			if got, want := ctx.Value(traceHeaderKey{}), "trace-"+e.ID.String(); got != want {
				return signals.Permanent(fmt.Errorf("header trace is %v, want %s", got, want))
			}
			emails.add(e.Payload.OrderID)
			return nil
		}, signals.Queue(f.queue))
		sig.Connect("audit", func(_ context.Context, e signals.Event[orderPlaced]) error {
			if audits.add(e.Payload.OrderID) == 1 && e.Payload.Cents%4 == 0 {
				return errors.New("first attempts of every fourth order fail")
			}
			return nil
		}, signals.Queue(f.queue), fastRetry)
		f.runDispatcher(t, signals.DispatcherConfig{})
		f.runDispatcher(t, signals.DispatcherConfig{})
		f.runWorker(t)
		f.runWorker(t)

		// Every transaction writes the order and sends its event; every
		// third also sends one in a savepoint it rolls back, and every
		// tenth rolls back whole.
		const senders, each = 8, 25
		var wg sync.WaitGroup
		for s := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					n := s*each + i
					id := fmt.Sprintf("o-%d", n)
					err := pgx.BeginFunc(t.Context(), f.pool, func(tx pgx.Tx) error {
						if _, err := tx.Exec(t.Context(), `INSERT INTO `+orders+` (id, cents) VALUES ($1, $2)`, id, n); err != nil {
							return err
						}
						if _, err := sig.SendReliable(t.Context(), tx, orderPlaced{OrderID: id, Cents: n}); err != nil {
							return err
						}
						if n%3 == 0 {
							err := pgx.BeginFunc(t.Context(), tx, func(sp pgx.Tx) error {
								if _, err := sig.SendReliable(t.Context(), sp, orderPlaced{OrderID: "savepoint-" + id}); err != nil {
									return err
								}
								return errRolledBack
							})
							if !errors.Is(err, errRolledBack) {
								return err
							}
						}
						if n%10 == 0 {
							return errRolledBack
						}
						return nil
					})
					if err != nil && !errors.Is(err, errRolledBack) {
						t.Errorf("sender %d, order %s: %v", s, id, err)
						return
					}
				}
			}()
		}
		wg.Wait()

		testenv.Eventually(t, eventually, func() bool { return f.pending(t) == 0 }, "every row done; PgBouncer's log:\n%s", bouncer.Log())
		var committed int
		require.NoError(t, f.pool.QueryRow(t.Context(), `SELECT count(*) FROM `+orders).Scan(&committed))
		require.Equal(t, senders*each*9/10, committed)
		for n := range senders * each {
			id := fmt.Sprintf("o-%d", n)
			require.Zero(t, emails.get("savepoint-"+id), "an event sent in a rolled-back savepoint never runs")
			if n%10 == 0 {
				require.Zero(t, emails.get(id)+audits.get(id), "%s rolled back, yet its receivers ran", id)
				continue
			}
			require.GreaterOrEqual(t, emails.get(id), 1, "email-receipt runs of %s", id)
			require.GreaterOrEqual(t, audits.get(id), 1, "audit runs of %s", id)
		}
		require.Len(t, emails.snapshot(), committed, "no receiver ran for a rolled-back transaction")
	})

	t.Run("Once and Consume", func(t *testing.T) {
		t.Parallel()
		f := setupPgBouncer(t, bouncer, signals.RegistryConfig{})
		o := &onceTest{f: f, sig: signals.Register[orderPlaced](f.reg, "order.placed"), table: pgx.Identifier{f.schema, "receipts"}.Sanitize()}
		_, err := f.pool.Exec(t.Context(), `CREATE TABLE `+o.table+` (order_id text NOT NULL)`)
		require.NoError(t, err)
		var mu sync.Mutex
		var delivered []signals.Event[orderPlaced]
		receiver := func(body func(context.Context, pgx.Tx, signals.Event[orderPlaced]) (bool, error)) signals.ReceiverFunc[orderPlaced] {
			return func(ctx context.Context, e signals.Event[orderPlaced]) error {
				mu.Lock()
				delivered = append(delivered, e)
				mu.Unlock()
				_, err := o.inTx(ctx, body, e)
				return err
			}
		}
		o.sig.Connect("record-receipt", receiver(o.apply), signals.Queue(f.queue))
		o.sig.Connect("consume-receipt", receiver(o.consume), signals.Queue(f.queue))
		f.runDispatcher(t, signals.DispatcherConfig{})
		f.runWorker(t)

		const events = 50
		sendOrders(t, f, o.sig, "o", events)
		testenv.Eventually(t, eventually, func() bool { return f.pending(t) == 0 }, "every row done; PgBouncer's log:\n%s", bouncer.Log())
		for i := range events {
			require.Equal(t, 2, o.receiptsOf(t, fmt.Sprintf("o-%d", i)), "one receipt per receiver")
		}
		require.Equal(t, events, o.inbox(t), "Once recorded its deliveries; Consume recorded none")

		// Each delivery again, as after a Redis that lost its data: neither
		// applies its effect a second time.
		mu.Lock()
		again := delivered
		mu.Unlock()
		require.GreaterOrEqual(t, len(again), 2*events)
		for _, e := range again {
			body := o.apply
			if e.Receiver == "consume-receipt" {
				body = o.consume
			}
			applied, err := o.inTx(t.Context(), body, e)
			require.NoError(t, err)
			require.False(t, applied, "%s applied %s twice", e.Receiver, e.Payload.OrderID)
		}

		// Concurrent deliveries of one event, each in a transaction of its
		// own: one applies it.
		e := o.sig.NewEvent("record-receipt", orderPlaced{OrderID: "concurrent"})
		const deliveries = 8
		var firsts atomic.Int64
		var wg sync.WaitGroup
		for range deliveries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				first, err := o.deliver(t.Context(), e)
				if err != nil {
					t.Error(err)
				}
				if first {
					firsts.Add(1)
				}
			}()
		}
		wg.Wait()
		require.EqualValues(t, 1, firsts.Load())
		require.Equal(t, 1, o.receiptsOf(t, "concurrent"))

		pruned, err := f.ledger(t).PruneInbox(t.Context(), 1)
		require.NoError(t, err)
		require.Equal(t, events+1, pruned)
	})

	t.Run("ordering", func(t *testing.T) {
		t.Parallel()
		f := setupPgBouncer(t, bouncer, signals.RegistryConfig{})
		sig := signals.Register[step](f.reg, "ledger.step")
		check := newOrderChecker()
		sig.Connect("ordered", func(_ context.Context, e signals.Event[step]) error {
			check.start(e.Payload)
			defer check.end(e.Payload)
			if e.Attempt == 1 && e.Payload.N%5 == 2 {
				return errors.New("first attempts of every fifth event fail")
			}
			return nil
		}, signals.Queue(f.queue), signals.OrderBy(func(s step) string { return s.Key }), fastRetry)
		f.runDispatcher(t, signals.DispatcherConfig{})
		f.runDispatcher(t, signals.DispatcherConfig{})
		f.runWorker(t)
		f.runWorker(t)

		const senders, each, keys = 4, 40, 8
		turn := &sendInTurn{next: map[string]int{}}
		var wg sync.WaitGroup
		for s := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					if err := turn.send(t.Context(), f.pool, sig, fmt.Sprintf("customer-%d", (s+i)%keys)); err != nil {
						t.Errorf("sender %d, event %d: %v", s, i, err)
						return
					}
				}
			}()
		}
		wg.Wait()

		testenv.Eventually(t, eventually, func() bool { return f.pending(t) == 0 }, "every row done; PgBouncer's log:\n%s", bouncer.Log())
		require.Equal(t, senders*each, check.firstRuns(), "every event ran")
		require.Empty(t, check.overlaps, "events of one key ran at once")
		require.Empty(t, check.outOfTurn, "events of one key ran out of commit order")
	})

	t.Run("Redis loses its data", func(t *testing.T) {
		t.Parallel()
		srv := testenv.StartRedis(t)
		f := setupPgBouncer(t, bouncer, signals.RegistryConfig{})
		f.redis = asynq.RedisClientOpt{Addr: srv.Addr}
		sig, runs := countedSignal(t, f)
		f.runDispatcher(t, signals.DispatcherConfig{})

		const events = 50
		sendOrders(t, f, sig, "o", events)
		testenv.Eventually(t, eventually, func() bool { return f.notEnqueued(t) == 0 }, "every row enqueued")
		rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { _ = rc.Close() })
		require.NoError(t, rc.FlushAll(t.Context()).Err())
		f.runWorker(t)

		testenv.Eventually(t, eventually, func() bool { return f.pending(t) == 0 }, "every row done; PgBouncer's log:\n%s", bouncer.Log())
		for i := range events {
			require.GreaterOrEqual(t, runs.get(fmt.Sprintf("o-%d", i)), 1, "o-%d ran, sent again after the flush", i)
		}
	})

	t.Run("dead letters, requeue, discard and stats", func(t *testing.T) {
		t.Parallel()
		f := setupPgBouncer(t, bouncer, signals.RegistryConfig{})
		sig := signals.Register[orderPlaced](f.reg, "order.placed")
		var healed atomic.Bool
		runs := newCounter()
		sig.Connect("r", func(_ context.Context, e signals.Event[orderPlaced]) error {
			runs.add(e.Payload.OrderID)
			if !healed.Load() {
				return signals.Permanent(errors.New("warehouse down"))
			}
			return nil
		}, signals.Queue(f.queue))
		f.runDispatcher(t, signals.DispatcherConfig{})
		f.runWorker(t)
		l := f.ledger(t)

		ids := sendOrders(t, f, sig, "o", 3)
		var dead []signals.DeadLetter
		testenv.Eventually(t, eventually, func() bool {
			var err error
			dead, err = l.DeadLetters(t.Context(), signals.DeadFilter{EventIDs: ids})
			return err == nil && len(dead) == 3 && f.pending(t) == 0
		}, "three dead letters")
		st, err := l.Stats(t.Context())
		require.NoError(t, err)
		require.Len(t, st.Receivers, 1)
		require.Equal(t, 3, st.Receivers[0].Dead)

		healed.Store(true)
		n, err := l.RequeueDead(t.Context(), dead[0].TaskID, dead[1].TaskID)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		n, err = l.DiscardDead(t.Context(), dead[2].TaskID)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		testenv.Eventually(t, eventually, func() bool { return f.pending(t) == 0 }, "the requeued letters ran")
		byTask := map[ulid.ULID]string{}
		for _, d := range dead {
			byTask[d.TaskID] = fmt.Sprintf("o-%d", slices.Index(ids, d.EventID))
		}
		require.GreaterOrEqual(t, runs.get(byTask[dead[0].TaskID]), 2, "a requeued letter runs again")
		require.GreaterOrEqual(t, runs.get(byTask[dead[1].TaskID]), 2, "a requeued letter runs again")
		require.Equal(t, 1, runs.get(byTask[dead[2].TaskID]), "a discarded letter does not run again")
		left, err := l.DeadLetters(t.Context(), signals.DeadFilter{})
		require.NoError(t, err)
		require.Empty(t, left)
	})
}

// traceHeader is a middleware that sends a header with each event and
// gives its value to the receivers in their ctx, under traceHeaderKey{}.
var traceHeader = signals.Middleware{
	Send: func(ctx context.Context, s *signals.SendInfo, next func(context.Context) error) error {
		if s.Headers == nil {
			s.Headers = map[string]string{}
		}
		s.Headers["trace"] = "trace-" + s.EventID.String()
		return next(ctx)
	},
	Receive: func(ctx context.Context, r *signals.ReceiveInfo, next func(context.Context) error) error {
		return next(context.WithValue(ctx, traceHeaderKey{}, r.Headers["trace"]))
	},
}

type traceHeaderKey struct{}

// errRolledBack makes a transaction in a test roll back.
var errRolledBack = errors.New("rolled back on purpose")

// pgbouncerConn connects one connection through bouncer in pgx's default
// mode, closed when the test ends.
func pgbouncerConn(t *testing.T, bouncer *testenv.PgBouncer) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), bouncer.URL(""))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

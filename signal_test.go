package signals_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

type orderPlaced struct {
	OrderID string `json:"order_id"`
	Cents   int    `json:"cents"`
}

// queryCounter counts the statements a pool sends, to prove that a refused
// send sent nothing.
type queryCounter struct{ n atomic.Int64 }

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

type sendFixture struct {
	pool    *pgxpool.Pool
	reg     *signals.Registry
	schema  string
	queries *queryCounter
}

// setupSend returns a migrated per-test schema, a registry on it, and a
// pool whose statements are counted.
func setupSend(t *testing.T) sendFixture {
	t.Helper()
	ctx := t.Context()
	schema := testenv.Schema(t)
	cfg, err := pgxpool.ParseConfig(testenv.DatabaseURL())
	require.NoError(t, err)
	counter := &queryCounter{}
	cfg.ConnConfig.Tracer = counter
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, signals.MigrateSchema(ctx, pool, schema))
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: schema, MaxPayloadBytes: 1024})
	require.NoError(t, err)
	return sendFixture{pool: pool, reg: reg, schema: schema, queries: counter}
}

func nop[T any](context.Context, signals.Event[T]) error { return nil }

type outboxRow struct {
	ID, EventID, CorrelationID [16]byte
	Signal, Receiver, Queue    string
	MaxRetry                   int
	TimeoutMS                  int64
	Payload                    []byte
}

func outboxRows(t *testing.T, pool *pgxpool.Pool, schema string) []outboxRow {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT id, event_id, correlation_id, signal, receiver, queue, max_retry, timeout_ms, payload
		FROM `+pgx.Identifier{schema, "outbox"}.Sanitize()+` ORDER BY id`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (outboxRow, error) {
		var o outboxRow
		err := r.Scan(&o.ID, &o.EventID, &o.CorrelationID, &o.Signal, &o.Receiver, &o.Queue, &o.MaxRetry, &o.TimeoutMS, &o.Payload)
		return o, err
	})
	require.NoError(t, err)
	return out
}

func TestSendReliableCommitWritesOneRowPerReceiver(t *testing.T) {
	t.Parallel()
	f := setupSend(t)
	sig, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)
	sig.Connect("email-receipt", nop[orderPlaced])
	sig.Connect("analytics", nop[orderPlaced], signals.Queue("low"), signals.MaxRetries(3), signals.Timeout(1500*time.Millisecond))
	sig.Connect("warehouse", nop[orderPlaced])

	var eventID ulid.ULID
	before := f.queries.n.Load()
	err = pgx.BeginFunc(t.Context(), f.pool, func(tx pgx.Tx) (err error) {
		eventID, err = sig.SendReliable(t.Context(), tx, orderPlaced{OrderID: "o-1", Cents: 1250})
		return err
	})
	require.NoError(t, err)
	require.Equal(t, int64(1), f.queries.n.Load()-before-2, "one statement for three receivers, besides BEGIN and COMMIT")

	rows := outboxRows(t, f.pool, f.schema)
	require.Len(t, rows, 3)
	seen := map[string]outboxRow{}
	taskIDs := map[[16]byte]bool{}
	for _, r := range rows {
		require.Equal(t, [16]byte(eventID), r.EventID)
		require.Equal(t, [16]byte(eventID), r.CorrelationID, "a root event correlates with itself")
		require.Equal(t, "order.placed", r.Signal)
		require.JSONEq(t, `{"order_id":"o-1","cents":1250}`, string(r.Payload))
		require.NotEqual(t, r.EventID, r.ID)
		taskIDs[r.ID] = true
		seen[r.Receiver] = r
	}
	require.Len(t, taskIDs, 3, "every row has its own task ID")
	require.Equal(t, "signals", seen["email-receipt"].Queue)
	require.Equal(t, signals.DefaultReceiverMaxRetries, seen["email-receipt"].MaxRetry)
	require.Equal(t, signals.DefaultReceiverTimeout.Milliseconds(), seen["email-receipt"].TimeoutMS)
	require.Equal(t, "low", seen["analytics"].Queue)
	require.Equal(t, 3, seen["analytics"].MaxRetry)
	require.Equal(t, int64(1500), seen["analytics"].TimeoutMS)
	require.Contains(t, seen, "warehouse")
}

func TestSendReliableRollbackLeavesNoRow(t *testing.T) {
	t.Parallel()
	f := setupSend(t)
	sig, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)
	sig.Connect("email-receipt", nop[orderPlaced])

	tx, err := f.pool.Begin(t.Context())
	require.NoError(t, err)
	_, err = sig.SendReliable(t.Context(), tx, orderPlaced{OrderID: "o-1"})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(t.Context()))

	require.Empty(t, outboxRows(t, f.pool, f.schema))
}

func TestSendReliableSavepointRollbackDiscardsOnlyItsRows(t *testing.T) {
	t.Parallel()
	f := setupSend(t)
	sig, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)
	sig.Connect("email-receipt", nop[orderPlaced])
	sig.Connect("analytics", nop[orderPlaced])

	var kept ulid.ULID
	err = pgx.BeginFunc(t.Context(), f.pool, func(tx pgx.Tx) (err error) {
		if kept, err = sig.SendReliable(t.Context(), tx, orderPlaced{OrderID: "kept"}); err != nil {
			return err
		}
		nested, err := tx.Begin(t.Context()) // a savepoint
		if err != nil {
			return err
		}
		if _, err := sig.SendReliable(t.Context(), nested, orderPlaced{OrderID: "discarded"}); err != nil {
			return err
		}
		return nested.Rollback(t.Context())
	})
	require.NoError(t, err)

	rows := outboxRows(t, f.pool, f.schema)
	require.Len(t, rows, 2)
	for _, r := range rows {
		require.Equal(t, [16]byte(kept), r.EventID)
		require.JSONEq(t, `{"order_id":"kept","cents":0}`, string(r.Payload))
	}
}

func TestSendReliableConcurrentSenders(t *testing.T) {
	t.Parallel()
	f := setupSend(t)
	sig, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)
	sig.Connect("a", nop[orderPlaced])
	sig.Connect("b", nop[orderPlaced])

	const senders, perSender = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perSender {
				err := pgx.BeginFunc(t.Context(), f.pool, func(tx pgx.Tx) error {
					_, err := sig.SendReliable(t.Context(), tx, orderPlaced{OrderID: fmt.Sprintf("%d-%d", s, i)})
					return err
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	rows := outboxRows(t, f.pool, f.schema)
	require.Len(t, rows, senders*perSender*2)
	perOrder := map[string]map[string]bool{}
	for _, r := range rows {
		var p orderPlaced
		require.NoError(t, json.Unmarshal(r.Payload, &p))
		if perOrder[p.OrderID] == nil {
			perOrder[p.OrderID] = map[string]bool{}
		}
		perOrder[p.OrderID][r.Receiver] = true
	}
	require.Len(t, perOrder, senders*perSender)
	for id, receivers := range perOrder {
		require.Len(t, receivers, 2, "order %s", id)
	}
}

type cyclic struct{ Next *cyclic }

func TestSendReliableRefusesBadInputAndSendsNothing(t *testing.T) {
	t.Parallel()
	f := setupSend(t)
	anySig, err := signals.Register[any](f.reg, "any.thing")
	require.NoError(t, err)
	anySig.Connect("r", nop[any])
	lonely, err := signals.Register[any](f.reg, "nobody.listens")
	require.NoError(t, err)

	loop := &cyclic{}
	loop.Next = loop
	cases := []struct {
		name    string
		sig     *signals.Signal[any]
		payload any
		want    error
	}{
		{"channel", anySig, make(chan int), signals.ErrInvalidPayload},
		{"func", anySig, func() {}, signals.ErrInvalidPayload},
		{"NaN", anySig, math.NaN(), signals.ErrInvalidPayload},
		{"infinity", anySig, map[string]float64{"x": math.Inf(1)}, signals.ErrInvalidPayload},
		{"cycle", anySig, loop, signals.ErrInvalidPayload},
		{"too large", anySig, strings.Repeat("x", 1024), signals.ErrPayloadTooLarge},
		{"no receivers", lonely, "hello", signals.ErrNoReceivers},
	}
	tx, err := f.pool.Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(t.Context()) //nolint:errcheck

	for _, c := range cases {
		before := f.queries.n.Load()
		_, err := c.sig.SendReliable(t.Context(), tx, c.payload)
		require.ErrorIs(t, err, c.want, c.name)
		require.Equal(t, before, f.queries.n.Load(), "%s: no statement may be sent", c.name)
	}

	_, err = anySig.SendReliable(t.Context(), nil, "x")
	require.ErrorIs(t, err, signals.ErrNilTx)

	// The transaction is still usable: a valid send goes through and commits.
	_, err = anySig.SendReliable(t.Context(), tx, strings.Repeat("x", 100))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(t.Context()))
	require.Len(t, outboxRows(t, f.pool, f.schema), 1)
}

func TestSendReliableWrapsJSONError(t *testing.T) {
	t.Parallel()
	f := setupSend(t)
	sig, err := signals.Register[float64](f.reg, "num.sent")
	require.NoError(t, err)
	sig.Connect("r", nop[float64])
	tx, err := f.pool.Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(t.Context()) //nolint:errcheck

	_, err = sig.SendReliable(t.Context(), tx, math.NaN())
	var jsonErr *json.UnsupportedValueError
	require.ErrorAs(t, err, &jsonErr)
	require.ErrorContains(t, err, `"num.sent"`)
}

func TestSendReliableOnFinishedTransaction(t *testing.T) {
	t.Parallel()
	f := setupSend(t)
	sig, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)
	sig.Connect("r", nop[orderPlaced])

	committed, err := f.pool.Begin(t.Context())
	require.NoError(t, err)
	require.NoError(t, committed.Commit(t.Context()))
	_, err = sig.SendReliable(t.Context(), committed, orderPlaced{})
	require.ErrorIs(t, err, signals.ErrTxDone)
	require.ErrorIs(t, err, pgx.ErrTxClosed)

	aborted, err := f.pool.Begin(t.Context())
	require.NoError(t, err)
	defer aborted.Rollback(t.Context()) //nolint:errcheck
	_, err = aborted.Exec(t.Context(), `SELECT 1/0`)
	require.Error(t, err)
	_, err = sig.SendReliable(t.Context(), aborted, orderPlaced{})
	require.ErrorIs(t, err, signals.ErrTxAborted)

	require.Empty(t, outboxRows(t, f.pool, f.schema))
}

func TestSendReliableWithoutMigrationSaysWhatToDo(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)
	reg := signals.MustNewRegistry(signals.RegistryConfig{Schema: testenv.Schema(t)})
	sig, err := signals.Register[orderPlaced](reg, "order.placed")
	require.NoError(t, err)
	sig.Connect("r", nop[orderPlaced])
	err = pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		_, err := sig.SendReliable(t.Context(), tx, orderPlaced{})
		return err
	})
	require.ErrorContains(t, err, "signals.Migrate")
}

func TestNamesAreValidatedAndUnique(t *testing.T) {
	t.Parallel()
	reg := signals.MustNewRegistry(signals.RegistryConfig{})
	for _, bad := range []string{"", "Order.Placed", "order..placed", ".order", "order.", "order placed", "1order", "order:placed", "order.9x"} {
		_, err := signals.Register[int](reg, bad)
		require.ErrorIs(t, err, signals.ErrInvalidName, "%q", bad)
	}
	sig, err := signals.Register[int](reg, "order.placed")
	require.NoError(t, err)
	_, err = signals.Register[string](reg, "order.placed")
	require.ErrorIs(t, err, signals.ErrDuplicateSignal)

	sig.Connect("email-receipt", nop[int])
	require.PanicsWithError(t, `signals: duplicate receiver name: signal "order.placed" already has a receiver "email-receipt"`, func() {
		sig.Connect("email-receipt", nop[int])
	})
	for _, bad := range []string{"", "Email", "email receipt", "-x", "a:b"} {
		require.Panics(t, func() { sig.Connect(bad, nop[int]) }, "%q", bad)
	}
	require.Panics(t, func() { sig.Connect("nil-func", nil) })
	require.Panics(t, func() { sig.Connect("bad-queue", nop[int], signals.Queue("no spaces")) })
	require.Panics(t, func() { sig.Connect("bad-retries", nop[int], signals.MaxRetries(-1)) })
	require.Panics(t, func() { sig.Connect("bad-timeout", nop[int], signals.Timeout(0)) })

	// Each registry is its own namespace.
	other := signals.MustNewRegistry(signals.RegistryConfig{})
	_, err = signals.Register[int](other, "order.placed")
	require.NoError(t, err)
}

func TestRegistryConfigIsValidated(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{`bad"schema`, "Upper", "has space", "1x", strings.Repeat("x", 64), "x; DROP TABLE y"} {
		_, err := signals.NewRegistry(signals.RegistryConfig{Schema: bad})
		require.ErrorIs(t, err, signals.ErrInvalidSchema, "%q", bad)
	}
	_, err := signals.NewRegistry(signals.RegistryConfig{MaxPayloadBytes: -1})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	reg, err := signals.NewRegistry(signals.RegistryConfig{})
	require.NoError(t, err)
	require.Equal(t, signals.DefaultRegistrySchema, reg.Schema())
}

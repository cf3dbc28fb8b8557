package otelsignals_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/otelsignals"
)

type order struct {
	ID string `json:"id"`
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// run runs each component until the test ends.
func run(t *testing.T, components ...func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range components {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c(ctx); err != nil {
				t.Errorf("component: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// TestPipeline follows one event through PostgreSQL and Redis: a request
// sends it, a Dispatcher enqueues it, a Worker runs its receivers, one of
// which sends another signal (a cascade) and one of which refuses for good.
func TestPipeline(t *testing.T) {
	t.Parallel()
	tm := newTelemetry(t)
	pool := testPool(t)
	queue := testQueue(t)
	reg, err := signals.NewRegistry(signals.RegistryConfig{
		Schema: testSchema(t), Queue: queue,
		Middleware: []signals.Middleware{otelsignals.New(otelsignals.Config{TracerProvider: tm.tp, MeterProvider: tm.mp})},
	})
	require.NoError(t, err)
	require.NoError(t, reg.Migrate(t.Context(), pool))
	placed := signals.Register[order](reg, "order.placed")
	receipt := signals.Register[order](reg, "receipt.sent")
	placed.Connect("email", func(ctx context.Context, e signals.Event[order]) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := receipt.SendReliable(ctx, tx, e.Payload)
			return err
		})
	})
	placed.Connect("refuse", func(context.Context, signals.Event[order]) error {
		return signals.Permanent(errors.New("no such customer"))
	})
	receipt.Connect("log", func(context.Context, signals.Event[order]) error { return nil })

	redisOpt := asynq.RedisClientOpt{Addr: redisAddr()}
	d, err := signals.NewDispatcher(reg, pool, redisOpt, signals.DispatcherConfig{Logger: quiet})
	require.NoError(t, err)
	w, err := signals.NewWorker(reg, pool, redisOpt, signals.WorkerConfig{Logger: quiet, ShutdownTimeout: time.Second})
	require.NoError(t, err)
	ledger, err := signals.NewLedger(reg, pool, redisOpt)
	require.NoError(t, err)
	gauges, err := otelsignals.ObserveStats(ledger, otelsignals.StatsConfig{MeterProvider: tm.mp})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, gauges.Unregister()) })
	run(t, d.Run, w.Run)

	ctx, handler := tm.tp.Tracer("test").Start(t.Context(), "HTTP handler")
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := placed.SendReliable(ctx, tx, order{ID: "o-1"})
		return err
	}))
	handler.End()

	require.Eventually(t, func() bool {
		return len(tm.ended("receive order.placed")) == 2 && len(tm.ended("receive receipt.sent")) == 1
	}, 30*time.Second, 10*time.Millisecond, "every receiver ran")
	require.Eventually(t, func() bool {
		st, err := ledger.Stats(t.Context())
		if err != nil {
			return false
		}
		dead, live := 0, 0
		for _, r := range st.Receivers {
			dead += r.Dead
			live += r.Pending + r.InFlight
		}
		return dead == 1 && live == 0
	}, 30*time.Second, 10*time.Millisecond, "the ledger holds the dead delivery alone")

	t.Run("OneTraceFromTheRequestToEveryReceiver", func(t *testing.T) {
		one := func(name string) sdktrace.ReadOnlySpan {
			spans := tm.ended(name)
			require.Len(t, spans, 1, name)
			return spans[0]
		}
		byReceiver := func(name string) map[string]sdktrace.ReadOnlySpan {
			out := map[string]sdktrace.ReadOnlySpan{}
			for _, s := range tm.ended(name) {
				out[attrs(s)["messaging.consumer.group.name"].AsString()] = s
			}
			return out
		}
		trace := handler.SpanContext().TraceID()
		for _, s := range tm.spans.Ended() {
			require.Equal(t, trace, s.SpanContext().TraceID(), "%s is in the request's trace", s.Name())
		}
		childOf := func(parent, child sdktrace.ReadOnlySpan) {
			t.Helper()
			require.Equal(t, parent.SpanContext().SpanID(), child.Parent().SpanID(), "%s is a child of %s", child.Name(), parent.Name())
		}

		send := one("send order.placed")
		require.Equal(t, handler.SpanContext().SpanID(), send.Parent().SpanID(), "the send is a child of the request")
		enqueues, receives := byReceiver("enqueue order.placed"), byReceiver("receive order.placed")
		require.Len(t, enqueues, 2)
		require.Len(t, receives, 2)
		for _, r := range []string{"email", "refuse"} {
			childOf(send, enqueues[r])
			childOf(send, receives[r])
			require.Equal(t, attrs(enqueues[r])["signals.task_id"], attrs(receives[r])["signals.task_id"], "one delivery, one task ID")
		}
		require.Equal(t, codes.Error, receives["refuse"].Status().Code)
		require.Equal(t, "permanent", attrs(receives["refuse"])["signals.dead_reason"].AsString())

		cascade := one("send receipt.sent")
		childOf(receives["email"], cascade)
		require.Equal(t, attrs(send)["signals.event_id"], attrs(cascade)["signals.causation_id"])
		childOf(cascade, one("enqueue receipt.sent"))
		childOf(cascade, one("receive receipt.sent"))
	})

	t.Run("MetricsCountEachDelivery", func(t *testing.T) {
		of := func(signal, receiver string) []attribute.KeyValue {
			return []attribute.KeyValue{attribute.String("signal", signal), attribute.String("receiver", receiver)}
		}
		email, refuse, log := of("order.placed", "email"), of("order.placed", "refuse"), of("receipt.sent", "log")
		for _, r := range [][]attribute.KeyValue{email, refuse, log} {
			require.EqualValues(t, 1, tm.sum(t, "signals.sent", r...))
			require.EqualValues(t, 1, tm.sum(t, "signals.enqueued", r...))
		}
		require.Zero(t, tm.sum(t, "signals.enqueue.duplicates"))
		require.Zero(t, tm.sum(t, "signals.enqueue.failed"))
		require.EqualValues(t, 1, tm.sum(t, "signals.receive.succeeded", email...))
		require.EqualValues(t, 1, tm.sum(t, "signals.receive.succeeded", log...))
		require.EqualValues(t, 1, tm.sum(t, "signals.receive.failed", refuse...))
		require.EqualValues(t, 1, tm.sum(t, "signals.receive.dead", append(refuse, attribute.String("reason", "permanent"))...))
		require.EqualValues(t, 2, tm.sum(t, "signals.receive.succeeded"))
		require.EqualValues(t, 1, tm.sum(t, "signals.receive.failed"))

		n, sum := tm.histogram(t, "signals.delivery.lag")
		require.EqualValues(t, 3, n)
		require.Greater(t, sum, 0.0)
		require.Less(t, sum, 30.0)
		n, _ = tm.histogram(t, "signals.receive.duration")
		require.EqualValues(t, 3, n)
	})

	t.Run("GaugesReadTheLedger", func(t *testing.T) {
		refuse := []attribute.KeyValue{attribute.String("signal", "order.placed"), attribute.String("receiver", "refuse")}
		dead, ok := gauge[int64](t, tm, "signals.dead_letters", refuse...)
		require.True(t, ok)
		require.EqualValues(t, 1, dead)
		pending, ok := gauge[int64](t, tm, "signals.backlog", append(refuse, attribute.String("state", "pending"))...)
		require.True(t, ok)
		require.Zero(t, pending)
		served, ok := gauge[int64](t, tm, "signals.queue.served", attribute.String("queue", queue))
		require.True(t, ok)
		require.EqualValues(t, 1, served, "the Worker serves the queue")
	})
}

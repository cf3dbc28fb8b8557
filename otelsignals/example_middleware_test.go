package otelsignals_test

import (
	"context"
	"fmt"
	"log"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/sync/errgroup"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/otelsignals"
)

// The middleware goes into the registry's config; the trace it records runs
// from the request that sends an event, through the Dispatcher's enqueue,
// to the receiver in the Worker.
func ExampleNew() {
	ctx := context.Background()
	// An application sets up its exporter here; the example keeps the spans
	// in memory to print them.
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(ctx) //nolint:errcheck

	pool, err := pgxpool.New(ctx, databaseURL())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	const schema, queue = "example_otelsignals", "example_otelsignals"
	const dropSchema = `DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`
	if _, err := pool.Exec(ctx, dropSchema); err != nil {
		log.Fatal(err)
	}
	defer pool.Exec(ctx, dropSchema) //nolint:errcheck
	defer deleteQueue(ctx, queue)    //nolint:errcheck

	reg, err := signals.NewRegistry(signals.RegistryConfig{
		Schema: schema, Queue: queue,
		Middleware: []signals.Middleware{otelsignals.New(otelsignals.Config{TracerProvider: tp})},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := reg.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	orderPlaced := signals.Register[order](reg, "order.placed")
	orderPlaced.Connect("email-receipt", func(context.Context, signals.Event[order]) error { return nil })

	redisOpt := asynq.RedisClientOpt{Addr: redisAddr()}
	dispatcher, _ := signals.NewDispatcher(reg, pool, redisOpt, signals.DispatcherConfig{Logger: quiet})
	worker, _ := signals.NewWorker(reg, pool, redisOpt, signals.WorkerConfig{Logger: quiet, ShutdownTimeout: time.Second})
	runCtx, stop := context.WithCancel(ctx)
	var g errgroup.Group
	g.Go(func() error { return dispatcher.Run(runCtx) })
	g.Go(func() error { return worker.Run(runCtx) })

	reqCtx, request := tp.Tracer("shop").Start(ctx, "POST /orders")
	err = pgx.BeginFunc(reqCtx, pool, func(tx pgx.Tx) error {
		_, err := orderPlaced.SendReliable(reqCtx, tx, order{ID: "o-1"})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	request.End()

	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if len(spans.Ended()) == 4 {
			break
		}
	}
	stop()
	if err := g.Wait(); err != nil {
		log.Fatal(err)
	}
	printTree(spans.Ended())
	// Output:
	// POST /orders
	//   send order.placed (producer)
	//     enqueue order.placed → email-receipt (client)
	//     receive order.placed → email-receipt (consumer)
}

// printTree prints spans indented under their parents, each level in the
// order the spans started.
func printTree(spans []sdktrace.ReadOnlySpan) {
	slices.SortFunc(spans, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
	var walk func(parent sdktrace.ReadOnlySpan, depth int)
	walk = func(parent sdktrace.ReadOnlySpan, depth int) {
		for _, s := range spans {
			if s.Parent().SpanID() != parent.SpanContext().SpanID() {
				continue
			}
			fmt.Printf("%s%s (%s)\n", strings.Repeat("  ", depth), s.Name(), s.SpanKind())
			walk(s, depth+1)
		}
	}
	for _, s := range spans {
		if !s.Parent().IsValid() {
			fmt.Println(s.Name())
			walk(s, 1)
		}
	}
}

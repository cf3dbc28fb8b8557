// Command shop is a small service built on dj-signals: an HTTP endpoint
// places orders, and two receivers react to each committed order, one
// storing a receipt email, one calling a warehouse webhook. It is a module
// of its own, so that the core keeps no dependency on OpenTelemetry.
//
//	cd examples/shop
//	go run .          # serve POST /orders and GET /metrics on 127.0.0.1:8080
//	go run . -demo    # narrate what the library guarantees, then exit
//
// DATABASE_URL and REDIS_ADDR select the servers (defaults: the local ones).
// The demo creates a database of its own on DATABASE_URL's server (so it
// needs the CREATEDB privilege there) and drops it when it ends.
//
// It is instrumented with otelsignals: GET /metrics serves the signals.*
// counters, histograms and ledger gauges in Prometheus's text format, and
// each POST /orders starts a trace that follows the order's event through
// the Dispatcher to both receivers. The demo records that trace in memory
// and prints it; when serving, spans go to the global tracer provider,
// which drops them until the program sets one with an exporter.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/examples/shop/orders"
	"github.com/dj-signals/signals/otelsignals"
)

// receivers are connected once per process, at init, as every binary of
// the shop that places orders must do; run gives them their dependencies
// before the worker starts.
var receivers = &orders.Receivers{}

func init() { receivers.Connect() }

func main() {
	demo := flag.Bool("demo", false, "run the narrated demo, then exit")
	addr := flag.String("addr", "127.0.0.1:8080", "address of the HTTP API")
	verbose := flag.Bool("v", false, "log each receiver run")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := slog.LevelWarn
	switch {
	case *verbose:
		level = slog.LevelInfo
	case *demo:
		level = slog.LevelError // the narrative explains the expected failures
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	if *demo {
		*addr = "127.0.0.1:0"
	}
	tel, err := newTelemetry(*demo) // the demo keeps its spans to print a trace
	if err != nil {
		fmt.Fprintln(os.Stderr, "shop: set up telemetry:", err)
		os.Exit(1)
	}
	// The shop's signals are signals.New ones, in DefaultRegistry: the
	// middleware goes there once per process, before the first send and
	// before run makes the Dispatcher and Worker.
	signals.DefaultRegistry.Use(otelsignals.New(otelsignals.Config{
		TracerProvider: tel.tracerProvider,
		MeterProvider:  tel.meterProvider,
	}))
	err = run(ctx, *addr, *demo, tel, os.Stdout, log)
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	err = errors.Join(err, tel.shutdown(shutdownCtx))
	done()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shop:", err)
		os.Exit(1)
	}
}

// run wires the shop: migrations, receivers, relay, worker, the warehouse
// webhook and the API, with tel's gauges, tracer and /metrics. With demo set
// it narrates the demo to out and returns; otherwise it serves until ctx is
// canceled.
func run(ctx context.Context, addr string, demo bool, tel *telemetry, out io.Writer, log *slog.Logger) (result error) {
	cfg, err := pgxpool.ParseConfig(getenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
	if err != nil {
		return fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	if demo {
		drop, err := useDemoDatabase(ctx, cfg)
		if err != nil {
			return err
		}
		defer func() { result = errors.Join(result, drop()) }() // after pool.Close
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("connect to PostgreSQL (set DATABASE_URL): %w", err)
	}
	repo := orders.NewRepository(pool)
	if err := signals.DefaultRegistry.Migrate(ctx, pool); err != nil {
		return err
	}
	if err := repo.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate shop tables: %w", err)
	}

	wh := newWarehouse()
	whListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	*receivers = orders.Receivers{
		Repo:         repo,
		WarehouseURL: "http://" + whListener.Addr().String() + "/shipments",
		HTTP:         &http.Client{Timeout: 5 * time.Second},
		Log:          log,
	}

	redis := asynq.RedisClientOpt{Addr: getenv("REDIS_ADDR", "127.0.0.1:6379")}
	dispatcher, err := signals.NewDispatcher(signals.DefaultRegistry, pool, redis, signals.DispatcherConfig{Logger: log})
	if err != nil {
		return err
	}
	ledger, err := signals.NewLedger(signals.DefaultRegistry, pool, redis)
	if err != nil {
		return err
	}
	gauges, err := otelsignals.ObserveStats(ledger, otelsignals.StatsConfig{MeterProvider: tel.meterProvider})
	if err != nil {
		return err
	}
	defer func() { _ = gauges.Unregister() }()
	worker, err := signals.NewWorker(signals.DefaultRegistry, pool, redis, signals.WorkerConfig{Logger: log})
	if err != nil {
		return err
	}
	apiListener, err := net.Listen("tcp", addr)
	if err != nil {
		_ = whListener.Close()
		return err
	}
	tracer := tel.tracerProvider.Tracer("github.com/dj-signals/signals/examples/shop")
	apiServer := &http.Server{Handler: api(orders.NewService(pool, repo), tracer, tel.metrics), ReadHeaderTimeout: 5 * time.Second}
	whServer := &http.Server{Handler: wh, ReadHeaderTimeout: 5 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	start := func(fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- err
				cancel()
			}
		}()
	}
	start(func() error { return dispatcher.Run(ctx) })
	start(func() error { return worker.Run(ctx) })
	start(func() error { return whServer.Serve(whListener) })
	start(func() error { return apiServer.Serve(apiListener) })

	if demo {
		result = narrate(ctx, out, "http://"+apiListener.Addr().String(), repo, wh, receivers, tel.spans)
	} else {
		fmt.Fprintf(out, "shop: POST http://%s/orders {\"customer\": \"ada@example.com\", \"cents\": 4200}\n", apiListener.Addr())
		fmt.Fprintf(out, "shop: GET http://%s/metrics\n", apiListener.Addr())
		<-ctx.Done()
	}
	cancel()
	shutdownCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	_ = apiServer.Shutdown(shutdownCtx)
	_ = whServer.Shutdown(shutdownCtx)
	wg.Wait()
	close(errs)
	for err := range errs {
		result = errors.Join(result, err)
	}
	return result
}

func getenv(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

// Command shop is a small service built on dj-signals: an HTTP endpoint
// places orders, and two receivers react to each committed order, one
// storing a receipt email, one calling a warehouse webhook.
//
//	go run ./examples/shop          # serve POST /orders on 127.0.0.1:8080
//	go run ./examples/shop -demo    # narrate what the library guarantees, then exit
//
// DATABASE_URL and REDIS_ADDR select the servers (defaults: the local ones).
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
	slog.SetDefault(log) // the receivers' registry logs through the default logger
	if *demo {
		*addr = "127.0.0.1:0"
	}
	if err := run(ctx, *addr, *demo, os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "shop:", err)
		os.Exit(1)
	}
}

// run wires the shop: migrations, receivers, relay, worker, the warehouse
// webhook and the API. With demo set it narrates the demo to out and
// returns; otherwise it serves until ctx is canceled.
func run(ctx context.Context, addr string, demo bool, out io.Writer, log *slog.Logger) error {
	pool, err := pgxpool.New(ctx, getenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("connect to PostgreSQL (set DATABASE_URL): %w", err)
	}
	repo := orders.NewRepository(pool)
	if err := signals.Migrate(ctx, pool); err != nil {
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
	worker, err := signals.NewWorker(signals.DefaultRegistry, pool, redis, signals.WorkerConfig{Logger: log})
	if err != nil {
		return err
	}
	apiListener, err := net.Listen("tcp", addr)
	if err != nil {
		_ = whListener.Close()
		return err
	}
	apiServer := &http.Server{Handler: api(orders.NewService(pool, repo)), ReadHeaderTimeout: 5 * time.Second}
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

	var result error
	if demo {
		result = narrate(ctx, out, "http://"+apiListener.Addr().String(), repo, wh, receivers)
	} else {
		fmt.Fprintf(out, "shop: POST http://%s/orders {\"customer\": \"ada@example.com\", \"cents\": 4200}\n", apiListener.Addr())
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

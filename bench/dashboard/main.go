// Command dashboard measures the dashboard's pages on a large ledger: it
// loads a fresh schema with -pending pending rows (default 1,000,000) and
// -dead dead letters (default 100,000), serves the dashboard over HTTP on
// loopback, fetches each page -runs times, and prints the median and the
// slowest time per page, then drops the schema.
//
//	cd bench && go run ./dashboard
//
// The times are the server's, measured by the client on loopback: the
// time from the request to the last byte of the page. The ledger's tables
// are vacuumed and analyzed after the load, as autovacuum would do on a
// production server (this machine's PostgreSQL runs with autovacuum off).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/dashboard"
	"github.com/dj-signals/signals/internal/store"
)

func main() {
	dbURL := flag.String("database-url", envOr("SIGNALS_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"), "PostgreSQL")
	redisAddr := flag.String("redis-addr", envOr("SIGNALS_TEST_REDIS_ADDR", "127.0.0.1:6379"), "Redis")
	pending := flag.Int("pending", 1_000_000, "pending rows to load")
	dead := flag.Int("dead", 100_000, "dead letters to load")
	runs := flag.Int("runs", 5, "fetches of each page")
	flag.BoolVar(&keep, "keep", false, "keep the schema, to look into it, rather than drop it")
	flag.Parse()
	if err := run(context.Background(), *dbURL, *redisAddr, *pending, *dead, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench dashboard:", err)
		os.Exit(1)
	}
}

// keep says not to drop the schema at the end.
var keep bool

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// The ledger's shape: signals × receivers, as a mid-sized application.
var (
	signalNames = []string{"order.placed", "order.shipped", "user.signed_up", "invoice.issued", "payment.failed"}
	// deadSignal is the signal of the dead letters, so that loading them
	// reads back none of the pending rows.
	deadSignal    = "payment.refunded"
	receiverNames = []string{"email", "webhook", "analytics", "search-index"}
	deadErrors    = []string{"webhook answered 503", "timeout after 30s", "card declined", "<b>upstream</b> said no"}
)

func run(ctx context.Context, dbURL, redisAddr string, pending, dead, runs int) error {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	schema := "bench_dashboard_" + strings.ToLower(ulid.Make().String())
	defer func() {
		if keep {
			fmt.Fprintf(os.Stderr, "kept schema %s\n", schema)
			return
		}
		_, _ = pool.Exec(context.Background(), `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
	}()
	queue := "bench-dashboard-" + strings.ToLower(ulid.Make().String())
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: schema, Queue: queue})
	if err != nil {
		return err
	}
	if err := reg.Migrate(ctx, pool); err != nil {
		return err
	}
	for _, s := range append(slices.Clone(signalNames), deadSignal) {
		sig := signals.Register[map[string]any](reg, s)
		for _, r := range receiverNames {
			sig.Connect(r, func(context.Context, signals.Event[map[string]any]) error { return nil })
		}
	}
	q, err := store.New(schema)
	if err != nil {
		return err
	}

	start := time.Now()
	fmt.Fprintf(os.Stderr, "loading %d pending rows and %d dead letters into %s...\n", pending, dead, schema)
	if err := load(ctx, pool, q, queue, pending, signalNames, "pending"); err != nil {
		return fmt.Errorf("load pending rows: %w", err)
	}
	if err := bury(ctx, pool, q, queue, dead); err != nil {
		return fmt.Errorf("load dead letters: %w", err)
	}
	for _, table := range []string{"outbox", "dead"} {
		if _, err := pool.Exec(ctx, `VACUUM ANALYZE `+pgx.Identifier{schema, table}.Sanitize()); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "loaded in %v\n", time.Since(start).Round(time.Second))

	ledger, err := signals.NewLedger(reg, pool, asynq.RedisClientOpt{Addr: redisAddr})
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := dashboard.New(ledger, dashboard.Config{Logger: quiet})
	if err != nil {
		return err
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	someEvent, err := ledger.DeadLetters(ctx, signals.DeadFilter{Limit: 1, Signal: deadSignal})
	if err != nil || len(someEvent) == 0 {
		return fmt.Errorf("find an event: %v", err)
	}
	deepPage, err := ledger.DeadLetters(ctx, signals.DeadFilter{Limit: dead / 2})
	if err != nil {
		return err
	}
	middle := deepPage[len(deepPage)-1].Cursor()

	fmt.Printf("Dashboard pages on a ledger of %d pending rows and %d dead letters (%d signals × %d receivers), %d fetches each:\n\n",
		pending, dead, len(signalNames)+1, len(receiverNames), runs)
	fmt.Println("| page | median | slowest |")
	fmt.Println("|---|---|---|")
	row := func(name string, times []time.Duration) {
		slices.Sort(times)
		fmt.Printf("| %s | %s | %s |\n", name, ms(times[len(times)/2]), ms(times[len(times)-1]))
	}

	// The overview shows a snapshot of Ledger.Stats, shared while it is
	// younger than StatsMaxAge: measured apart, a cold page (a handler
	// with no snapshot yet), and a warm one.
	stats := make([]time.Duration, runs)
	for i := range stats {
		t0 := time.Now()
		if _, err := ledger.Stats(ctx); err != nil {
			return err
		}
		stats[i] = time.Since(t0)
	}
	row("Ledger.Stats, the overview's snapshot (a pass over the outbox and the dead letters)", stats)
	cold := make([]time.Duration, runs)
	counting := 0
	for i := range cold {
		h, err := dashboard.New(ledger, dashboard.Config{Logger: quiet})
		if err != nil {
			return err
		}
		srv := httptest.NewServer(h)
		t0 := time.Now()
		_, body, err := get(srv.URL + "/")
		cold[i] = time.Since(t0)
		if strings.Contains(body, `id="counting"`) {
			counting++
		}
		// Let the snapshot the page started finish before the next run.
		for strings.Contains(body, `id="counting"`) && err == nil {
			time.Sleep(100 * time.Millisecond)
			_, body, err = get(srv.URL + "/")
		}
		srv.Close()
		if err != nil {
			return err
		}
	}
	row(fmt.Sprintf("overview, first load (no snapshot yet: %d of %d answered \"counting\" and reloaded)", counting, runs), cold)

	for _, p := range []struct{ name, path string }{
		{"overview, snapshot younger than 5 s", "/"},
		{"dead letters, first page of 50, with the count of all", "/dead"},
		{"dead letters, a page halfway, by cursor", "/dead?after=" + middle},
		{"dead letters of one signal and receiver", "/dead?signal=" + deadSignal + "&receiver=webhook"},
		{"dead letters whose error contains a text", "/dead?error=timeout"},
		{"dead letters of one reason, dead for at least 1s", "/dead?reason=permanent&older_than=1s"},
		{"an event, with its cascade", "/event?id=" + someEvent[0].EventID.String()},
	} {
		if p.path == "/" {
			// Warm the snapshot.
			for {
				_, body, err := get(srv.URL + "/")
				if err != nil {
					return err
				}
				if !strings.Contains(body, `id="counting"`) && !strings.Contains(body, "a newer snapshot is being computed") {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		times := make([]time.Duration, runs)
		for i := range times {
			t0 := time.Now()
			status, body, err := get(srv.URL + p.path)
			times[i] = time.Since(t0)
			if err != nil || status != http.StatusOK {
				return fmt.Errorf("%s: status %d, %v: %s", p.path, status, err, errorOf(body))
			}
		}
		row(p.name, times)
	}
	return nil
}

// load writes n pending rows, one per event and receiver, round-robin over
// the signals and receivers, with COPY.
func load(ctx context.Context, pool *pgxpool.Pool, q *store.Queries, queue string, n int, signalNames []string, note string) error {
	const chunk = 100_000
	for done := 0; done < n; done += chunk {
		rows := func(yield func(store.Row) bool) {
			for i := done; i < min(done+chunk, n); i++ {
				e := ulid.Make()
				row := store.Row{
					ID: ulid.Make(), EventID: e, CorrelationID: e,
					Signal: signalNames[i%len(signalNames)], Receiver: receiverNames[(i/len(signalNames))%len(receiverNames)],
					Queue: queue, MaxRetry: 25, TimeoutMS: 30_000,
					Payload: fmt.Appendf(nil, `{"seq":%d,"note":%q}`, i, note),
				}
				if !yield(row) {
					return
				}
			}
		}
		if _, err := q.Load(ctx, pool, iter.Seq[store.Row](rows)); err != nil {
			return err
		}
	}
	return nil
}

// bury loads n rows of deadSignal and moves them to the
// dead letters in batches, with a mix of reasons and errors.
func bury(ctx context.Context, pool *pgxpool.Pool, q *store.Queries, queue string, n int) error {
	kit, err := store.NewKitQueries(q.Schema())
	if err != nil {
		return err
	}
	const batch = 5_000
	for done := 0; done < n; done += batch {
		size := min(batch, n-done)
		if err := load(ctx, pool, q, queue, size, []string{deadSignal}, "dead"); err != nil {
			return err
		}
		rows, err := kit.ListPending(ctx, pool, []string{deadSignal}, [16]byte{}, size)
		if err != nil {
			return err
		}
		burials := make([]store.Burial, len(rows))
		for i, r := range rows {
			reason := store.ReasonRetriesExhausted
			if i%3 == 0 {
				reason = store.ReasonPermanent
			}
			burials[i] = store.Burial{Ref: r.Ref(), Reason: reason, Error: deadErrors[i%len(deadErrors)], Attempts: 26}
		}
		if _, err := q.Bury(ctx, pool, burials); err != nil {
			return err
		}
	}
	return nil
}

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

var errorText = regexp.MustCompile(`(?s)<pre class="error" id="error">(.*?)</pre>`)

func errorOf(page string) string {
	if m := errorText.FindStringSubmatch(page); m != nil {
		return m[1]
	}
	return page
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }

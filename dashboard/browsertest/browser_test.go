package browsertest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/dashboard"
	"github.com/dj-signals/signals/internal/ledgerview"
	"github.com/dj-signals/signals/internal/testenv"
)

// screenshots, when set, makes the test write its screenshots of the three
// pages into the repository's docs/ directory, which the README shows.
var screenshots = flag.Bool("screenshots", false, "write the pages' screenshots to ../../docs")

// eventually bounds a wait for the pipeline or the browser.
const eventually = 30 * time.Second

// chromium returns the path of the browser to drive, or fails the test
// with how to install one.
func chromium(t *testing.T) string {
	t.Helper()
	if path := os.Getenv("SIGNALS_TEST_CHROMIUM"); path != "" {
		return path
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	t.Fatal("the dashboard's browser test needs headless Chromium, and none was found on PATH: " +
		"install it (Debian/Ubuntu: sudo apt-get install chromium; .ci/run does it when missing), " +
		"or set SIGNALS_TEST_CHROMIUM to a Chromium or Chrome binary")
	return ""
}

// browser starts a headless Chromium of the test's own, with a fresh
// profile and no traffic of its own to Google's hosts, and returns a tab's
// context. Any JavaScript dialog (an alert an injected script opened) is
// counted in dialogs, and closed so that the page goes on.
func browser(t *testing.T) (ctx context.Context, dialogs *atomic.Int32) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
	})
	dialogs = &atomic.Int32{}
	events := chromedp.Events(ctx, page.JavascriptDialogOpening)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")), "start Chromium")
	go func() {
		for _, err := range events {
			if err != nil {
				return
			}
			dialogs.Add(1)
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return ctx, dialogs
}

// order is the payload of order.placed and invoice.requested.
type order struct {
	ID   string `json:"id"`
	Note string `json:"note,omitempty"`
}

// shop is the pipeline under the dashboard: order.placed, whose charge
// fails for good while failing, with the error in failure; an order noted
// "cascade" sends invoice.requested, whose pdf always fails; and
// note.left, a string payload whose receiver fails with an error of HTML.
type shop struct {
	pool     *pgxpool.Pool
	ledger   *signals.Ledger
	placed   *signals.Signal[order]
	invoiced *signals.Signal[order]
	notes    *signals.Signal[string]
	failing  atomic.Bool
	failure  atomic.Value // string
}

func newShop(t *testing.T) *shop {
	t.Helper()
	s := &shop{pool: testenv.Pool(t)}
	schema, queue := testenv.Schema(t), testenv.Queue(t)
	redisOpt := asynq.RedisClientOpt{Addr: testenv.RedisAddr()}
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: schema, Queue: queue, Middleware: []signals.Middleware{tracing}})
	require.NoError(t, err)
	require.NoError(t, reg.Migrate(t.Context(), s.pool))
	s.failing.Store(true)
	s.failure.Store("card declined")

	s.placed = signals.Register[order](reg, "order.placed")
	s.invoiced = signals.Register[order](reg, "invoice.requested")
	s.notes = signals.Register[string](reg, "note.left")
	s.placed.Connect("charge", func(context.Context, signals.Event[order]) error {
		if s.failing.Load() {
			return signals.Permanent(errors.New(s.failure.Load().(string)))
		}
		return nil
	})
	s.placed.Connect("email-receipt", func(context.Context, signals.Event[order]) error { return nil })
	s.placed.Connect("invoice", func(ctx context.Context, e signals.Event[order]) error {
		if e.Payload.Note != "cascade" {
			return nil
		}
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			_, err := s.invoiced.SendReliable(ctx, tx, e.Payload)
			return err
		})
	})
	s.invoiced.Connect("render-pdf", func(context.Context, signals.Event[order]) error {
		return signals.Permanent(errors.New("template invoice.tmpl: no such file"))
	})
	s.notes.Connect("store-note", func(context.Context, signals.Event[string]) error {
		return signals.Permanent(errors.New(`renderer said: <img src=x onerror=alert(2)><b>bold</b>`))
	})
	s.ledger, err = signals.NewLedger(reg, s.pool, redisOpt)
	require.NoError(t, err)

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := signals.NewDispatcher(reg, s.pool, redisOpt, signals.DispatcherConfig{Logger: quiet})
	require.NoError(t, err)
	w, err := signals.NewWorker(reg, s.pool, redisOpt, signals.WorkerConfig{ShutdownTimeout: 2 * time.Second, Logger: quiet})
	require.NoError(t, err)
	testenv.Run(t, d.Run)
	testenv.Run(t, w.Run)
	return s
}

// tracing sets a trace context on every event, as a tracing middleware
// does, for the event page's trace link.
var tracing = signals.Middleware{Send: func(ctx context.Context, s *signals.SendInfo, next func(context.Context) error) error {
	if s.Headers == nil {
		s.Headers = map[string]string{}
	}
	s.Headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	return next(ctx)
}}

func send[T any](t *testing.T, s *shop, sig *signals.Signal[T], payload T) ulid.ULID {
	t.Helper()
	var id ulid.ULID
	require.NoError(t, pgx.BeginFunc(t.Context(), s.pool, func(tx pgx.Tx) (err error) {
		id, err = sig.SendReliable(t.Context(), tx, payload)
		return err
	}))
	return id
}

func (s *shop) countDead(t *testing.T, f signals.DeadFilter) int {
	t.Helper()
	n, err := ledgerview.New(s.ledger).CountDead(t.Context(), f)
	require.NoError(t, err)
	return n
}

// text reads the text of the element sel selects.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	require.NoError(t, err, "read %s", sel)
	return s
}

// count counts the elements that the CSS selector sel selects.
func count(t *testing.T, ctx context.Context, sel string) int {
	t.Helper()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
	require.NoError(t, err)
	return n
}

// shoot saves a screenshot as docs/name when the test runs with
// -screenshots: of the whole page, or of the window (1280 pixels wide) if
// the page is longer.
func shoot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	shot := chromedp.FullScreenshot(100)
	if height, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollHeight`)); err == nil && height > 1200 {
		shot = chromedp.CaptureScreenshot()
	}
	png, err := chromedp.Run(ctx, shot)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(png), "\x89PNG"), "a PNG")
	if *screenshots {
		require.NoError(t, os.WriteFile(filepath.Join("..", "..", "docs", name), png, 0o644))
	}
}

func TestDashboardInABrowser(t *testing.T) {
	t.Parallel()
	ctx, dialogs := browser(t)
	s := newShop(t)

	// 50 orders whose charge is declined, 5 whose gateway timed out, an
	// order that starts a cascade, and a note whose payload is a script.
	for i := range 50 {
		send(t, s, s.placed, order{ID: fmt.Sprintf("o-%02d", i)})
	}
	testenv.Eventually(t, eventually, func() bool { return s.countDead(t, signals.DeadFilter{}) == 50 }, "50 charges die")
	s.failure.Store("gateway timeout after 30s")
	for i := range 5 {
		send(t, s, s.placed, order{ID: fmt.Sprintf("g-%d", i)})
	}
	cascade := send(t, s, s.placed, order{ID: "c-1", Note: "cascade"})
	note := send(t, s, s.notes, "<script>alert(1)</script>")
	testenv.Eventually(t, eventually, func() bool { return s.countDead(t, signals.DeadFilter{}) == 58 }, "58 letters in all")

	h, err := dashboard.New(s.ledger, dashboard.Config{TraceURL: "https://traces.example.com/trace/{trace_id}", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/ops/signals/", http.StripPrefix("/ops/signals", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	base := srv.URL + "/ops/signals/"

	t.Run("the overview", func(t *testing.T) {
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("receivers"))))
		receivers := text(t, ctx, "#receivers")
		require.Contains(t, receivers, "order.placed")
		require.Contains(t, receivers, "render-pdf")
		require.Contains(t, text(t, ctx, "#problems"), "order.placed → charge: 56 dead letters")
		shoot(t, ctx, "dashboard-overview.png")
	})

	t.Run("filter the dead letters and requeue all 50 that match", func(t *testing.T) {
		_, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`#receivers a.dead[href*="receiver=charge"]`)))
		require.NoError(t, err)
		require.Contains(t, text(t, ctx, "#matching"), "56 match the filter")
		_, err = chromedp.RunResponse(ctx,
			chromedp.SetValue(chromedp.CSS(`#filter input[name="error"]`), "declined"),
			chromedp.SetValue(chromedp.CSS(`#filter select[name="reason"]`), "permanent"),
			chromedp.Click(chromedp.CSS(`#filter button[type="submit"]`)),
		)
		require.NoError(t, err)
		require.Equal(t, "50 match the filter", text(t, ctx, "#matching"))
		require.Equal(t, 50, count(t, ctx, `#dead-letters input[name="id"]`), "a page holds 50")
		require.Zero(t, count(t, ctx, "#next-page"))

		// One box selects the page; another, everything that matches.
		require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("select-page"))))
		require.Equal(t, 50, count(t, ctx, `#dead-letters input[name="id"]:checked`))
		shoot(t, ctx, "dashboard-dead-letters.png")
		require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("select-page")), chromedp.Click(chromedp.ID("select-all"))))
		_, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("requeue")))
		require.NoError(t, err)
		require.Equal(t, "Requeue 50 dead letters?", text(t, ctx, "h1"))
		require.Contains(t, text(t, ctx, "#confirm-text"), "error=declined")

		s.failing.Store(false) // the cause is fixed
		_, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("confirm-button")))
		require.NoError(t, err)
		require.Contains(t, text(t, ctx, "#done"), "Requeued 50 dead letters")
		require.Equal(t, "0 match the filter", text(t, ctx, "#matching"))

		// Delivered: gone from the ledger, and from the overview.
		testenv.Eventually(t, eventually, func() bool {
			st, err := s.ledger.Stats(t.Context())
			require.NoError(t, err)
			for _, r := range st.Receivers {
				if r.Receiver == "charge" {
					return r.Pending == 0 && r.InFlight == 0 && r.Dead == 6
				}
			}
			return false
		}, "the 50 requeued charges are delivered")
		// The overview shows a snapshot up to StatsMaxAge (5s) old: reload
		// until it is the new one.
		testenv.Eventually(t, eventually, func() bool {
			require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("receivers"))))
			return strings.Contains(text(t, ctx, "#problems"), "order.placed → charge: 6 dead letters")
		}, "the overview shows 6 dead charges left")
	})

	t.Run("an event and its cascade", func(t *testing.T) {
		_, err := chromedp.RunResponse(ctx,
			chromedp.SetValue(chromedp.CSS(`header input[name="id"]`), cascade.String()),
			chromedp.Click(chromedp.CSS(`header button[type="submit"]`)),
		)
		require.NoError(t, err)
		require.Equal(t, cascade.String(), text(t, ctx, "#event-id"))
		require.Contains(t, text(t, ctx, "#deliveries"), "gateway timeout after 30s")
		require.Contains(t, text(t, ctx, "#caused"), "invoice.requested")

		_, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("#caused a")))
		require.NoError(t, err)
		require.Contains(t, text(t, ctx, "#event-signal"), "invoice.requested")
		require.Equal(t, cascade.String(), text(t, ctx, "#caused-by"))
		tree := text(t, ctx, "#cascade")
		require.Less(t, strings.Index(tree, "order.placed"), strings.Index(tree, "invoice.requested"), tree)
		require.Contains(t, tree, "this event")
		href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("trace-link").href`))
		require.NoError(t, err)
		require.Equal(t, "https://traces.example.com/trace/4bf92f3577b34da6a3ce929d0e0e4736", href)
		shoot(t, ctx, "dashboard-event.png")
	})

	t.Run("a script payload and an HTML error render inert", func(t *testing.T) {
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"event?id="+note.String()), chromedp.WaitVisible(chromedp.ID("payload"))))
		require.Equal(t, `"<script>alert(1)</script>"`, text(t, ctx, "#payload"), "the payload reads as text")
		require.Contains(t, text(t, ctx, "#deliveries"), "renderer said: <img src=x onerror=alert(2)><b>bold</b>")
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"dead?receiver=store-note"), chromedp.WaitVisible(chromedp.ID("dead-letters"))))
		require.Contains(t, text(t, ctx, "#dead-letters"), "<img src=x onerror=alert(2)>")
		require.Zero(t, count(t, ctx, "main script, main img, main b"), "no element came from the ledger's texts")
		require.Zero(t, dialogs.Load(), "no script ran")
	})
}

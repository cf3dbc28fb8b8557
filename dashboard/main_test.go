package dashboard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/dashboard"
	"github.com/dj-signals/signals/internal/ledgerview"
	"github.com/dj-signals/signals/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The package's tests share one fixture: a migrated schema and an asynq
// queue of the test's own, a signal whose receiver fails for good while
// told to, a relay and a worker to make dead letters, and the dashboard
// served over HTTP to a client that keeps cookies, as a browser does.

// order is the payload the tests send.
type order struct {
	ID   string `json:"id"`
	Note string `json:"note,omitempty"`
}

type testBundle struct {
	pool   *pgxpool.Pool
	schema string
	reg    *signals.Registry
	ledger *signals.Ledger
	placed *signals.Signal[order] // receivers charge, email, invoice
	// invoiced is sent by invoice for an order noted "cascade"; its
	// receiver pdf fails for good while failing.
	invoiced *signals.Signal[order]
	failing  atomic.Bool // the receiver "charge" fails for good while true
	// failure is the error it fails with.
	failure atomic.Value
	server  *httptest.Server
	client  *http.Client
}

// eventually bounds a wait for work the test set off.
const eventually = 20 * time.Second

// setup serves the dashboard with cfg, on a relay and a worker running
// until the test ends.
func setup(t *testing.T, cfg dashboard.Config) *testBundle {
	t.Helper()
	b := &testBundle{pool: testenv.Pool(t)}
	schema, queue := testenv.Schema(t), testenv.Queue(t)
	b.schema = schema
	redisOpt := asynq.RedisClientOpt{Addr: testenv.RedisAddr()}
	var err error
	b.reg, err = signals.NewRegistry(signals.RegistryConfig{Schema: schema, Queue: queue, Middleware: []signals.Middleware{tracing}})
	require.NoError(t, err)
	require.NoError(t, b.reg.Migrate(t.Context(), b.pool))
	b.failing.Store(true)
	b.failure.Store("card declined")
	b.placed = signals.Register[order](b.reg, "order.placed")
	b.placed.Connect("charge", func(context.Context, signals.Event[order]) error {
		if b.failing.Load() {
			return signals.Permanent(errors.New(b.failure.Load().(string)))
		}
		return nil
	})
	b.placed.Connect("email", func(context.Context, signals.Event[order]) error { return nil })
	// An order noted "cascade" makes its invoice, whose PDF fails for good:
	// a cascade of two events, each with a dead letter while failing.
	b.invoiced = signals.Register[order](b.reg, "invoice.requested")
	b.placed.Connect("invoice", func(ctx context.Context, e signals.Event[order]) error {
		if e.Payload.Note != "cascade" {
			return nil
		}
		return pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
			_, err := b.invoiced.SendReliable(ctx, tx, e.Payload)
			return err
		})
	})
	b.invoiced.Connect("pdf", func(context.Context, signals.Event[order]) error {
		if b.failing.Load() {
			return signals.Permanent(errors.New("no template"))
		}
		return nil
	})
	b.ledger, err = signals.NewLedger(b.reg, b.pool, redisOpt)
	require.NoError(t, err)

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := signals.NewDispatcher(b.reg, b.pool, redisOpt, signals.DispatcherConfig{Logger: quiet})
	require.NoError(t, err)
	w, err := signals.NewWorker(b.reg, b.pool, redisOpt, signals.WorkerConfig{ShutdownTimeout: 2 * time.Second, Logger: quiet})
	require.NoError(t, err)
	testenv.Run(t, d.Run)
	testenv.Run(t, w.Run)

	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	h, err := dashboard.New(b.ledger, cfg)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/ops/signals/", http.StripPrefix("/ops/signals", h))
	b.server = httptest.NewServer(mux)
	t.Cleanup(b.server.Close)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	b.client = &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(b.client.CloseIdleConnections)
	return b
}

// traceParent is the trace context every test event carries.
const traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// tracing sets traceParent on every event sent, as a tracing middleware
// does.
var tracing = signals.Middleware{Send: func(ctx context.Context, s *signals.SendInfo, next func(context.Context) error) error {
	if s.Headers == nil {
		s.Headers = map[string]string{}
	}
	s.Headers["traceparent"] = traceParent
	return next(ctx)
}}

// send commits n orders, each in its own transaction, and returns their
// event IDs.
func (b *testBundle) send(t *testing.T, n int, note string) []ulid.ULID {
	t.Helper()
	ids := make([]ulid.ULID, n)
	for i := range ids {
		require.NoError(t, pgx.BeginFunc(t.Context(), b.pool, func(tx pgx.Tx) (err error) {
			ids[i], err = b.placed.SendReliable(t.Context(), tx, order{ID: fmt.Sprintf("o-%d", i), Note: note})
			return err
		}))
	}
	return ids
}

// deadLetters sends n orders whose charge fails for good, and waits for
// their dead letters.
func (b *testBundle) deadLetters(t *testing.T, n int, note string) []ulid.ULID {
	t.Helper()
	before := b.countDead(t)
	ids := b.send(t, n, note)
	testenv.Eventually(t, eventually, func() bool { return b.countDead(t) == before+n }, "%d dead letters expected", before+n)
	return ids
}

func (b *testBundle) countDead(t *testing.T) int {
	t.Helper()
	n, err := ledgerview.New(b.ledger).CountDead(t.Context(), signals.DeadFilter{})
	require.NoError(t, err)
	return n
}

// url is the dashboard's page at path, relative to where it is mounted.
func (b *testBundle) url(path string) string { return b.server.URL + "/ops/signals/" + path }

// get fetches a page and returns its status and body.
func (b *testBundle) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := b.client.Get(b.url(path))
	require.NoError(t, err)
	return resp.StatusCode, body(t, resp)
}

// post submits a form and returns the response, its body read.
func (b *testBundle) post(t *testing.T, path string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := b.client.PostForm(b.url(path), form)
	require.NoError(t, err)
	return resp, body(t, resp)
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(data)
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf loads the dead letters page and returns its forms' token.
func (b *testBundle) csrf(t *testing.T) string {
	t.Helper()
	status, page := b.get(t, "dead")
	require.Equal(t, http.StatusOK, status, page)
	m := csrfInput.FindStringSubmatch(page)
	require.NotNil(t, m, page)
	return m[1]
}

// rowsOf counts the rows of the table with the given id in page.
func rowsOf(page, table string) int {
	start := strings.Index(page, `<table id="`+table+`"`)
	if start < 0 {
		return -1
	}
	end := strings.Index(page[start:], "</table>")
	tbody := page[start : start+end]
	if i := strings.Index(tbody, "<tbody>"); i >= 0 {
		tbody = tbody[i:]
	}
	if i := strings.Index(tbody, "</tbody>"); i >= 0 {
		tbody = tbody[:i]
	}
	return strings.Count(tbody, "<tr")
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// binary is the signals command, built once by TestMain and run by every
// test as a user would.
var binary string

// buildFlags are go build's flags for the binary; race_test.go adds -race.
var buildFlags []string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "signals-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "signals")
	build := exec.Command("go", append(append([]string{"build"}, buildFlags...), "-o", binary, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	code := 1
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the signals command:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// commandTimeout bounds one run of the binary.
const commandTimeout = time.Minute

// eventually bounds a wait for work the test set off.
const eventually = 20 * time.Second

// result is what one run of the binary printed, and its exit code.
type result struct {
	stdout, stderr string
	code           int
}

// testBundle is one test's world: a migrated schema of its own with a registry
// on it, an asynq queue of its own, and a pool.
type testBundle struct {
	schema, queue string
	pool          *pgxpool.Pool
	reg           *signals.Registry
	redis         asynq.RedisClientOpt
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	b := &testBundle{
		schema: testenv.Schema(t),
		queue:  testenv.Queue(t),
		pool:   testenv.Pool(t),
		redis:  asynq.RedisClientOpt{Addr: testenv.RedisAddr()},
	}
	var err error
	b.reg, err = signals.NewRegistry(signals.RegistryConfig{Schema: b.schema})
	require.NoError(t, err)
	require.NoError(t, b.reg.Migrate(t.Context(), b.pool))
	return b
}

// signals runs the binary with args on the bundle's schema.
func (b *testBundle) signals(t *testing.T, args ...string) result {
	t.Helper()
	return runSignals(t, serverEnv(), append(args, "--schema", b.schema)...)
}

// serverEnv points the binary at the test servers, as an operator's
// environment would.
func serverEnv() []string {
	return []string{"DATABASE_URL=" + testenv.DatabaseURL(), "REDIS_ADDR=" + testenv.RedisAddr()}
}

// baseEnv is the binary's environment before serverEnv: nothing of the
// test process's but PATH, and no second-long sleep at exit in a
// race-checked binary (a race still exits with code 66 and a report).
func baseEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "GORACE=atexit_sleep_ms=0"}
}

// runSignals runs the binary with args in baseEnv plus env.
func runSignals(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(baseEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run signals %s: %v", strings.Join(args, " "), err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// requireCode fails with the command's output unless it exited with code.
func requireCode(t *testing.T, code int, r result) {
	t.Helper()
	require.Equal(t, code, r.code, "exit code\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestUsage(t *testing.T) {
	t.Parallel()

	t.Run("help lists the commands and the exit codes", func(t *testing.T) {
		t.Parallel()
		r := runSignals(t, nil, "-h")
		requireCode(t, exitOK, r)
		require.Equal(t, usage, r.stdout)
		for _, want := range []string{"signals status", "signals dead list", "signals migrate [--sql]", "signals relay", "3  could not check"} {
			require.Contains(t, r.stdout, want)
		}
	})

	t.Run("no command is a usage error", func(t *testing.T) {
		t.Parallel()
		r := runSignals(t, nil)
		requireCode(t, exitUsage, r)
		require.Contains(t, r.stderr, "Usage:")
	})

	t.Run("a mistyped command or subcommand gets a suggestion", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"stauts"}, "signals: unknown command \"stauts\"; did you mean status?\nrun 'signals -h' for the list\n"},
			{[]string{"deda", "list"}, "signals: unknown command \"deda\"; did you mean dead?\nrun 'signals -h' for the list\n"},
			{[]string{"frobnicate"}, "signals: unknown command \"frobnicate\"\nrun 'signals -h' for the list\n"},
			{[]string{"dead", "lsit"}, "signals dead: unknown subcommand \"lsit\"; did you mean list?\nrun 'signals dead -h' for help\n"},
			{[]string{"dead", "purge"}, "signals dead: unknown subcommand \"purge\": use list, show, requeue or discard\nrun 'signals dead -h' for help\n"},
			{[]string{"inbox", "prnue"}, "signals inbox: unknown subcommand \"prnue\"; did you mean prune?\nrun 'signals inbox -h' for help\n"},
		} {
			r := runSignals(t, serverEnv(), tc.args...)
			requireCode(t, exitUsage, r)
			require.Equal(t, tc.want, r.stderr, "signals %s", strings.Join(tc.args, " "))
		}
	})

	t.Run("a command's help shows its flags and the exit codes", func(t *testing.T) {
		t.Parallel()
		r := runSignals(t, nil, "status", "-h")
		requireCode(t, exitOK, r)
		require.Contains(t, r.stdout, "\n  --max-pending-age D\n")
		require.Contains(t, r.stdout, "(default 1m)")
		require.Contains(t, r.stdout, "Exit codes")
		require.Empty(t, r.stderr)
		require.Equal(t, r, runSignals(t, nil, "help", "status"), "signals help status is signals status -h")
	})

	t.Run("without a database URL it says how to give one", func(t *testing.T) {
		t.Parallel()
		r := runSignals(t, nil, "status")
		requireCode(t, exitUsage, r)
		require.Contains(t, r.stderr, "set --database-url or DATABASE_URL")
	})

	t.Run("go doc shows the usage", func(t *testing.T) {
		t.Parallel()
		f, err := parser.ParseFile(token.NewFileSet(), "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
		require.NoError(t, err)
		doc := strings.Join(strings.Fields(f.Doc.Text()), " ")
		fromUsage := strings.Join(strings.Fields(usage[strings.Index(usage, "Usage:"):]), " ")
		require.Contains(t, doc, fromUsage, "doc.go holds the usage text from Usage: on")
	})
}

// orderPlaced and signedUp are the payloads of the tests' ledger.
type (
	orderPlaced struct {
		OrderID int    `json:"order_id"`
		SKU     string `json:"sku"`
	}
	signedUp struct {
		UserID int `json:"user_id"`
	}
)

// ledger is a small shop's signals on the bundle's registry and queue: an
// order's receipt is emailed and the warehouse, which knows no SKU
// "ghost", notified; a new user is welcomed by a mail server that refuses.
type ledger struct {
	orders  *signals.Signal[orderPlaced]
	signups *signals.Signal[signedUp]
}

func (b *testBundle) ledger(t *testing.T) *ledger {
	t.Helper()
	l := &ledger{}
	l.orders = signals.Register[orderPlaced](b.reg, "order.placed")
	l.orders.Connect("email-receipt", func(context.Context, signals.Event[orderPlaced]) error { return nil }, signals.Queue(b.queue))
	l.orders.Connect("notify-warehouse", func(_ context.Context, e signals.Event[orderPlaced]) error {
		if e.Payload.SKU == "ghost" {
			return signals.Permanent(fmt.Errorf("warehouse: unknown SKU %q", e.Payload.SKU))
		}
		return nil
	}, signals.Queue(b.queue))
	l.signups = signals.Register[signedUp](b.reg, "user.signed_up")
	l.signups.Connect("send-welcome", func(context.Context, signals.Event[signedUp]) error {
		return signals.Permanent(errors.New("smtp: 550 mailbox unavailable"))
	}, signals.Queue(b.queue))
	return l
}

// send commits payload on sig and returns the event's ID.
func send[T any](t *testing.T, b *testBundle, sig *signals.Signal[T], payload T, opts ...signals.SendOption) ulid.ULID {
	t.Helper()
	var id ulid.ULID
	require.NoError(t, pgx.BeginFunc(t.Context(), b.pool, func(tx pgx.Tx) (err error) {
		id, err = sig.SendReliable(t.Context(), tx, payload, opts...)
		return err
	}))
	return id
}

// deadLetters sends two orders of the ghost SKU and one sign-up, and
// delivers them all, leaving three dead letters: two of notify-warehouse,
// one of send-welcome.
func (b *testBundle) deadLetters(t *testing.T) *ledger {
	t.Helper()
	l := b.ledger(t)
	send(t, b, l.orders, orderPlaced{OrderID: 1, SKU: "ghost"})
	send(t, b, l.orders, orderPlaced{OrderID: 2, SKU: "ghost"})
	send(t, b, l.signups, signedUp{UserID: 7})
	b.deliver(t, true, allDead(3))
	return l
}

// allDead is done, for deliver, when nothing is pending or in flight and n
// letters are dead.
func allDead(n int) func(signals.Stats) bool {
	return func(st signals.Stats) bool {
		dead, live := 0, 0
		for _, r := range st.Receivers {
			dead += r.Dead
			live += r.Pending + r.InFlight
		}
		return dead == n && live == 0
	}
}

// deliver runs a Dispatcher and, if withWorker, a Worker in this process
// until the ledger's stats satisfy done, then stops them.
func (b *testBundle) deliver(t *testing.T, withWorker bool, done func(signals.Stats) bool) {
	t.Helper()
	d, err := signals.NewDispatcher(b.reg, b.pool, b.redis, signals.DispatcherConfig{Logger: quietLogger()})
	require.NoError(t, err)
	outbox := b.outbox(t)
	components := []func(context.Context) error{d.Run}
	if withWorker {
		w, err := signals.NewWorker(b.reg, b.pool, b.redis, signals.WorkerConfig{
			Queues:                   map[string]int{b.queue: 1},
			DelayedTaskCheckInterval: 50 * time.Millisecond,
			ShutdownTimeout:          2 * time.Second,
			Logger:                   quietLogger(),
		})
		require.NoError(t, err)
		components = append(components, w.Run)
	}
	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, len(components))
	for _, run := range components {
		go func() { errs <- run(ctx) }()
	}
	var st signals.Stats
	require.Eventually(t, func() bool {
		var err error
		st, err = outbox.Stats(t.Context())
		return err == nil && done(st)
	}, eventually, 10*time.Millisecond, "stats: %+v", st.Receivers)
	cancel()
	for range components {
		require.NoError(t, <-errs)
	}
}

// outbox returns the ledger of the bundle's registry, for its Stats.
func (b *testBundle) outbox(t *testing.T) *signals.Ledger {
	t.Helper()
	l, err := signals.NewLedger(b.reg, b.pool, b.redis)
	require.NoError(t, err)
	return l
}

// stats returns the receiver's stats, zero if it has none.
func (b *testBundle) stats(t *testing.T, signal, receiver string) signals.ReceiverStats {
	t.Helper()
	st, err := b.outbox(t).Stats(t.Context())
	require.NoError(t, err)
	for _, r := range st.Receivers {
		if r.Signal == signal && r.Receiver == receiver {
			return r
		}
	}
	return signals.ReceiverStats{}
}

package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// pgbouncerQuery is what DATABASE_URL needs behind PgBouncer 1.18 in
// transaction pooling mode, as an application's pool does (see the root
// package's pgbouncer_test.go): pgx's default mode runs statements it
// prepared on one server connection on whichever one PgBouncer hands out
// next.
const pgbouncerQuery = "default_query_exec_mode=cache_describe"

// TestPgBouncer runs the command through a PgBouncer in transaction pooling
// mode, DATABASE_URL carrying pgbouncerQuery and nothing else: migrate,
// status, dead list, show, requeue and discard, inbox prune and relay, on
// dead letters a Dispatcher and a Worker left through the same PgBouncer.
func TestPgBouncer(t *testing.T) {
	t.Parallel()
	bouncer := testenv.StartPgBouncer(t)
	env := []string{"DATABASE_URL=" + bouncer.URL(pgbouncerQuery), "REDIS_ADDR=" + testenv.RedisAddr()}
	b := &testBundle{
		schema: testenv.Schema(t),
		queue:  testenv.Queue(t),
		redis:  asynq.RedisClientOpt{Addr: testenv.RedisAddr()},
	}
	run := func(t *testing.T, code int, args ...string) result {
		t.Helper()
		r := runSignals(t, env, append(args, "--schema", b.schema)...)
		requireCode(t, code, r)
		return r
	}
	list := func(t *testing.T, args ...string) []deadJSON {
		t.Helper()
		r := run(t, exitOK, append([]string{"dead", "list", "--json"}, args...)...)
		var letters []deadJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &letters), r.stdout)
		return letters
	}

	require.Contains(t, run(t, exitOK, "migrate").stdout, "schema "+b.schema+" is up to date")
	var err error
	b.pool, err = pgxpool.New(t.Context(), bouncer.URL(pgbouncerQuery))
	require.NoError(t, err)
	t.Cleanup(b.pool.Close)
	b.reg, err = signals.NewRegistry(signals.RegistryConfig{Schema: b.schema})
	require.NoError(t, err)
	l := b.deadLetters(t)

	// The subtests run in order: requeue and discard change what is dead.
	t.Run("status", func(t *testing.T) {
		r := run(t, exitFailed, "status", "--json")
		var st statusJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stdout)
		require.False(t, st.Healthy)
		require.Equal(t, []string{"dead", "dead"}, kinds(st), "one problem per receiver with dead letters")
	})

	t.Run("dead list and show", func(t *testing.T) {
		require.Len(t, list(t), 3)
		letter := list(t, "--signal", "user.signed_up")[0]
		r := run(t, exitOK, "dead", "show", letter.ID)
		require.Contains(t, r.stdout, "smtp: 550 mailbox unavailable")
		require.Contains(t, r.stdout, "\"user_id\": 7")
	})

	t.Run("dead requeue and discard", func(t *testing.T) {
		r := run(t, exitOK, "dead", "requeue", "--receiver", "notify-warehouse", "--yes")
		require.Equal(t, "requeued 2 dead letters\n", r.stdout)
		r = run(t, exitOK, "dead", "discard", list(t)[0].ID)
		require.Equal(t, "discarded 1 dead letter\n", r.stdout)
		require.Empty(t, list(t))
		require.Equal(t, 2, b.stats(t, "order.placed", "notify-warehouse").Pending, "the requeued letters wait for a relay")
	})

	t.Run("inbox prune", func(t *testing.T) {
		r := run(t, exitOK, "inbox", "prune", "--older-than", "1h")
		require.Contains(t, r.stdout, "removed 0 inbox rows recorded before ")
	})

	t.Run("relay", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), commandTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary, "relay", "--schema", b.schema)
		cmd.Env = append(baseEnv(), env...)
		var stderr syncBuffer
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()

		send(t, b, l.signups, signedUp{UserID: 8})
		testenv.Eventually(t, eventually, func() bool {
			return b.stats(t, "user.signed_up", "send-welcome").InFlight == 1 &&
				b.stats(t, "order.placed", "notify-warehouse").InFlight == 2
		}, "the relay enqueues the new row and the requeued ones; stderr:\n%s\nPgBouncer's log:\n%s", &stderr, bouncer.Log())

		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		select {
		case err := <-exited:
			require.NoError(t, err, "SIGTERM ends the relay with exit code 0; stderr:\n%s", &stderr)
		case <-time.After(eventually):
			t.Fatalf("the relay did not stop within %v of SIGTERM; stderr:\n%s", eventually, &stderr)
		}
		require.NotContains(t, stderr.String(), "level=WARN", "the relay met no error")
	})
}

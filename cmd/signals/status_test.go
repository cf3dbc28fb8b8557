package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// statusJSON runs status --json with args and decodes its output.
func (b *testBundle) statusJSON(t *testing.T, code int, args ...string) statusJSON {
	t.Helper()
	r := b.signals(t, append([]string{"status", "--json"}, args...)...)
	requireCode(t, code, r)
	var st statusJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stdout)
	return st
}

// kinds lists the problems' kinds.
func kinds(st statusJSON) []string {
	out := []string{}
	for _, p := range st.Problems {
		out = append(out, p.Kind)
	}
	return out
}

func TestStatusOfAnEmptyLedgerIsHealthy(t *testing.T) {
	t.Parallel()
	b := setup(t)

	r := b.signals(t, "status")
	requireCode(t, exitOK, r)
	require.Contains(t, r.stdout, "no rows pending, in flight or dead")
	require.Contains(t, r.stdout, "healthy")

	st := b.statusJSON(t, exitOK)
	require.True(t, st.Healthy)
	require.Equal(t, b.schema, st.Schema)
	require.Empty(t, st.Receivers)
	require.NotNil(t, st.Problems, "problems is [] in JSON, not null")
	require.Empty(t, st.Problems)
}

func TestStatusFlagsAPendingRowOlderThanTheLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l := b.ledger(t)
	send(t, b, l.signups, signedUp{UserID: 1})

	st := b.statusJSON(t, exitOK) // a fresh row is within the default minute
	require.Equal(t, []receiverJSON{{Signal: "user.signed_up", Receiver: "send-welcome", Pending: 1,
		OldestPendingSeconds: st.Receivers[0].OldestPendingSeconds}}, st.Receivers)
	require.Positive(t, st.Receivers[0].OldestPendingSeconds)

	st = b.statusJSON(t, exitFailed, "--max-pending-age", "1ns")
	require.False(t, st.Healthy)
	require.Equal(t, []string{"pending_too_old"}, kinds(st))
	require.Equal(t, "user.signed_up", st.Problems[0].Signal)
	require.Equal(t, "send-welcome", st.Problems[0].Receiver)
	require.Contains(t, st.Problems[0].Message, "signals relay")

	r := b.signals(t, "status", "--max-pending-age", "1ns")
	requireCode(t, exitFailed, r)
	require.Contains(t, r.stdout, "PROBLEMS\n  user.signed_up/send-welcome: the oldest pending row was sent")
	require.Contains(t, r.stdout, "unhealthy: 1 problem")
}

func TestStatusFlagsDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.deadLetters(t)

	r := b.signals(t, "status")
	requireCode(t, exitFailed, r)
	require.Contains(t, r.stdout, "order.placed/notify-warehouse: 2 dead letters: see signals dead list --signal order.placed --receiver notify-warehouse")

	st := b.statusJSON(t, exitFailed)
	require.Equal(t, []string{"dead", "dead"}, kinds(st))
	require.Len(t, st.Queues, 0, "no live row addresses a queue")
}

func TestStatusFlagsWorkNobodyWillDo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l := b.ledger(t)
	due := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	send(t, b, l.signups, signedUp{UserID: 1}, signals.At(due))
	b.deliver(t, false, func(st signals.Stats) bool {
		inFlight := 0
		for _, r := range st.Receivers {
			inFlight += r.InFlight
		}
		return inFlight == 1
	})

	st := b.statusJSON(t, exitFailed)
	require.Equal(t, []string{"due_far_ahead", "queue_unserved"}, kinds(st))
	require.Equal(t, &due, st.Receivers[0].LatestDue)
	require.Equal(t, []queueJSON{{Queue: b.queue, Scheduled: 1}}, st.Queues)
	require.Contains(t, st.Problems[0].Message, "3000-01-01T00:00:00Z")
	require.Contains(t, st.Problems[1].Message, "no worker serves it")

	st = b.statusJSON(t, exitFailed, "--max-due-ahead", "0", "--max-in-flight-age", "1ns")
	require.Equal(t, []string{"in_flight_too_old", "queue_unserved"}, kinds(st), "the due check is off, the in-flight one on")
}

func TestStatusFlagsTasksNoWorkerKnows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l := b.ledger(t)
	send(t, b, l.signups, signedUp{UserID: 1})
	// An old worker on the queue, which knows no user.signed_up.
	old, err := signals.NewRegistry(signals.RegistryConfig{Schema: b.schema})
	require.NoError(t, err)
	other := signals.Register[signedUp](old, "user.deleted")
	other.Connect("r", func(context.Context, signals.Event[signedUp]) error { return nil }, signals.Queue(b.queue))
	w, err := signals.NewWorker(old, b.pool, b.redis, signals.WorkerConfig{Queues: map[string]int{b.queue: 1}, Logger: quietLogger()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-stopped) }()
	b.deliver(t, false, func(st signals.Stats) bool { return len(st.Queues) == 1 && st.Queues[0].UnknownReceiver == 1 })

	// The task is retrying but for the moments the old worker runs it again.
	var st statusJSON
	require.Eventually(t, func() bool {
		r := b.signals(t, "status", "--json")
		st = statusJSON{}
		return r.code == exitFailed && json.Unmarshal([]byte(r.stdout), &st) == nil && len(st.Problems) > 0
	}, eventually, 10*time.Millisecond)
	require.Equal(t, []string{"unknown_receiver"}, kinds(st), "the queue is served, but not for this receiver")
	require.Equal(t, b.queue, st.Problems[0].Queue)
}

func TestStatusCannotCheck(t *testing.T) {
	t.Parallel()

	t.Run("an unmigrated schema", func(t *testing.T) {
		t.Parallel()
		schema := testenv.Schema(t)
		r := runSignals(t, serverEnv(), "status", "--schema", schema)
		requireCode(t, exitCannotCheck, r)
		require.Contains(t, r.stderr, "run signals migrate --schema "+schema)
	})

	t.Run("PostgreSQL unreachable", func(t *testing.T) {
		t.Parallel()
		addr := closedAddr(t)
		r := runSignals(t, serverEnv(), "status", "--database-url", "postgres://postgres:secret@"+addr+"/test")
		requireCode(t, exitCannotCheck, r)
		require.Contains(t, r.stderr, "cannot connect to PostgreSQL at "+addr)
		require.Contains(t, r.stderr, "DATABASE_URL")
		require.NotContains(t, r.stderr, "secret")
		require.Equal(t, 1, strings.Count(r.stderr, "connection refused"),
			"pgx tries with TLS and without; the same refusal is said once:\n%s", r.stderr)

		r = runSignals(t, serverEnv(), "status", "--json", "--database-url", "postgres://postgres@"+addr+"/test")
		requireCode(t, exitCannotCheck, r)
		var out map[string]string
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
		require.Equal(t, 1, strings.Count(out["error"], "connection refused"), "--json says it once too:\n%s", out["error"])
	})

	t.Run("Redis unreachable", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		addr := closedAddr(t)
		r := b.signals(t, "status", "--json", "--redis-addr", addr)
		requireCode(t, exitCannotCheck, r)
		require.Contains(t, r.stderr, "cannot reach Redis at "+addr)
		require.Contains(t, r.stderr, "REDIS_ADDR")
		var out map[string]string
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), "--json says why on stdout too")
		require.Contains(t, out["error"], addr)
	})
}

// TestStatusReachesARedisCluster runs status against a Redis Cluster named
// with redis-cluster://, which asynq's URLs cannot name, and requires that
// a malformed node list is a usage error.
func TestStatusReachesARedisCluster(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cl := testenv.StartCluster(t)

	addr := "redis-cluster://" + strings.Join(cl.Addrs, ",")
	r := b.signals(t, "status", "--json", "--redis-addr", addr)
	requireCode(t, exitOK, r)
	var st statusJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stdout)
	require.True(t, st.Healthy)

	r = b.signals(t, "status", "--redis-addr", "redis-cluster://127.0.0.1")
	requireCode(t, exitUsage, r)
	require.Contains(t, r.stderr, "host:port nodes separated by commas")
}

func TestStatusShowsHeldKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sig := signals.Register[orderPlaced](b.reg, "order.placed")
	sig.Connect("sync", func(context.Context, signals.Event[orderPlaced]) error { return nil }, signals.Queue(b.queue),
		signals.OrderBy(func(o orderPlaced) string { return o.SKU }))
	for _, sku := range []string{"a", "a", "b"} {
		send(t, b, sig, orderPlaced{SKU: sku})
	}

	r := b.signals(t, "status")
	require.Regexp(t, `(?m)^SIGNAL +RECEIVER +PENDING +IN FLIGHT +DEAD +HELD KEYS `, r.stdout)
	require.Regexp(t, `(?m)^order\.placed +sync +3 +0 +0 +1 `, r.stdout, "key a holds its second event back")
	st := b.statusJSON(t, exitOK)
	require.Len(t, st.Receivers, 1)
	require.Equal(t, 1, st.Receivers[0].HeldKeys)
}

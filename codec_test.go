package signals_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/aesgcm"
	"github.com/dj-signals/signals/internal/ledgerview"
	"github.com/dj-signals/signals/signalstest"
)

// setupCodec returns a fixture whose registry encrypts payloads with a
// fresh AES-GCM key.
func setupCodec(t *testing.T) *testBundle {
	t.Helper()
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	codec, err := aesgcm.New(1, map[byte][]byte{1: key})
	require.NoError(t, err)
	return setupRegistry(t, signals.RegistryConfig{Codec: codec})
}

// payloadSignal registers order.placed with a receiver that hands each
// payload it sees to got.
func payloadSignal(t *testing.T, f *testBundle) (sig *signals.Signal[orderPlaced], got chan orderPlaced) {
	t.Helper()
	sig = signals.Register[orderPlaced](f.reg, "order.placed")
	got = make(chan orderPlaced, 1)
	sig.Connect("r", func(_ context.Context, e signals.Event[orderPlaced]) error {
		got <- e.Payload
		return nil
	}, signals.Queue(f.queue))
	return sig, got
}

// secret is the payload the tests look for in clear.
var secret = orderPlaced{OrderID: "ada@example.com", Cents: 4200}

func TestACodecKeepsPayloadsEncodedInPostgresAndRedis(t *testing.T) {
	t.Parallel()
	f := setupCodec(t)
	sig, got := payloadSignal(t, f)
	send(t, f.pool, sig, secret)

	rows := f.outbox(t)
	require.Len(t, rows, 1)
	require.Equal(t, byte(0), rows[0].Payload[0], "an encoded payload is marked")
	require.False(t, bytes.Contains(rows[0].Payload, []byte(secret.OrderID)), "no clear text in the outbox")

	// Relayed with no worker yet: the task in Redis carries the encoded payload.
	f.runDispatcher(t, signals.DispatcherConfig{})
	var tasks []*asynq.TaskInfo
	require.Eventually(t, func() bool {
		var err error
		tasks, err = f.inspector(t).ListPendingTasks(f.queue)
		return err == nil && len(tasks) == 1
	}, eventually, tick)
	require.False(t, bytes.Contains(tasks[0].Payload, []byte(secret.OrderID)), "no clear text in Redis")

	f.runWorker(t)
	select {
	case p := <-got:
		require.Equal(t, secret, p, "the receiver sees the payload decoded")
	case <-t.Context().Done():
		t.Fatal("the receiver did not run")
	}
}

func TestDeadLettersReadEncodedWithoutTheCodec(t *testing.T) {
	t.Parallel()
	f := setupCodec(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	sig.Connect("refuse", func(context.Context, signals.Event[orderPlaced]) error {
		return signals.Permanent(errors.New("no"))
	}, signals.Queue(f.queue))
	send(t, f.pool, sig, secret)
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)

	dead := f.awaitDead(t, 1)
	require.False(t, dead[0].Encoded)
	require.JSONEq(t, `{"order_id":"ada@example.com","cents":4200}`, string(dead[0].Payload), "the registry's Ledger decodes")

	plain, err := signals.NewRegistry(signals.RegistryConfig{Schema: f.schema})
	require.NoError(t, err)
	ledger, err := signals.NewLedger(plain, f.pool, nil)
	require.NoError(t, err)
	seen, err := ledger.DeadLetters(t.Context(), signals.DeadFilter{})
	require.NoError(t, err)
	require.Len(t, seen, 1)
	require.True(t, seen[0].Encoded, "a registry without the codec reads it as encoded")
	require.Nil(t, seen[0].Payload)
	event, err := ledgerview.New(ledger).Event(t.Context(), seen[0].EventID)
	require.NoError(t, err)
	require.True(t, event.Encoded)
}

func TestAWorkerWithoutTheCodecBuriesTheDeliveryAsUndecodable(t *testing.T) {
	t.Parallel()
	f := setupCodec(t)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	sig.Connect("r", nop[orderPlaced], signals.Queue(f.queue))
	send(t, f.pool, sig, secret)

	// The Worker's registry lacks the codec: a deploy that forgot it.
	f.reg = newRegistry(t, signals.RegistryConfig{Schema: f.schema})
	signals.Register[orderPlaced](f.reg, "order.placed").Connect("r", nop[orderPlaced], signals.Queue(f.queue))
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	dead := f.awaitDead(t, 1)
	require.Equal(t, signals.ReasonUndecodable, dead[0].Reason)
	require.Contains(t, dead[0].Error, "no Codec")
}

func TestTheTestKitDecodes(t *testing.T) {
	t.Parallel()
	f := setupCodec(t)
	sig, got := payloadSignal(t, f)

	eager, err := signalstest.NewEager(f.pool, f.reg)
	require.NoError(t, err)
	tx, err := eager.Begin(t.Context())
	require.NoError(t, err)
	_, err = sig.SendReliable(t.Context(), tx, secret)
	require.NoError(t, err)
	signalstest.RequireSent(t, tx, sig, func(p orderPlaced) bool { return p == secret })
	require.NoError(t, tx.Commit(t.Context()))
	require.Equal(t, secret, <-got, "Eager's receiver sees the payload decoded")
}

func TestDrainRunsReceiversOfEncodedPayloads(t *testing.T) {
	t.Parallel()
	f := setupCodec(t)
	sig, got := payloadSignal(t, f)
	send(t, f.pool, sig, secret)
	signalstest.Drain(t, f.pool, f.redis, f.reg)
	require.Equal(t, secret, <-got)
}

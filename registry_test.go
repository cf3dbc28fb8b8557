package signals_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// Two tenants of one binary, each a registry on a schema of its own with
// the same signal and receiver names, each running a Dispatcher and a Worker
// at their defaults on one Redis: every event runs once, by its own
// tenant's receiver, and both outboxes empty.
func TestRegistriesOnTwoSchemasKeepTheirEventsApart(t *testing.T) {
	t.Parallel()
	type tenant struct {
		f       *testBundle
		sig     *signals.Signal[orderPlaced]
		runs    *counter
		foreign atomic.Int64 // runs of another tenant's event
	}
	const perTenant = 200
	tenants := make([]*tenant, 2)
	for i := range tenants {
		tn := &tenant{f: setup(t), runs: newCounter()}
		testenv.DeleteQueueAtEnd(t, tn.f.regQueue)
		tn.sig = signals.Register[orderPlaced](tn.f.reg, "tenant.event")
		prefix := fmt.Sprintf("tenant%d-", i)
		tn.sig.Connect("recv", func(_ context.Context, e signals.Event[orderPlaced]) error {
			if !strings.HasPrefix(e.Payload.OrderID, prefix) {
				tn.foreign.Add(1)
			}
			tn.runs.add(e.Payload.OrderID)
			return nil
		}) // no Queue option: the registry's default queue
		tn.f.runDispatcher(t, signals.DispatcherConfig{})
		w, err := signals.NewWorker(tn.f.reg, tn.f.pool, tn.f.redis, signals.WorkerConfig{Logger: quietLogger()})
		require.NoError(t, err)
		run(t, w.Run)
		tenants[i] = tn
	}
	require.NotEqual(t, tenants[0].f.regQueue, tenants[1].f.regQueue, "registries on different schemas default to different queues")

	done := make(chan struct{})
	for i, tn := range tenants {
		go func() {
			defer func() { done <- struct{}{} }()
			sendOrders(t, tn.f, tn.sig, fmt.Sprintf("tenant%d", i), perTenant)
		}()
	}
	<-done
	<-done
	for _, tn := range tenants {
		testenv.Eventually(t, eventually, func() bool { return tn.f.pending(t) == 0 },
			"schema %s: %d rows still in the outbox", tn.f.schema, tn.f.pending(t))
	}
	for i, tn := range tenants {
		require.Zero(t, tn.foreign.Load(), "tenant %d ran another tenant's events", i)
		runs := tn.runs.snapshot()
		require.Len(t, runs, perTenant, "tenant %d ran each of its events", i)
		for id, n := range runs {
			require.Equal(t, 1, n, "tenant %d ran %s %d times", i, id, n)
		}
	}
}

// A queue one registry's receivers use is refused to a registry on another
// schema, at wiring time, with an error naming both schemas.
func TestAQueueCarriesOneSchema(t *testing.T) {
	t.Parallel()
	a, b := setup(t), setup(t)
	signals.Register[orderPlaced](a.reg, "tenant.event").Connect("recv", nop[orderPlaced], signals.Queue(a.queue))

	err := wiringError(t, func() {
		signals.Register[orderPlaced](b.reg, "tenant.event").Connect("recv", nop[orderPlaced], signals.Queue(a.queue))
	})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	require.ErrorContains(t, err, a.schema)
	require.ErrorContains(t, err, b.schema)

	_, err = signals.NewWorker(b.reg, b.pool, b.redis, signals.WorkerConfig{Queues: map[string]int{a.queue: 1}})
	require.ErrorIs(t, err, signals.ErrInvalidConfig, "a Worker of b may not serve a's queue")
	require.ErrorContains(t, err, a.schema)

	same, err := signals.NewRegistry(signals.RegistryConfig{Schema: a.schema})
	require.NoError(t, err)
	// A second registry on the same schema may share the queue.
	signals.Register[orderPlaced](same, "other.event").Connect("recv", nop[orderPlaced], signals.Queue(a.queue))
}

func TestRegistryConfigIsValidated(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{`bad"schema`, "Upper", "has space", "1x", strings.Repeat("x", 64), "x; DROP TABLE y"} {
		_, err := signals.NewRegistry(signals.RegistryConfig{Schema: bad})
		require.ErrorIs(t, err, signals.ErrInvalidName, "%q", bad)
	}
	_, err := signals.NewRegistry(signals.RegistryConfig{MaxPayloadBytes: -1})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	reg, err := signals.NewRegistry(signals.RegistryConfig{})
	require.NoError(t, err)
	require.Equal(t, "signals", reg.Schema())
	require.Equal(t, signals.RegistryConfig{}.WithDefaults().Schema, reg.Schema())
}

func TestDefaultQueueIsTheApplications(t *testing.T) {
	t.Parallel()
	// Named after the main module, as the binary's build info gives it:
	// here, this module's test binary.
	const queue = "signals.github.com-dj-signals-signals"
	require.Equal(t, queue, signals.RegistryConfig{}.WithDefaults().Queue)
	require.Equal(t, queue+".tenant_a", signals.RegistryConfig{Schema: "tenant_a"}.WithDefaults().Queue)
	reg := newRegistry(t, signals.RegistryConfig{})
	sig := signals.Register[orderPlaced](reg, "order.placed")
	sig.Connect("r", nop[orderPlaced])
	mail := testenv.Queue(t) // queues are claimed per schema for the whole process
	sig.Connect("elsewhere", nop[orderPlaced], signals.Queue(mail))
	require.Equal(t, []string{mail, queue}, reg.Queues(), "sorted; r's is the registry's queue")

	require.Equal(t, "billing", signals.RegistryConfig{Queue: "billing"}.WithDefaults().Queue)
	_, err := signals.NewRegistry(signals.RegistryConfig{Queue: "has spaces"})
	require.ErrorIs(t, err, signals.ErrInvalidName)
}

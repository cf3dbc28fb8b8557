package otelsignals_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/otelsignals"
)

// fakeStats returns the snapshot and error it is set to.
type fakeStats struct {
	mu    sync.Mutex
	stats signals.Stats
	err   error
	calls int
}

func (f *fakeStats) Stats(ctx context.Context) (signals.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if _, ok := ctx.Deadline(); !ok {
		return signals.Stats{}, errors.New("no deadline")
	}
	return f.stats, f.err
}

func (f *fakeStats) set(st signals.Stats, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats, f.err = st, err
}

func TestObserveStats(t *testing.T) {
	t.Parallel()

	setup := func(t *testing.T) (*fakeStats, *telemetry) {
		t.Helper()
		tm := newTelemetry(t)
		src := &fakeStats{}
		reg, err := otelsignals.ObserveStats(src, otelsignals.StatsConfig{MeterProvider: tm.mp})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, reg.Unregister()) })
		return src, tm
	}
	email := []attribute.KeyValue{attribute.String("signal", "order.placed"), attribute.String("receiver", "email")}
	state := func(s string) []attribute.KeyValue {
		return slices.Concat(email, []attribute.KeyValue{attribute.String("state", s)})
	}
	queue := func(s string) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("queue", "q"), attribute.String("state", s)}
	}
	snapshot := signals.Stats{
		Receivers: []signals.ReceiverStats{{
			Signal: "order.placed", Receiver: "email", Pending: 3, InFlight: 2, Dead: 1,
			OldestPending: 1500 * time.Millisecond, OldestInFlight: 4 * time.Second,
		}},
		Queues: []signals.QueueStats{{Queue: "q", Pending: 2, Retry: 1, Archived: 1, Served: true}},
	}

	t.Run("ObservesTheSnapshotAtCollection", func(t *testing.T) {
		t.Parallel()
		src, tm := setup(t)
		src.set(snapshot, nil)

		backlog := func(s string) int64 { v, _ := gauge[int64](t, tm, "signals.backlog", state(s)...); return v }
		require.EqualValues(t, 3, backlog("pending"))
		require.EqualValues(t, 2, backlog("in_flight"))
		age, ok := gauge[float64](t, tm, "signals.backlog.oldest_age", state("pending")...)
		require.True(t, ok)
		require.InDelta(t, 1.5, age, 1e-9)
		age, _ = gauge[float64](t, tm, "signals.backlog.oldest_age", state("in_flight")...)
		require.InDelta(t, 4, age, 1e-9)
		dead, _ := gauge[int64](t, tm, "signals.dead_letters", email...)
		require.EqualValues(t, 1, dead)

		tasks := func(s string) int64 { v, _ := gauge[int64](t, tm, "signals.queue.tasks", queue(s)...); return v }
		require.EqualValues(t, 2, tasks("pending"))
		require.EqualValues(t, 1, tasks("retry"))
		require.EqualValues(t, 1, tasks("archived"))
		_, ok = gauge[int64](t, tm, "signals.queue.tasks", queue("completed")...)
		require.True(t, ok, "every state is observed, zeros too")
		served, _ := gauge[int64](t, tm, "signals.queue.served", attribute.String("queue", "q"))
		require.EqualValues(t, 1, served)
	})

	t.Run("AnEmptiedBacklogReadsZero", func(t *testing.T) {
		t.Parallel()
		src, tm := setup(t)
		src.set(snapshot, nil)
		tm.metric(t, "signals.backlog")
		src.set(signals.Stats{}, nil)

		v, ok := gauge[int64](t, tm, "signals.backlog", state("pending")...)
		require.True(t, ok, "still observed")
		require.Zero(t, v)
		age, _ := gauge[float64](t, tm, "signals.backlog.oldest_age", state("in_flight")...)
		require.Zero(t, age)
		tasks, ok := gauge[int64](t, tm, "signals.queue.tasks", queue("pending")...)
		require.True(t, ok)
		require.Zero(t, tasks)
	})

	t.Run("AFailedSnapshotObservesWhatItReadAndHoldsBackNothingElse", func(t *testing.T) {
		t.Parallel()
		src, tm := setup(t)
		src.set(snapshot, nil)
		tm.metric(t, "signals.backlog")
		// Redis is down: the ledger's figures came back, the queues did not.
		partial := snapshot
		partial.Queues = nil
		src.set(partial, errors.New("signals: read queue stats from redis: connection refused"))

		// tm.metric fails the test if Collect returns an error.
		v, _ := gauge[int64](t, tm, "signals.backlog", state("pending")...)
		require.EqualValues(t, 3, v)
		_, ok := gauge[int64](t, tm, "signals.queue.tasks", queue("pending")...)
		require.False(t, ok, "unknown, not zero")
	})

	t.Run("NeedsASource", func(t *testing.T) {
		t.Parallel()
		_, err := otelsignals.ObserveStats(nil, otelsignals.StatsConfig{})
		require.ErrorIs(t, err, signals.ErrInvalidConfig)
	})
}

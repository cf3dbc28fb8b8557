package acks

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBatcherRemovesManyRowsPerStatementAndFlushesOnStop(t *testing.T) {
	t.Parallel()
	schema := testenv.Schema(t)
	pool := testenv.Pool(t)
	require.NoError(t, store.Migrate(t.Context(), pool, schema))
	q, err := store.New(schema)
	require.NoError(t, err)

	const rows = 2500
	id := ulid.Make()
	e := store.Event{ID: id, CorrelationID: id, Signal: "order.placed", Payload: []byte(`{}`)}
	var targets []store.Target
	for i := range rows {
		targets = append(targets, store.Target{TaskID: ulid.Make(), Receiver: "r" + string(rune('a'+i%26)), Queue: "q", MaxRetry: 1, TimeoutMS: 1000})
	}
	for start := 0; start < rows; start += 500 {
		require.NoError(t, q.Insert(t.Context(), pool, e, targets[start:start+500]))
	}

	kit, err := store.NewKitQueries(schema)
	require.NoError(t, err)
	live, err := kit.Live(t.Context(), pool)
	require.NoError(t, err)
	require.Len(t, live, rows)

	counted := &testenv.Statements{Prefix: "DELETE"}
	cfg, err := pgxpool.ParseConfig(testenv.DatabaseURL())
	require.NoError(t, err)
	cfg.ConnConfig.Tracer = counted
	ackPool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	defer ackPool.Close()

	// An interval far longer than the test: only a full batch, or the
	// stop, flushes.
	b := New(q, ackPool, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx)
	}()
	for _, row := range live {
		b.Add(row.Ref(), false)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return counted.Count() >= 2 }, "two full batches flush without waiting for the interval")
	cancel()
	<-done

	c, err := q.Count(t.Context(), pool)
	require.NoError(t, err)
	require.Zero(t, c.Live, "the rest flushed on stop")
	// A full batch wakes a flush of everything waiting by then, in chunks
	// of at most MaxBatch rows, one DELETE a chunk: 3 chunks when the adds
	// outrun the flushes, a few more when a flush catches a partial tail.
	n := counted.Count()
	require.GreaterOrEqual(t, n, int64((rows+MaxBatch-1)/MaxBatch))
	require.LessOrEqual(t, n, int64(6), "%d rows in %d statements", rows, n)
}

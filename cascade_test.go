package signals_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/dj-signals/signals/signalstest"
)

// cascadeMeta is the cascade metadata of one delivered event.
type cascadeMeta struct {
	ID, CorrelationID, CausationID ulid.ULID
	Depth                          int
}

// cascadeLog records the metadata of delivered events per signal.
type cascadeLog struct {
	mu   sync.Mutex
	seen map[string][]cascadeMeta
}

func newCascadeLog() *cascadeLog { return &cascadeLog{seen: map[string][]cascadeMeta{}} }

func recordCascade[T any](l *cascadeLog, e signals.Event[T]) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[e.Signal] = append(l.seen[e.Signal], cascadeMeta{ID: e.ID, CorrelationID: e.CorrelationID, CausationID: e.CausationID, Depth: e.Depth})
}

func (l *cascadeLog) get(signal string) []cascadeMeta {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]cascadeMeta(nil), l.seen[signal]...)
}

// recordAndSend returns a receiver that records its event, then sends next
// with the receiver's ctx, in a transaction of its own on db.
func recordAndSend[T, U any](l *cascadeLog, db signals.TxBeginner, next *signals.Signal[U]) signals.ReceiverFunc[T] {
	return func(ctx context.Context, e signals.Event[T]) error {
		recordCascade(l, e)
		return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			var payload U
			_, err := next.SendReliable(ctx, tx, payload)
			return err
		})
	}
}

func recordOnly[T any](l *cascadeLog) signals.ReceiverFunc[T] {
	return func(_ context.Context, e signals.Event[T]) error {
		recordCascade(l, e)
		return nil
	}
}

// setupEager returns a pool, a registry on a migrated schema of the test's
// own, and an Eager running the registry's receivers at commit.
func setupEager(t *testing.T, cfg signals.RegistryConfig) (*pgxpool.Pool, *signals.Registry, *signalstest.Eager) {
	t.Helper()
	pool := testenv.Pool(t)
	cfg.Schema = testenv.Schema(t)
	cfg.Logger = quietLogger()
	require.NoError(t, signals.MigrateSchema(t.Context(), pool, cfg.Schema))
	reg, err := signals.NewRegistry(cfg)
	require.NoError(t, err)
	eager, err := signalstest.NewEager(pool, reg)
	require.NoError(t, err)
	return pool, reg, eager
}

// sendRoot commits one event of sig through db and returns its ID, with the
// error of the commit (Eager's carries the receivers' errors).
func sendRoot[T any](t *testing.T, db signals.TxBeginner, sig *signals.Signal[T], payload T) (ulid.ULID, error) {
	t.Helper()
	var id ulid.ULID
	err := pgx.BeginFunc(t.Context(), db, func(tx pgx.Tx) (err error) {
		id, err = sig.SendReliable(t.Context(), tx, payload)
		return err
	})
	return id, err
}

func TestCascadeRecordsCauseCorrelationAndDepth(t *testing.T) {
	t.Parallel()
	pool, reg, eager := setupEager(t, signals.RegistryConfig{})
	a, err := signals.Register[orderPlaced](reg, "order.placed")
	require.NoError(t, err)
	b, err := signals.Register[struct{}](reg, "invoice.issued")
	require.NoError(t, err)
	seen := newCascadeLog()
	a.Connect("issue-invoice", recordAndSend[orderPlaced](seen, pool, b))
	b.Connect("record", recordOnly[struct{}](seen))

	// Two root events: each cascade correlates with its own root.
	var roots []ulid.ULID
	for _, id := range []string{"o-1", "o-2"} {
		root, err := sendRoot(t, eager, a, orderPlaced{OrderID: id})
		require.NoError(t, err)
		roots = append(roots, root)
	}

	as, bs := seen.get("order.placed"), seen.get("invoice.issued")
	require.Len(t, as, 2)
	require.Len(t, bs, 2)
	for i, root := range roots {
		require.Equal(t, cascadeMeta{ID: root, CorrelationID: root, Depth: 0}, as[i], "a root event: its own correlation, no cause")
		require.NotEqual(t, root, bs[i].ID)
		require.Equal(t, cascadeMeta{ID: bs[i].ID, CorrelationID: root, CausationID: root, Depth: 1}, bs[i])
	}
}

func TestCascadeChainKeepsItsCorrelation(t *testing.T) {
	t.Parallel()
	pool, reg, eager := setupEager(t, signals.RegistryConfig{})
	a, err := signals.Register[orderPlaced](reg, "order.placed")
	require.NoError(t, err)
	b, err := signals.Register[struct{}](reg, "invoice.issued")
	require.NoError(t, err)
	c, err := signals.Register[struct{}](reg, "invoice.emailed")
	require.NoError(t, err)
	seen := newCascadeLog()
	a.Connect("issue-invoice", recordAndSend[orderPlaced](seen, pool, b))
	b.Connect("email-invoice", recordAndSend[struct{}](seen, pool, c))
	c.Connect("record", recordOnly[struct{}](seen))

	root, err := sendRoot(t, eager, a, orderPlaced{OrderID: "o-1"})
	require.NoError(t, err)

	bs, cs := seen.get("invoice.issued"), seen.get("invoice.emailed")
	require.Len(t, bs, 1)
	require.Len(t, cs, 1)
	require.Equal(t, cascadeMeta{ID: bs[0].ID, CorrelationID: root, CausationID: root, Depth: 1}, bs[0])
	require.Equal(t, cascadeMeta{ID: cs[0].ID, CorrelationID: root, CausationID: bs[0].ID, Depth: 2}, cs[0])
}

func TestCascadeLoopStopsAtMaxDepth(t *testing.T) {
	t.Parallel()
	for _, through := range []string{"pool", "eager"} {
		t.Run("receivers send through the "+through, func(t *testing.T) {
			t.Parallel()
			testCascadeLoop(t, through)
		})
	}
}

func testCascadeLoop(t *testing.T, through string) {
	const maxDepth = 3
	pool, reg, eager := setupEager(t, signals.RegistryConfig{MaxDepth: maxDepth})
	again, err := signals.Register[int](reg, "loop.again")
	require.NoError(t, err)
	seen := newCascadeLog()
	// A receiver that re-sends its own signal: a loop only MaxDepth ends.
	// Sending through the Eager nests a commit inside each receiver, which
	// must not wait for connections the outer levels hold.
	var db signals.TxBeginner = pool
	if through == "eager" {
		db = eager
	}
	again.Connect("again", recordAndSend[int](seen, db, again))

	root, err := sendRoot(t, eager, again, 0)
	require.ErrorIs(t, err, signals.ErrCascadeTooDeep)

	runs := seen.get("loop.again")
	require.Len(t, runs, maxDepth+1, "depths 0 to MaxDepth run; the send to MaxDepth+1 is refused")
	for depth, m := range runs {
		require.Equal(t, depth, m.Depth)
		require.Equal(t, root, m.CorrelationID)
	}
	var left int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM `+pgx.Identifier{reg.Schema(), "outbox"}.Sanitize()).Scan(&left))
	require.Zero(t, left, "the refused send wrote nothing")
}

func TestCascadeThroughDispatcherAndWorker(t *testing.T) {
	t.Parallel()
	f := setupDelivery(t)
	a, err := signals.Register[orderPlaced](f.reg, "order.placed")
	require.NoError(t, err)
	b, err := signals.Register[struct{}](f.reg, "invoice.issued")
	require.NoError(t, err)
	seen := newCascadeLog()
	a.Connect("issue-invoice", recordAndSend[orderPlaced](seen, f.pool, b), signals.Queue(f.queue))
	b.Connect("record", recordOnly[struct{}](seen), signals.Queue(f.queue))
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)

	root, err := sendRoot(t, f.pool, a, orderPlaced{OrderID: "o-1"})
	require.NoError(t, err)

	require.Eventually(t, func() bool { return len(seen.get("invoice.issued")) == 1 }, eventually, tick)
	require.Equal(t, []cascadeMeta{{ID: root, CorrelationID: root}}, seen.get("order.placed"))
	bs := seen.get("invoice.issued")
	require.Equal(t, cascadeMeta{ID: bs[0].ID, CorrelationID: root, CausationID: root, Depth: 1}, bs[0])
}

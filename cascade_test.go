package signals_test

import (
	"context"
	"sync"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
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
func recordAndSend[T, U any](l *cascadeLog, db signals.DB, next *signals.Signal[U]) signals.ReceiverFunc[T] {
	return func(ctx context.Context, e signals.Event[T]) error {
		recordCascade(l, e)
		var payload U
		_, err := commit(ctx, db, next, payload)
		return err
	}
}

func recordOnly[T any](l *cascadeLog) signals.ReceiverFunc[T] {
	return func(_ context.Context, e signals.Event[T]) error {
		recordCascade(l, e)
		return nil
	}
}

// invoiceCascade registers "order.placed" and after it a signal of struct{}
// per name in then: the receiver of each records its event and sends the
// next signal with its ctx, through f.pool; the last one only records. It
// returns the first signal and the log of all.
func invoiceCascade(t *testing.T, f *testBundle, then []string, opts ...signals.ReceiverOption) (*signals.Signal[orderPlaced], *cascadeLog) {
	t.Helper()
	seen := newCascadeLog()
	var next *signals.Signal[struct{}]
	for i := len(then) - 1; i >= 0; i-- {
		sig := signals.Register[struct{}](f.reg, then[i])
		if next == nil {
			sig.Connect("record", recordOnly[struct{}](seen), opts...)
		} else {
			sig.Connect("send-next", recordAndSend[struct{}](seen, f.pool, next), opts...)
		}
		next = sig
	}
	first := signals.Register[orderPlaced](f.reg, "order.placed")
	first.Connect("send-next", recordAndSend[orderPlaced](seen, f.pool, next), opts...)
	return first, seen
}

func TestCascadeRecordsCauseCorrelationAndDepth(t *testing.T) {
	t.Parallel()
	f := setup(t)
	a, seen := invoiceCascade(t, f, []string{"invoice.issued"})

	// Two root events: each cascade correlates with its own root.
	eager := f.eager(t)
	roots := []ulid.ULID{
		send(t, eager, a, orderPlaced{OrderID: "o-1"}),
		send(t, eager, a, orderPlaced{OrderID: "o-2"}),
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
	f := setup(t)
	a, seen := invoiceCascade(t, f, []string{"invoice.issued", "invoice.emailed"})

	root := send(t, f.eager(t), a, orderPlaced{OrderID: "o-1"})

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
	f := setupRegistry(t, signals.RegistryConfig{MaxDepth: maxDepth})
	eager := f.eager(t)
	again := signals.Register[int](f.reg, "loop.again")
	seen := newCascadeLog()
	// A receiver that re-sends its own signal: a loop only MaxDepth ends.
	// Sending through the Eager nests a commit inside each receiver, which
	// must not wait for connections the outer levels hold.
	var db signals.DB = f.pool
	if through == "eager" {
		db = eager
	}
	again.Connect("again", recordAndSend[int](seen, db, again))

	root, err := commit(t.Context(), eager, again, 0)
	require.ErrorIs(t, err, signals.ErrInvalidEvent)
	require.ErrorContains(t, err, "cascade too deep")

	runs := seen.get("loop.again")
	require.Len(t, runs, maxDepth+1, "depths 0 to MaxDepth run; the send to MaxDepth+1 is refused")
	for depth, m := range runs {
		require.Equal(t, depth, m.Depth)
		require.Equal(t, root, m.CorrelationID)
	}
	require.Zero(t, f.pending(t), "the refused send wrote nothing")
}

func TestCascadeThroughDispatcherAndWorker(t *testing.T) {
	t.Parallel()
	f := setup(t)
	a, seen := invoiceCascade(t, f, []string{"invoice.issued"}, signals.Queue(f.queue))
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)

	root := send(t, f.pool, a, orderPlaced{OrderID: "o-1"})

	require.Eventually(t, func() bool { return len(seen.get("invoice.issued")) == 1 }, eventually, tick)
	require.Equal(t, []cascadeMeta{{ID: root, CorrelationID: root}}, seen.get("order.placed"))
	bs := seen.get("invoice.issued")
	require.Equal(t, cascadeMeta{ID: bs[0].ID, CorrelationID: root, CausationID: root, Depth: 1}, bs[0])
}

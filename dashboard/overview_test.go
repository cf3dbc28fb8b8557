package dashboard_test

import (
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/dashboard"
	"github.com/dj-signals/signals/internal/testenv"
)

func TestOverview(t *testing.T) {
	t.Parallel()
	b := setup(t, dashboard.Config{StatsMaxAge: -1})
	status, page := b.get(t, "")
	require.Equal(t, http.StatusOK, status, page)
	require.Contains(t, page, "Healthy: nothing is dead, late or unserved.")
	require.Contains(t, page, `<meta http-equiv="refresh" content="5">`, "the overview refreshes itself")
	require.Equal(t, 4, rowsOf(page, "receivers"), "every connected receiver, with nothing to do: %s", page)

	b.deadLetters(t, 2, "")
	status, page = b.get(t, "")
	require.Equal(t, http.StatusOK, status, page)
	require.Regexp(t, regexp.MustCompile(`<td>order.placed</td><td>charge</td><td class="n">0</td><td class="n">0</td>\s*<td class="n"><a class="dead" href="dead\?receiver=charge&amp;signal=order.placed">2</a></td><td class="n">0</td>`), page)
	require.Contains(t, page, "order.placed → charge: 2 dead letters")
	require.Regexp(t, `<td>q_[0-9a-z]+</td><td><span class="ok">yes</span></td>`, page, "the worker serves the queue")
}

func TestOverviewWithoutRefresh(t *testing.T) {
	t.Parallel()
	b := setup(t, dashboard.Config{Refresh: -1})
	page, _ := awaitSnapshot(t, b)
	require.NotContains(t, page, `http-equiv="refresh"`)
}

// snapshotAt finds when the overview's snapshot of the ledger was taken.
var snapshotAt = regexp.MustCompile(`<h1>Overview <small>at ([^,<]+)`)

// awaitSnapshot gets the overview until it shows a snapshot, and returns
// the page and when the snapshot was taken: a loaded machine may first
// show the counting page, which comes back for it.
func awaitSnapshot(t *testing.T, b *testBundle) (page, at string) {
	t.Helper()
	testenv.Eventually(t, eventually, func() bool {
		_, page = b.get(t, "")
		m := snapshotAt.FindStringSubmatch(page)
		if m != nil {
			at = m[1]
		}
		return m != nil
	}, "the overview shows a snapshot")
	return page, at
}

func TestOverviewSharesItsSnapshot(t *testing.T) {
	t.Parallel()
	b := setup(t, dashboard.Config{StatsMaxAge: time.Hour})
	_, first := awaitSnapshot(t, b)
	b.deadLetters(t, 1, "")
	second, at := awaitSnapshot(t, b)
	require.Equal(t, first, at, "one snapshot while it is younger than StatsMaxAge")
	require.Contains(t, second, "Healthy", "the dead letter is not in the snapshot yet")
}

func TestOverviewDoesNotWaitLongForItsSnapshot(t *testing.T) {
	t.Parallel()
	// Every snapshot is too old at once: each page starts a new one.
	b := setup(t, dashboard.Config{StatsMaxAge: time.Nanosecond})
	// A lock on the outbox holds Ledger.Stats back, as a pass over
	// millions of rows would.
	lock := func() (release func()) {
		tx, err := b.pool.Begin(t.Context())
		require.NoError(t, err)
		_, err = tx.Exec(t.Context(), `LOCK TABLE `+pgx.Identifier{b.schema, "outbox"}.Sanitize()+` IN ACCESS EXCLUSIVE MODE`)
		require.NoError(t, err)
		return func() { require.NoError(t, tx.Rollback(t.Context())) }
	}
	release := lock()
	start := time.Now()
	status, page := b.get(t, "")
	require.Equal(t, http.StatusOK, status, page)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Contains(t, page, `id="counting"`, "no snapshot yet")
	require.Contains(t, page, `<meta http-equiv="refresh" content="1">`, "the page comes back for it")
	release()
	_, first := awaitSnapshot(t, b) // once computed

	release = lock()
	_, page = b.get(t, "")
	require.Contains(t, page, "a newer snapshot is being computed", "the previous snapshot, said to be old")
	require.Equal(t, first, snapshotAt.FindStringSubmatch(page)[1])
	release()
}

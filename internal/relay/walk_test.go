package relay

import (
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/wake"
)

// TestKeysAreWalkedOnlyWhileThereMayBeKeyedRows requires that a relay whose
// last walk met no key skips the walk until a local send of keyed rows or
// its next poll, and walks every batch while keys have rows.
func TestKeysAreWalkedOnlyWhileThereMayBeKeyedRows(t *testing.T) {
	t.Parallel()
	// A schema of its own: the count of keyed sends is the process's, and
	// outlives one run of the test (go test -count).
	schema := "walk_keys_" + strings.ToLower(ulid.Make().String())
	queries, err := store.New(schema)
	require.NoError(t, err)
	r := &Relay{queries: queries, cfg: Config{PollInterval: time.Hour}}

	require.NotNil(t, r.walkKeys(), "the first batch walks")
	require.Nil(t, r.walkKeys(), "the walk met no key: the next batch does not walk")

	wake.NotifyKeyed(schema)
	require.NotNil(t, r.walkKeys(), "a local send of keyed rows")
	require.NotNil(t, r.walkKeys(), "and for a PollInterval after it: its commit may come later")
	r.keyedAt = time.Now().Add(-time.Hour)
	require.Nil(t, r.walkKeys())

	r.cursor.Met = 3
	require.NotNil(t, r.walkKeys(), "the last walk met keys")
	r.cursor.Met = 0
	r.walked = time.Now().Add(-time.Hour)
	require.NotNil(t, r.walkKeys(), "a PollInterval since the last walk: keyed rows of other processes")
}

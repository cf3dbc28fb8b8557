package signalstest

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/kithook"
	"github.com/dj-signals/signals/internal/store"
)

// DB is what the assertions read the outbox through, with pgx's Exec and
// Query methods: a pgx.Tx sees what that transaction sent, a
// *pgxpool.Pool sees what was committed.
type DB = store.Executor

// RequireSent fails the test unless db's outbox holds at least one event of
// sig whose payload satisfies match (nil matches any), and returns the
// matching payloads, one per event. Rows leave the outbox once their
// receivers succeed, so use it where no Worker runs.
func RequireSent[T any](t testing.TB, db DB, sig *signals.Signal[T], match func(T) bool) []T {
	t.Helper()
	got := sent(t, db, sig, match)
	if len(got) == 0 {
		t.Fatalf("signalstest: no %q event matching the predicate was sent", sig.Name())
	}
	return got
}

// RequireNotSent fails the test if db's outbox holds an event of sig whose
// payload satisfies match (nil matches any).
func RequireNotSent[T any](t testing.TB, db DB, sig *signals.Signal[T], match func(T) bool) {
	t.Helper()
	if got := sent(t, db, sig, match); len(got) > 0 {
		t.Fatalf("signalstest: %d %q event(s) matching the predicate were sent, want none; first payload: %+v", len(got), sig.Name(), got[0])
	}
}

func sent[T any](t testing.TB, db DB, sig *signals.Signal[T], match func(T) bool) []T {
	t.Helper()
	reg := kithook.RegistryOf(sig).(*signals.Registry)
	q, err := store.NewKitQueries(reg.Schema())
	if err != nil {
		t.Fatalf("signalstest: %v", err)
	}
	rows, err := q.Sent(context.Background(), db, sig.Name())
	if err != nil {
		t.Fatalf("signalstest: read the outbox: %v", err)
	}
	var out []T
	seen := map[[16]byte]bool{}
	for _, r := range rows {
		if seen[r.EventID] { // one row per receiver; report each event once
			continue
		}
		seen[r.EventID] = true
		body, err := kithook.DecodePayload(reg, r.Payload)
		if err != nil {
			t.Fatalf("signalstest: read a %q payload: %v", sig.Name(), err)
		}
		var p T
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatalf("signalstest: decode a %q payload: %v", sig.Name(), err)
		}
		if match == nil || match(p) {
			out = append(out, p)
		}
	}
	return out
}

package signalstest

import (
	"testing"

	"github.com/dj-signals/signals"
)

// RequireIdempotent calls receiver twice with the same event, as an
// at-least-once delivery may, requires both calls to succeed, then runs
// check, which should assert that the side effect happened exactly once.
// Build the event with Signal.NewEvent.
func RequireIdempotent[T any](t testing.TB, receiver signals.ReceiverFunc[T], e signals.Event[T], check func(t testing.TB)) {
	t.Helper()
	for attempt := 1; attempt <= 2; attempt++ {
		e.Attempt = attempt
		if err := receiver(t.Context(), e); err != nil {
			t.Fatalf("signalstest: delivery %d of %s to %q: %v", attempt, e.TaskID, e.Receiver, err)
		}
	}
	check(t)
}

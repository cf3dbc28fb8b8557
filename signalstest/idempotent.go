package signalstest

import (
	"testing"

	"github.com/dj-signals/signals"
)

// RequireIdempotent calls receiver twice with the same event, as an
// at-least-once delivery may, requires both calls to succeed, then runs
// check, which should assert that the side effect happened exactly once.
// Build the event with Signal.NewEvent. The first call gets e as it is
// (Attempt 1 from NewEvent, or what you set), the second the same event
// with Attempt one higher, as a redelivery has.
func RequireIdempotent[T any](t testing.TB, receiver signals.ReceiverFunc[T], e signals.Event[T], check func(t testing.TB)) {
	t.Helper()
	for call := 1; call <= 2; call++ {
		if err := receiver(t.Context(), e); err != nil {
			t.Fatalf("signalstest: delivery %d of %s to %q (Attempt %d): %v", call, e.TaskID, e.Receiver, e.Attempt, err)
		}
		e.Attempt++
	}
	check(t)
}

package health

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
)

func TestProblemsListsEachCheckOnceReceiversFirst(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	st := signals.Stats{
		At: at,
		Receivers: []signals.ReceiverStats{
			{Signal: "order.placed", Receiver: "email"}, // healthy
			{Signal: "order.placed", Receiver: "charge", Dead: 2, OldestPending: 2 * time.Minute, OldestInFlight: time.Hour,
				LatestDue: at.Add(2 * 365 * 24 * time.Hour)},
		},
		Queues: []signals.QueueStats{
			{Queue: "idle", Served: false},
			{Queue: "stuck", Pending: 3, Retry: 1, UnknownReceiver: 1},
		},
	}
	lim := Defaults
	lim.MaxInFlightAge = 10 * time.Minute
	got := Problems(st, lim)
	var kinds, subjects []string
	for _, p := range got {
		kinds = append(kinds, p.Kind)
		subjects = append(subjects, p.Subject("/"))
	}
	require.Equal(t, []string{"dead", "pending_too_old", "in_flight_too_old", "due_far_ahead", "queue_unserved", "unknown_receiver"}, kinds)
	require.Equal(t, []string{"order.placed/charge", "order.placed/charge", "order.placed/charge", "order.placed/charge", "queue stuck", "queue stuck"}, subjects,
		"an empty queue nobody serves is no problem")
	require.Equal(t, "2 dead letters", got[0].Detail)
	require.Contains(t, got[1].Detail, "sent 2m0s ago (limit 1m0s)")
	require.Contains(t, got[4].Detail, "4 tasks (pending 3, scheduled 0, retry 1)")

	kinds = nil
	for _, p := range Problems(st, Limits{}) {
		kinds = append(kinds, p.Kind)
	}
	require.Equal(t, []string{"dead", "queue_unserved", "unknown_receiver"}, kinds, "a zero limit turns its check off")
	require.NotNil(t, Problems(signals.Stats{}, Defaults), "never nil: JSON prints []")
}

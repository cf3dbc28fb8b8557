// Package health says what is wrong in a snapshot of the pipeline, for the
// signals command's status and the dashboard's overview: one list of
// problems, worded once.
package health

import (
	"fmt"
	"time"

	"github.com/dj-signals/signals"
)

// Limits are the thresholds past which a figure is a problem; 0 turns a
// check off.
type Limits struct {
	MaxPendingAge  time.Duration // a pending row older: no Dispatcher keeps up
	MaxInFlightAge time.Duration // a row enqueued longer ago: its receiver keeps failing
	MaxDueAhead    time.Duration // a row due further ahead: a wrong At or Delay
}

// Defaults are the limits signals status and the dashboard apply unless
// told otherwise.
var Defaults = Limits{MaxPendingAge: time.Minute, MaxDueAhead: 365 * 24 * time.Hour}

// Problem is something wrong in a snapshot: work that is failing, or that
// nobody will ever do. A receiver's problem names its Signal and Receiver,
// a queue's its Queue.
type Problem struct {
	// Kind is one of dead, pending_too_old, in_flight_too_old,
	// due_far_ahead, queue_unserved, unknown_receiver.
	Kind     string `json:"kind"`
	Signal   string `json:"signal,omitempty"`
	Receiver string `json:"receiver,omitempty"`
	Queue    string `json:"queue,omitempty"`
	// Detail says what is wrong and what to check, without the subject.
	Detail string `json:"-"`
}

// Subject names what the problem is about, joining a receiver's signal and
// name with sep: "order.placed/email", "queue signals.shop".
func (p Problem) Subject(sep string) string {
	if p.Queue != "" {
		return "queue " + p.Queue
	}
	return p.Signal + sep + p.Receiver
}

// Problems lists what is wrong in st under lim, receivers first, then
// queues; never nil.
func Problems(st signals.Stats, lim Limits) []Problem {
	out := []Problem{}
	for _, r := range st.Receivers {
		add := func(kind, format string, args ...any) {
			out = append(out, Problem{Kind: kind, Signal: r.Signal, Receiver: r.Receiver, Detail: fmt.Sprintf(format, args...)})
		}
		if r.Dead > 0 {
			add("dead", "%s", Count(r.Dead, "dead letter"))
		}
		if lim.MaxPendingAge > 0 && r.OldestPending > lim.MaxPendingAge {
			add("pending_too_old", "the oldest pending row was sent %s ago (limit %s): is a Dispatcher (signals relay) running and keeping up?", Age(r.OldestPending), lim.MaxPendingAge)
		}
		if lim.MaxInFlightAge > 0 && r.OldestInFlight > lim.MaxInFlightAge {
			add("in_flight_too_old", "the oldest in-flight row was enqueued %s ago (limit %s): its receiver keeps failing, or no worker serves its queue", Age(r.OldestInFlight), lim.MaxInFlightAge)
		}
		if lim.MaxDueAhead > 0 && r.LatestDue.After(st.At.Add(lim.MaxDueAhead)) {
			add("due_far_ahead", "a row is due %s, more than %s ahead: was At or Delay given a wrong time?", r.LatestDue.UTC().Format(time.RFC3339), lim.MaxDueAhead)
		}
	}
	for _, q := range st.Queues {
		if waiting := q.Pending + q.Active + q.Scheduled + q.Retry; waiting > 0 && !q.Served {
			out = append(out, Problem{Kind: "queue_unserved", Queue: q.Queue, Detail: fmt.Sprintf(
				"%s (pending %d, scheduled %d, retry %d) and no worker serves it", Count(waiting, "task"), q.Pending, q.Scheduled, q.Retry)})
		}
		if q.UnknownReceiver > 0 {
			out = append(out, Problem{Kind: "unknown_receiver", Queue: q.Queue, Detail: fmt.Sprintf(
				"%s failed because the worker did not know their signal or receiver: deploy a worker that connects it", Count(q.UnknownReceiver, "retrying task"))})
		}
	}
	return out
}

// Count prints n nouns: "1 task", "2 tasks".
func Count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// Age prints a duration for a human: "-" for none, to the millisecond
// under a second, whole seconds from one second on.
func Age(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

package signalstest

import (
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/store"
)

func TestUnfinishedReport(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	id := func(n byte) [16]byte { return [16]byte{15: n} }
	row := func(n byte) store.Row {
		return store.Row{ID: id(n), Signal: "user.signed_up", Receiver: "welcome", Queue: "default"}
	}
	task := func(n byte, state asynq.TaskState) *asynq.TaskInfo {
		return &asynq.TaskInfo{ID: ulid.ULID(id(n)).String(), Queue: "mail", Type: "signals:user.signed_up:welcome", State: state}
	}
	lastErr := "enqueue: connection refused"
	failing := row(1)
	failing.Attempts, failing.LastError = 3, &lastErr
	retrying := task(2, asynq.TaskStateRetry)
	retrying.Retried, retrying.MaxRetry = 2, 5
	retrying.LastErr = "panic: boom\ngoroutine 1 [running]:\nmain.main()"
	retrying.NextProcessAt = now.Add(90 * time.Second)
	scheduled := task(3, asynq.TaskStateScheduled)
	scheduled.NextProcessAt = now.Add(time.Hour)
	long := task(4, asynq.TaskStateRetry)
	long.LastErr = strings.Repeat("x", 300)

	for _, tc := range []struct {
		name     string
		left     unfinished
		want     []string // lines, or parts of lines, in order
		notWant  []string
		maxLines int
	}{
		{
			name: "nothing left",
			left: unfinished{},
			want: []string{`signalstest: Drain: the registry's work (schema "s") not done within 3s; none is left now`},
		},
		{
			name: "rows",
			left: unfinished{rows: 9, someRows: []store.Row{failing, row(5)}},
			want: []string{
				"; still waiting for:",
				`  outbox of schema "s": 9 row(s) whose receivers have not succeeded`,
				`    task ` + ulid.ULID(id(1)).String() + `: signal "user.signed_up", receiver "welcome", queue "default", not enqueued yet, 3 failed enqueue(s), last error: enqueue: connection refused`,
				`    task ` + ulid.ULID(id(5)).String() + `: signal "user.signed_up", receiver "welcome", queue "default", not enqueued yet`,
				"    and 7 more",
			},
			notWant: []string{"task(s) in Redis"},
		},
		{
			name: "tasks",
			left: unfinished{tasks: []*asynq.TaskInfo{
				retrying, scheduled, task(5, asynq.TaskStatePending), task(6, asynq.TaskStateActive), long, task(7, asynq.TaskStatePending), task(8, asynq.TaskStatePending),
			}},
			want: []string{
				"  7 task(s) in Redis:",
				`    queue "mail", retry: task ` + retrying.ID + `: signal "user.signed_up", receiver "welcome", retried 2 of 5 times, next in 1m30s, last error: panic: boom`,
				`    queue "mail", scheduled: task ` + scheduled.ID + `: signal "user.signed_up", receiver "welcome", due in 1h0m0s`,
				`    queue "mail", pending: task ` + task(5, 0).ID,
				`    queue "mail", active: task ` + task(6, 0).ID,
				"last error: " + strings.Repeat("x", 200) + "…",
				"    and 2 more",
				"give them short Backoff and MaxRetries",
			},
			notWant:  []string{"goroutine", "outbox of schema", task(7, 0).ID, strings.Repeat("x", 201)},
			maxLines: 12,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := tc.left.report("s", 3*time.Second, now)
			rest := got
			for _, want := range tc.want {
				i := strings.Index(rest, want)
				require.GreaterOrEqual(t, i, 0, "want %q after the text before it in:\n%s", want, got)
				rest = rest[i+len(want):]
			}
			for _, notWant := range tc.notWant {
				require.NotContains(t, got, notWant)
			}
			if tc.maxLines > 0 {
				require.LessOrEqual(t, strings.Count(got, "\n")+1, tc.maxLines, got)
			}
		})
	}
}

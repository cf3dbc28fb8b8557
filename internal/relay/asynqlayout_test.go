package relay

import (
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

// TestAsynqLayout checks what asynqlayout.go assumes of asynq's private
// storage against the asynq in go.mod: a task's hash and its "state" field
// as a task goes pending, completed and archived, and the error a task's
// archive keeps. When asynq is upgraded, this test says whether repair
// still reads Redis right; it names the version it was written for.
func TestAsynqLayout(t *testing.T) {
	t.Parallel()
	gomod, err := os.ReadFile("../../go.mod")
	require.NoError(t, err)
	require.Regexp(t, regexp.MustCompile(`github.com/hibiken/asynq v0\.26\.0\b`), string(gomod),
		"asynqlayout.go was written for asynq v0.26.0: check its key layout and states against the new version, then update this line")

	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr()})
	t.Cleanup(func() { _ = rc.Close() })
	queue := testenv.Queue(t)
	client := asynq.NewClientFromRedisClient(rc)
	enqueue := func() string {
		t.Helper()
		id := ulid.Make().String()
		_, err := client.EnqueueContext(t.Context(), asynq.NewTask("layout:test", nil), asynq.TaskID(id), asynq.Queue(queue), asynq.Retention(time.Hour))
		require.NoError(t, err)
		return id
	}
	states := func(ids ...string) []taskState {
		t.Helper()
		queues := make([]string, len(ids))
		for i := range ids {
			queues[i] = queue
		}
		got, err := taskStates(t.Context(), rc, queues, ids)
		require.NoError(t, err)
		return got
	}

	pending, completed, archived := enqueue(), enqueue(), enqueue()
	insp := asynq.NewInspectorFromRedisClient(rc)
	require.NoError(t, insp.ArchiveTask(queue, archived))
	// A server runs completed's task (and pending's, which the test then
	// puts back): the only way to reach "completed" through asynq itself.
	done := make(chan string, 2)
	srv := asynq.NewServerFromRedisClient(rc, asynq.Config{Queues: map[string]int{queue: 1}, Concurrency: 1, LogLevel: asynq.FatalLevel})
	require.NoError(t, srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		done <- id
		return nil
	})))
	for range 2 {
		<-done
	}
	srv.Shutdown()
	_ = pending
	require.Equal(t, []taskState{stateCompleted, stateCompleted, stateArchived, ""}, states(pending, completed, archived, ulid.Make().String()),
		"completed and archived tasks keep their hash with that state; a task Redis lacks has none")
	fresh := enqueue()
	require.Equal(t, []taskState{"pending"}, states(fresh), "a queued task's state is neither completed nor archived: repair leaves it alone")
	require.Contains(t, archivedError(rc, queue, archived), "archived by asynq", "an archived task without an error reads as such")
}

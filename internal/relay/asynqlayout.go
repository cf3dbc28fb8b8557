package relay

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// What the relay reads of asynq's private storage in Redis, all here:
// asynq v0.26 keeps each task in a hash, asynq:{<queue>}:t:<task id>, whose
// "state" field says where the task is. Repair reads it for a batch of rows
// in one pipelined round trip, which asynq's Inspector cannot do.
// TestAsynqLayout fails when the asynq in go.mod keeps tasks otherwise.

// Task states as asynq keeps them in the "state" field.
const (
	stateCompleted = "completed"
	stateArchived  = "archived"
)

// leaseExpired is in the error asynq archives a task with when the worker
// running it stopped renewing its lease.
const leaseExpired = "lease expired"

func taskKey(queue, taskID string) string { return "asynq:{" + queue + "}:t:" + taskID }

// taskState is where one task is, as asynq keeps it; "" when Redis does not
// hold the task.
type taskState string

// taskStates reads the states of the tasks, in one round trip.
func taskStates(ctx context.Context, rc redis.UniversalClient, queues, taskIDs []string) ([]taskState, error) {
	cmds := make([]*redis.StringCmd, len(taskIDs))
	_, err := rc.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range taskIDs {
			cmds[i] = p.HGet(ctx, taskKey(queues[i], taskIDs[i]), "state")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read task states from redis: %w", err)
	}
	out := make([]taskState, len(cmds))
	for i, c := range cmds {
		state, err := c.Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, fmt.Errorf("read task state from redis: %w", err)
		default:
			out[i] = taskState(state)
		}
	}
	return out, nil
}

// archivedError is the error asynq archived a task with, for its dead
// letter: the worker that archived it could not record it itself.
func archivedError(rc redis.UniversalClient, queue, taskID string) string {
	info, err := asynq.NewInspectorFromRedisClient(rc).GetTaskInfo(queue, taskID)
	if err != nil || info.LastErr == "" {
		return "archived by asynq; its error could not be read"
	}
	return info.LastErr
}

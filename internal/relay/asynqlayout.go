package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// What the relay reads and writes of asynq's private storage in Redis, all
// here. asynq v0.26 keeps each task in a hash, asynq:{<queue>}:t:<task id>,
// whose "state" field says where the task is: repair reads it for a batch
// of rows in one pipelined round trip, which asynq's Inspector cannot do.
// A running task's ID is in the queue's active list and, scored by the Unix
// second its lease ends, in its lease set, which the worker's heartbeat
// pushes 30 s ahead every 5 s: a lease that ended means the worker died or
// lost Redis, and asynq's recoverer takes such a task back only 30 s to 90
// s later, where requeueExpired takes it back within a second.
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

func queueKey(queue, name string) string { return "asynq:{" + queue + "}:" + name }

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

// maxLeaseRequeues bounds how often requeueExpired takes one task back: a
// task whose run kills its worker each time is then left to asynq's
// recoverer, which counts each lease expiry as a failed attempt, so that it
// ends dead rather than crashing workers for ever.
const maxLeaseRequeues = 3

// requeueExpiredScript moves up to ARGV[2] tasks whose lease ended before
// ARGV[1] (a Unix second) from the active list (KEYS[2]) and the lease set
// (KEYS[1]) back to the head of the pending list (KEYS[3]), as asynq's own
// requeue on shutdown does, at most ARGV[4] times per task (counted in the
// task's hash). A task without its hash is only taken off the active list:
// repair sends its row again. In one script, so that asynq's recoverer and
// other relays never take the same task back twice. It returns the IDs it
// moved to pending.
var requeueExpiredScript = redis.NewScript(`
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[2]))
local moved = {}
for _, id in ipairs(ids) do
    local key = ARGV[3] .. id
    if redis.call("EXISTS", key) == 0 then
        redis.call("ZREM", KEYS[1], id)
        redis.call("LREM", KEYS[2], 0, id)
    elseif tonumber(redis.call("HGET", key, "signals_lease_requeues") or "0") < tonumber(ARGV[4]) then
        redis.call("ZREM", KEYS[1], id)
        redis.call("LREM", KEYS[2], 0, id)
        redis.call("RPUSH", KEYS[3], id)
        redis.call("HSET", key, "state", "pending")
        redis.call("HINCRBY", key, "signals_lease_requeues", 1)
        table.insert(moved, id)
    end
end
return moved`)

// requeueExpired takes back, into queue's pending list, up to limit tasks
// whose lease ended before cutoff, and returns their IDs.
func requeueExpired(ctx context.Context, rc redis.UniversalClient, queue string, cutoff time.Time, limit int) ([]string, error) {
	keys := []string{queueKey(queue, "lease"), queueKey(queue, "active"), queueKey(queue, "pending")}
	ids, err := requeueExpiredScript.Run(ctx, rc, keys, cutoff.Unix(), limit, taskKey(queue, ""), maxLeaseRequeues).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("take back the tasks of queue %s whose lease ended: %w", queue, err)
	}
	return ids, nil
}

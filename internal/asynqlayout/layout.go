// Package asynqlayout holds everything dj-signals reads or writes of
// asynq's private storage in Redis: the relay's repair reads task states,
// the relay takes back the tasks of a worker that died, and the worker
// watches the leases of its own runs. TestAsynqLayout fails when the asynq
// in go.mod keeps tasks otherwise.
package asynqlayout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// asynq v0.26 keeps each task in a hash, asynq:{<queue>}:t:<task id>, whose
// "state" field says where the task is: repair reads it for a batch of rows
// in one pipelined round trip, which asynq's Inspector cannot do. A running
// task's ID is in the queue's active list and, scored by the Unix second
// its lease ends, in its lease set, which the worker's heartbeat pushes
// LeaseDuration ahead every HeartbeatInterval: a lease not renewed for
// longer than that means the worker died or lost Redis. asynq's recoverer
// takes such a task back only 30 s to 90 s after its lease ended, where the
// relay takes it back as soon as the lease has gone unrenewed for its
// Dispatcher's RecoverAfter (RequeueStale).

// Task states as asynq keeps them in the "state" field.
const (
	StateCompleted TaskState = "completed"
	StateArchived  TaskState = "archived"
)

// LeaseExpired is in the error asynq archives a task with when the worker
// running it stopped renewing its lease.
const LeaseExpired = "lease expired"

// LeaseDuration is how far ahead of each renewal asynq sets a running
// task's lease; HeartbeatInterval is how often a live worker renews it.
const (
	LeaseDuration     = 30 * time.Second
	HeartbeatInterval = 5 * time.Second
)

// TaskKey is the key of the hash asynq keeps a task in.
func TaskKey(queue, taskID string) string { return "asynq:{" + queue + "}:t:" + taskID }

// QueueKey is the key of one of a queue's lists and sets: "pending",
// "active", "lease", ...
func QueueKey(queue, name string) string { return "asynq:{" + queue + "}:" + name }

// TaskState is where one task is, as asynq keeps it; "" when Redis does not
// hold the task.
type TaskState string

// TaskStates reads the states of the tasks, in one round trip.
func TaskStates(ctx context.Context, rc redis.UniversalClient, queues, taskIDs []string) ([]TaskState, error) {
	cmds := make([]*redis.StringCmd, len(taskIDs))
	_, err := rc.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range taskIDs {
			cmds[i] = p.HGet(ctx, TaskKey(queues[i], taskIDs[i]), "state")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read task states from redis: %w", err)
	}
	out := make([]TaskState, len(cmds))
	for i, c := range cmds {
		state, err := c.Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, fmt.Errorf("read task state from redis: %w", err)
		default:
			out[i] = TaskState(state)
		}
	}
	return out, nil
}

// ArchivedError is the error asynq archived a task with, for its dead
// letter: the worker that archived it could not record it itself.
func ArchivedError(rc redis.UniversalClient, queue, taskID string) string {
	info, err := asynq.NewInspectorFromRedisClient(rc).GetTaskInfo(queue, taskID)
	if err != nil || info.LastErr == "" {
		return "archived by asynq; its error could not be read"
	}
	return info.LastErr
}

// MaxLeaseRequeues bounds how often RequeueStale takes one task back: a
// task whose run kills its worker each time is then left to asynq's
// recoverer, which counts each lease expiry as a failed attempt, so that it
// ends dead rather than crashing workers for ever.
const MaxLeaseRequeues = 3

// requeueStaleScript moves up to ARGV[2] tasks whose lease ends at or
// before ARGV[1] (a Unix second) from the active list (KEYS[2]) and the
// lease set (KEYS[1]) back to the head of the pending list (KEYS[3]), as
// asynq's own requeue on shutdown does, at most ARGV[4] times per task
// (counted in the task's hash). A task without its hash is only taken off
// the active list: repair sends its row again. In one script, so that
// asynq's recoverer and other relays never take the same task back twice.
// It returns the IDs it moved to pending.
var requeueStaleScript = redis.NewScript(`
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

// RequeueStale takes back, into queue's pending list, up to limit running
// tasks whose lease was last renewed at least unrenewed ago, and returns
// their IDs. The lease's score is a whole second, so a task is taken back
// only when a second more has passed: never before its worker's last
// renewal is unrenewed old.
func RequeueStale(ctx context.Context, rc redis.UniversalClient, queue string, unrenewed time.Duration, limit int) ([]string, error) {
	keys := []string{QueueKey(queue, "lease"), QueueKey(queue, "active"), QueueKey(queue, "pending")}
	ids, err := requeueStaleScript.Run(ctx, rc, keys, leaseCutoff(time.Now(), unrenewed), limit, TaskKey(queue, ""), MaxLeaseRequeues).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("take back the tasks of queue %s whose worker stopped renewing their lease: %w", queue, err)
	}
	return ids, nil
}

// leaseCutoff is the highest lease score (a Unix second, rounded down from
// renewal + LeaseDuration) whose renewal was at least unrenewed before now.
func leaseCutoff(now time.Time, unrenewed time.Duration) int64 {
	return now.Add(LeaseDuration-unrenewed).Unix() - 1
}

// LeaseScores reads the lease of each running task (ids[i] in queues[i])
// in one round trip: when its lease ends, or the zero time when the lease
// set does not hold it (the task finished, was taken back, or Redis lost
// its data).
func LeaseScores(ctx context.Context, rc redis.UniversalClient, queues, ids []string) ([]time.Time, error) {
	cmds := make([]*redis.FloatCmd, len(ids))
	_, err := rc.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range ids {
			cmds[i] = p.ZScore(ctx, QueueKey(queues[i], "lease"), ids[i])
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read the leases of running tasks: %w", err)
	}
	out := make([]time.Time, len(ids))
	for i, c := range cmds {
		score, err := c.Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, fmt.Errorf("read the lease of task %s: %w", ids[i], err)
		default:
			out[i] = time.Unix(int64(score), 0)
		}
	}
	return out, nil
}

// Active reports whether the task is in its queue's active list: a worker
// runs it.
func Active(ctx context.Context, rc redis.UniversalClient, queue, taskID string) (bool, error) {
	_, err := rc.LPos(ctx, QueueKey(queue, "active"), taskID, redis.LPosArgs{}).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read whether task %s runs: %w", taskID, err)
	}
	return true, nil
}

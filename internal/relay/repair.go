package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/store"
)

// marker is a key the relays of one ledger keep in Redis. Redis that lost
// its data (flushed, restarted empty, failed over to a replica that never
// had it) has lost the marker too, which tells every enqueued row may have
// lost its task. The key is named after the ledger's ID, so applications
// sharing one Redis each keep their own.
type marker struct {
	redis redis.UniversalClient
	key   string
}

func newMarker(rc redis.UniversalClient, ledgerID [16]byte) *marker {
	return &marker{redis: rc, key: "signals:ledger:" + ulid.ULID(ledgerID).String()}
}

// value returns the marker's value, "" when it is gone.
func (m *marker) value(ctx context.Context) (string, error) {
	v, err := m.redis.Get(ctx, m.key).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// renew sets a fresh marker unless another relay just did, and reports
// whether this call set it: the relay that sets it repairs.
func (m *marker) renew(ctx context.Context) (bool, error) {
	return m.redis.SetNX(ctx, m.key, ulid.Make().String(), 0).Result()
}

// markerValue returns the marker's value, first renewing it (and repairing,
// see checkMarker) if it is gone.
func (r *Relay) markerValue(ctx context.Context) (string, error) {
	v, err := r.marker.value(ctx)
	if err == nil && v == "" {
		if err = r.checkMarker(ctx); err == nil {
			v, err = r.marker.value(ctx)
		}
	}
	if err != nil {
		return "", fmt.Errorf("read the ledger's marker in redis: %w", err)
	}
	return v, nil
}

// checkMarker renews a missing marker and, if this relay renewed it, makes
// every enqueued row pending again, so the relay sends them all anew under
// their task IDs (Redis turns away any it still has as a duplicate).
func (r *Relay) checkMarker(ctx context.Context) error {
	v, err := r.marker.value(ctx)
	if err != nil || v != "" {
		return err
	}
	// The clock went with the marker: its history tells nothing now, and
	// the relay that renews the marker sends every enqueued row again.
	r.ticks = r.ticks[:0]
	mine, err := r.marker.renew(ctx)
	if err != nil || !mine {
		return err
	}
	total, err := r.resetInChunks(ctx, func(tx pgx.Tx) (int64, error) {
		return r.queries.ResetEnqueued(ctx, tx, r.cfg.BatchSize)
	})
	if err != nil {
		return fmt.Errorf("make enqueued rows pending after redis lost its data: %w", err)
	}
	// asynq's client remembers which queues it registered; a Redis that
	// lost them needs a client that registers them again.
	r.client = newClient(r.redis)
	if total > 0 {
		r.cfg.Logger.Warn("signals: redis lost its data (the ledger's marker key is gone); sending every enqueued row again",
			"rows", total, "marker", r.marker.key)
	}
	return nil
}

// resetInChunks runs reset, which makes up to BatchSize enqueued rows
// pending again, one transaction at a time until it finds fewer, and
// reports how many rows it made pending.
func (r *Relay) resetInChunks(ctx context.Context, reset func(pgx.Tx) (int64, error)) (int64, error) {
	var total int64
	for {
		var n int64
		err := pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) (err error) {
			n, err = reset(tx)
			return err
		})
		total += n
		if err != nil || n < int64(r.cfg.BatchSize) {
			return total, err
		}
	}
}

// Task states as asynq v0.26 keeps them in the "state" field of the task's
// hash, asynq:{<queue>}:t:<task id>.
const (
	stateCompleted = "completed"
	stateArchived  = "archived"
)

// leaseExpired is in the error asynq archives a task with when the worker
// running it stopped renewing its lease.
const leaseExpired = "lease expired"

func taskKey(queue, taskID string) string { return "asynq:{" + queue + "}:t:" + taskID }

// repair checks up to one batch of rows enqueued longer than RepairAge ago
// against Redis, with one pipelined round trip: a task still there is left
// alone, a completed one acked, an archived one buried, a missing one made
// pending again. Rows are claimed with SKIP LOCKED, so relays repairing at
// once never check the same row. It reports how many rows it checked.
func (r *Relay) repair(ctx context.Context) (int, error) {
	tx, err := r.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin repair transaction: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit

	stale, err := r.queries.ClaimStale(ctx, tx, r.cfg.RepairAge, r.cfg.BatchSize)
	if err != nil || len(stale) == 0 {
		return 0, err
	}
	states := make([]*redis.StringCmd, len(stale))
	_, err = r.redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range stale {
			states[i] = p.HGet(ctx, taskKey(s.Queue, envelope.TaskID(ulid.ULID(s.ID), s.Generation)), "state")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("read task states from redis: %w", err)
	}

	var alive, missing, completed, crashed [][16]byte
	var archived []store.Burial
	for i, s := range stale {
		state, err := states[i].Result()
		switch {
		case errors.Is(err, redis.Nil):
			missing = append(missing, s.ID)
		case err != nil:
			return 0, fmt.Errorf("read task state from redis: %w", err)
		case state == stateCompleted:
			completed = append(completed, s.ID)
		case state == stateArchived:
			// A worker that died mid-run leaves its task to asynq's lease
			// expiry, which counts as a failed attempt and archives a task
			// without retries left: a crash, not a receiver's failure, so
			// the receiver gets its run.
			if msg := r.archivedError(s); strings.Contains(msg, leaseExpired) {
				crashed = append(crashed, s.ID)
			} else {
				archived = append(archived, store.Burial{ID: s.ID, Reason: store.ReasonArchived, Error: msg, Attempts: s.Attempts})
			}
		default:
			alive = append(alive, s.ID)
		}
	}
	for _, step := range []struct {
		ids [][16]byte
		run func(context.Context, store.Executor, [][16]byte) error
	}{{alive, r.queries.Touch}, {missing, r.queries.Reset}, {completed, r.queries.Delete}, {crashed, r.queries.Reissue}} {
		if len(step.ids) > 0 {
			if err := step.run(ctx, tx, step.ids); err != nil {
				return 0, fmt.Errorf("record repair: %w", err)
			}
		}
	}
	if len(archived) > 0 {
		if _, err := r.queries.Bury(ctx, tx, archived); err != nil {
			return 0, fmt.Errorf("bury archived rows: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit repair: %w", err)
	}
	if len(missing) > 0 {
		// Redis lost tasks, and may have lost asynq's list of queues with
		// them (on a cluster it lives on one node): a fresh client lists
		// each queue again on its first enqueue, for Stats and asynqmon.
		r.client = newClient(r.redis)
	}
	if len(missing)+len(completed)+len(archived)+len(crashed) > 0 {
		r.cfg.Logger.Warn("signals: repaired enqueued rows whose tasks redis no longer held as running or queued",
			"sent_again_lost", len(missing), "sent_again_after_worker_crash", len(crashed),
			"acked_completed", len(completed), "buried_archived", len(archived))
	}
	return len(stale), nil
}

// archivedError is the error asynq archived a task with, for its dead
// letter: the worker that archived it could not record it itself.
func (r *Relay) archivedError(s store.Stale) string {
	info, err := asynq.NewInspectorFromRedisClient(r.redis).GetTaskInfo(s.Queue, envelope.TaskID(ulid.ULID(s.ID), s.Generation))
	if err != nil || info.LastErr == "" {
		return "archived by asynq; its error could not be read"
	}
	return info.LastErr
}

package relay

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/asynqlayout"
	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/store"
)

// horizon remembers when this relay saw which covered snapshots of the
// position, so that repair can tell the rows without a key enqueued at
// least RepairAge ago: those whose transactions a covered snapshot seen
// that long ago sees.
type horizon struct {
	seen []seenAt // oldest first, one per tickEvery at most
}

type seenAt struct {
	at      time.Time
	covered string
}

// saw records the covered snapshot of a position read now.
func (h *horizon) saw(covered string) {
	now := time.Now()
	if n := len(h.seen); n > 0 {
		switch {
		case snapshotXmax(covered) < snapshotXmax(h.seen[n-1].covered):
			h.forget() // the position went back: what it covered is going out again
		case now.Sub(h.seen[n-1].at) < tickEvery:
			return // keeping the older reading only makes repair later
		}
	}
	h.seen = append(h.seen, seenAt{at: now, covered: covered})
}

// before returns the newest covered snapshot seen at least age ago, ""
// when none was, and forgets the readings older than it.
func (h *horizon) before(age time.Duration) string {
	cut := time.Now().Add(-age)
	i := 0
	for i < len(h.seen) && !h.seen[i].at.After(cut) {
		i++
	}
	if i == 0 {
		return ""
	}
	h.seen = h.seen[i-1:]
	return h.seen[0].covered
}

func (h *horizon) forget() { h.seen = h.seen[:0] }

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

	stale, err := r.queries.ClaimStale(ctx, tx, r.repairHorizon.before(r.cfg.RepairAge), r.cfg.RepairAge, r.cfg.BatchSize)
	if err != nil || len(stale) == 0 {
		return 0, err
	}
	queues := make([]string, len(stale))
	taskIDs := make([]string, len(stale))
	for i, s := range stale {
		queues[i], taskIDs[i] = s.Queue, envelope.TaskID(ulid.ULID(s.ID), s.Generation)
	}
	states, err := asynqlayout.TaskStates(ctx, r.redis, queues, taskIDs)
	if err != nil {
		return 0, err
	}

	var alive, missing, completed, crashed []store.Ref
	var archived []store.Burial
	for i, s := range stale {
		switch states[i] {
		case "":
			missing = append(missing, s.Ref)
		case asynqlayout.StateCompleted:
			completed = append(completed, s.Ref)
		case asynqlayout.StateArchived:
			// A worker that died mid-run leaves its task to asynq's lease
			// expiry, which counts as a failed attempt and archives a task
			// without retries left: a crash, not a receiver's failure, so
			// the receiver gets its run.
			if msg := asynqlayout.ArchivedError(r.redis, queues[i], taskIDs[i]); strings.Contains(msg, asynqlayout.LeaseExpired) {
				crashed = append(crashed, s.Ref)
			} else {
				archived = append(archived, store.Burial{Ref: s.Ref, Reason: store.ReasonArchived, Error: msg, Attempts: s.Attempts})
			}
		default:
			alive = append(alive, s.Ref)
		}
	}
	for _, step := range []struct {
		refs []store.Ref
		run  func(context.Context, store.Executor, []store.Ref) error
	}{{alive, r.queries.Touch}, {missing, r.queries.Resend}, {completed, r.queries.Delete}, {crashed, r.queries.Reissue}} {
		if len(step.refs) > 0 {
			if err := step.run(ctx, tx, step.refs); err != nil {
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
	deleteArchived(r.redis, queues, taskIDs, states)
	if len(missing) > 0 {
		// Redis lost tasks, and may have lost asynq's list of queues with
		// them (on a cluster it lives on one node).
		r.renewClient()
	}
	if len(missing)+len(completed)+len(archived)+len(crashed) > 0 {
		r.cfg.Logger.Warn("signals: repaired enqueued rows whose tasks redis no longer held as running or queued",
			"sent_again_lost", len(missing), "sent_again_after_worker_crash", len(crashed),
			"acked_completed", len(completed), "buried_archived", len(archived))
	}
	return len(stale), nil
}

// deleteArchived removes the archived ones of the tasks from asynq's
// archive once repair has committed what they stood for: a dead letter, or
// a new generation's task. Left there they would read as trouble in the
// queues' counts and in asynqmon. It is best effort: a task left behind is
// noise, not work, since its row has moved on.
func deleteArchived(rc redis.UniversalClient, queues, taskIDs []string, states []asynqlayout.TaskState) {
	var insp *asynq.Inspector
	for i, s := range states {
		if s != asynqlayout.StateArchived {
			continue
		}
		if insp == nil {
			insp = asynq.NewInspectorFromRedisClient(rc)
		}
		_ = insp.DeleteTask(queues[i], taskIDs[i])
	}
}

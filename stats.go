package signals

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/relay"
	"github.com/dj-signals/signals/internal/store"
)

// Stats is a snapshot of the pipeline: what the ledger holds per receiver
// and what the asynq queues hold, for dashboards, alerts and the signals
// command's status.
type Stats struct {
	// At is when the snapshot was taken.
	At time.Time
	// Receivers has one entry per signal and receiver connected in the
	// registry or with any row pending, in flight or dead, sorted by signal
	// then receiver: a receiver with nothing to do reads zero rather than
	// missing.
	Receivers []ReceiverStats
	// Queues has one entry per asynq queue that a live row or the registry
	// addresses, sorted by name.
	Queues []QueueStats
}

// ReceiverStats is one receiver's share of the ledger.
type ReceiverStats struct {
	// Signal and Receiver name it.
	Signal, Receiver string
	// Pending rows are committed and wait for a Dispatcher to enqueue them.
	Pending int
	// InFlight rows are enqueued; their receivers have not succeeded yet.
	InFlight int
	// Dead rows failed for good; see Ledger.DeadLetters.
	Dead int
	// OldestPending is how long ago the oldest pending row was sent; zero
	// when none is pending. A growing value means no Dispatcher keeps up.
	OldestPending time.Duration
	// OldestInFlight is how long ago the oldest in-flight row was sent;
	// zero when none is. A value growing past the receiver's retries means
	// its receiver keeps failing or no worker serves its queue.
	OldestInFlight time.Duration
	// LatestDue is the latest delivery time a live row asked for with At;
	// zero when none did. A date years away is work nobody will see done
	// soon.
	LatestDue time.Time
	// HeldKeys counts the receiver's ordering keys ([OrderBy]) whose later
	// events wait behind an earlier one: in a flowing stream a few, briefly;
	// a count that stays up means failing events hold their keys while
	// they retry.
	HeldKeys int
}

// QueueStats is one asynq queue's state in Redis.
type QueueStats struct {
	// Queue names it.
	Queue string
	// Pending, Active, Scheduled, Retry, Archived and Completed are asynq's
	// counts of the queue's tasks in each state.
	Pending, Active, Scheduled, Retry, Archived, Completed int
	// Served reports whether a running asynq server (a Worker) serves the
	// queue. Tasks in a queue nobody serves wait forever.
	Served bool
	// UnknownReceiver counts retrying tasks whose last run failed because
	// the worker did not know their signal or receiver (among the first
	// statsRetryScan retrying tasks).
	UnknownReceiver int
}

// statsRetryScan bounds how many retrying tasks per queue Stats reads to
// count those failing for an unknown receiver.
const statsRetryScan = 1000

// Stats takes a snapshot of the ledger and of the queues in Redis. It reads
// the outbox (which holds only what is not done yet) and the dead letters
// once each, in one read-only REPEATABLE READ transaction, and makes a few
// Redis calls per queue. A Redis that cannot be reached leaves Queues empty,
// counts every row not done yet as pending, and is returned as an error
// along with the ledger's figures.
func (l *Ledger) Stats(ctx context.Context) (Stats, error) {
	st := Stats{At: time.Now()}
	pos, redisErr := l.position(ctx)
	var rows []store.ReceiverStats
	var queues []string
	err := pgx.BeginFunc(ctx, l.db, func(tx pgx.Tx) (err error) {
		rows, queues, err = l.reg.queries.Stats(ctx, tx, pos)
		return err
	})
	if err != nil {
		return st, fmt.Errorf("signals: read the ledger's stats: %w", l.reg.explain(err))
	}
	seen := map[[2]string]bool{}
	for _, r := range rows {
		rs := ReceiverStats{
			Signal: r.Signal, Receiver: r.Receiver,
			Pending: int(r.Pending), InFlight: int(r.InFlight), Dead: int(r.Dead), HeldKeys: int(r.HeldKeys),
		}
		if r.OldestPending != nil {
			rs.OldestPending = max(st.At.Sub(time.UnixMilli(int64(ulid.ULID(*r.OldestPending).Time()))), 0)
		}
		if r.OldestInFlight != nil {
			rs.OldestInFlight = max(st.At.Sub(time.UnixMilli(int64(ulid.ULID(*r.OldestInFlight).Time()))), 0)
		}
		if r.LatestProcessAt != nil {
			rs.LatestDue = *r.LatestProcessAt
		}
		st.Receivers = append(st.Receivers, rs)
		seen[[2]string{r.Signal, r.Receiver}] = true
	}
	for _, k := range l.reg.connected() {
		if !seen[k] {
			st.Receivers = append(st.Receivers, ReceiverStats{Signal: k[0], Receiver: k[1]})
		}
	}
	sort.Slice(st.Receivers, func(i, j int) bool {
		a, b := st.Receivers[i], st.Receivers[j]
		return a.Signal < b.Signal || a.Signal == b.Signal && a.Receiver < b.Receiver
	})
	if redisErr != nil || l.redis == nil {
		return st, redisErr
	}
	st.Queues, err = l.queueStats(append(queues, l.reg.Queues()...))
	if err != nil {
		return st, fmt.Errorf("signals: read queue stats from redis: %w", err)
	}
	return st, nil
}

// position reads the Dispatchers' position from Redis: which rows without
// an ordering key are enqueued. Without Redis, none counts as enqueued.
func (l *Ledger) position(ctx context.Context) (store.Position, error) {
	if l.redis == nil {
		return store.Start, nil
	}
	var id [16]byte
	if err := pgx.BeginFunc(ctx, l.db, func(tx pgx.Tx) (err error) {
		id, err = l.reg.queries.LedgerID(ctx, tx)
		return err
	}); err != nil {
		return store.Start, fmt.Errorf("signals: read the ledger's ID: %w", l.reg.explain(err))
	}
	rc, ok := l.redis.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return store.Start, fmt.Errorf("%w: %T does not make a go-redis client", ErrInvalidConfig, l.redis)
	}
	defer rc.Close()
	p, err := relay.ReadPosition(ctx, rc, id)
	if err != nil {
		return store.Start, fmt.Errorf("signals: %w", err)
	}
	return p, nil
}

// queueStats reads the named queues' state from Redis.
func (l *Ledger) queueStats(names []string) ([]QueueStats, error) {
	slices.Sort(names)
	names = slices.Compact(names)
	insp := asynq.NewInspector(l.redis)
	defer insp.Close()
	servers, err := insp.Servers()
	if err != nil {
		return nil, err
	}
	served := map[string]bool{}
	for _, s := range servers {
		for q := range s.Queues {
			served[q] = true
		}
	}
	// A queue no task has reached yet is not in Redis: it counts zero.
	known, err := insp.Queues()
	if err != nil {
		return nil, err
	}
	out := make([]QueueStats, 0, len(names))
	for _, name := range names {
		qs := QueueStats{Queue: name, Served: served[name]}
		if slices.Contains(known, name) {
			info, err := insp.GetQueueInfo(name)
			if err != nil {
				return nil, err
			}
			qs.Pending, qs.Active, qs.Scheduled = info.Pending, info.Active, info.Scheduled
			qs.Retry, qs.Archived, qs.Completed = info.Retry, info.Archived, info.Completed
		}
		if qs.Retry > 0 {
			tasks, err := insp.ListRetryTasks(name, asynq.PageSize(statsRetryScan))
			if err != nil {
				return nil, err
			}
			for _, t := range tasks {
				if strings.Contains(t.LastErr, errUnknownReceiver.Error()) {
					qs.UnknownReceiver++
				}
			}
		}
		out = append(out, qs)
	}
	return out, nil
}

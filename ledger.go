package signals

import (
	"context"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dj-signals/signals/internal/kithook"
	"github.com/dj-signals/signals/internal/store"
)

// Ledger is a registry's outbox as an operator sees it: what it holds, per
// receiver and queue ([Ledger.Stats]), the dead letters to list, requeue or
// discard, and the inbox of [Once] to prune. It reads and writes PostgreSQL through the db it is
// given, never closed; only Stats reads Redis. Dispatchers and Workers
// change the same rows, each through the transitions the ledger's rows go
// through (pending → enqueued → done; → dead → pending again). A Ledger is
// safe for concurrent use.
type Ledger struct {
	reg   *Registry
	db    DB
	redis asynq.RedisConnOpt
}

// NewLedger returns the ledger of reg's outbox (its schema), read through
// db (a *pgxpool.Pool). redisOpt, which may be nil, is the Redis that
// Stats reads the queues and the Dispatchers' position from; without it,
// Stats reports no queues and counts every row not yet done as pending. It
// returns [ErrInvalidConfig] without a registry or a db.
func NewLedger(reg *Registry, db DB, redisOpt asynq.RedisConnOpt) (*Ledger, error) {
	if reg == nil || db == nil {
		return nil, fmt.Errorf("%w: NewLedger needs a registry (signals.DefaultRegistry for signals made with New) and a database pool", ErrInvalidConfig)
	}
	return &Ledger{reg: reg, db: db, redis: redisOpt}, nil
}

func init() {
	kithook.LedgerOf = func(ledger any) kithook.Ledger {
		l := ledger.(*Ledger)
		return kithook.Ledger{
			Queries: l.reg.queries, DB: l.db, Position: l.position,
			Payload: l.reg.readablePayload, Explain: l.reg.explain,
			DeadFilter: func(f any) (store.DeadFilter, error) { return f.(DeadFilter).storeFilter() },
		}
	}
}

// pruneChunk is how many inbox rows one PruneInbox transaction removes.
const pruneChunk = 10_000

// PruneInbox removes the inbox rows that [Once] recorded more than
// olderThan ago, in transactions of pruneChunk rows each, and returns how
// many it removed. Keep olderThan longer than an event can take to be
// delivered again (retries, a Redis that lost its data, a requeued dead
// letter): a delivery whose inbox row is gone applies its effects again.
// [Consume] needs no pruning.
func (l *Ledger) PruneInbox(ctx context.Context, olderThan time.Duration) (int, error) {
	if olderThan <= 0 {
		return 0, fmt.Errorf("%w: PruneInbox needs a positive age, got %v", ErrInvalidConfig, olderThan)
	}
	before := time.Now().Add(-olderThan)
	total := 0
	var after [16]byte
	for {
		n, last, err := l.reg.queries.PruneInbox(ctx, l.db, before, after, pruneChunk)
		total += int(n)
		after = last
		if err != nil {
			return total, fmt.Errorf("signals: prune the inbox: %w", l.reg.explain(err))
		}
		if n < pruneChunk {
			return total, nil
		}
	}
}

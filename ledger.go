package signals

import (
	"fmt"

	"github.com/hibiken/asynq"
)

// Ledger is a registry's outbox as an operator sees it: what it holds, per
// receiver and queue ([Ledger.Stats]), and the dead letters to list,
// requeue or discard. It reads and writes PostgreSQL through the db it is
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

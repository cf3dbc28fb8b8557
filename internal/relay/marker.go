package relay

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
)

// marker is a key the relays of one ledger keep in Redis. Redis that lost
// its data (flushed, restarted empty, failed over to a replica that never
// had it) has lost the marker too. The position went with it, so the rows
// without a key go out again by themselves (position.go); the keyed rows,
// which record their own enqueue, are made pending again by the relay that
// renews the marker. The key is named after the ledger's ID, so
// applications sharing one Redis each keep their own.
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

// renew sets a fresh marker unless another relay just did, and returns it
// if this call set it, "" otherwise: the relay that sets it repairs.
func (m *marker) renew(ctx context.Context) (string, error) {
	v := ulid.Make().String()
	set, err := m.redis.SetNX(ctx, m.key, v, 0).Result()
	if err != nil || !set {
		return "", err
	}
	return v, nil
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
// every enqueued keyed row pending again, so that it goes out anew under its
// task ID once any run of it has timed out (Redis turns away any task it
// still has as a duplicate).
func (r *Relay) checkMarker(ctx context.Context) error {
	v, err := r.marker.value(ctx)
	if err != nil || v != "" {
		return err
	}
	// The clock and the position went with the marker: their history tells
	// nothing now.
	r.ticks = r.ticks[:0]
	r.repairHorizon.forget()
	mine, err := r.marker.renew(ctx)
	if err != nil || mine == "" {
		return err
	}
	var lost bool
	if err := pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) (err error) {
		lost, err = r.queries.SetMarker(ctx, tx, mine)
		return err
	}); err != nil {
		return fmt.Errorf("record the ledger's marker: %w", err)
	}
	r.renewClient()
	if !lost {
		return nil // the ledger's first marker: nothing was enqueued before
	}
	keyed, err := r.resetInChunks(ctx, func(tx pgx.Tx) (int64, error) {
		return r.queries.ResetKeyed(ctx, tx, r.cfg.BatchSize)
	})
	if err != nil {
		return fmt.Errorf("make enqueued keyed rows pending after redis lost its data: %w", err)
	}
	var live int64
	if err := pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		c, err := r.queries.Count(ctx, tx)
		live = c.Live
		return err
	}); err != nil {
		return fmt.Errorf("count live rows after redis lost its data: %w", err)
	}
	r.cfg.Logger.Warn("signals: redis lost its data (the ledger's marker key is gone); sending every enqueued row again",
		"rows", live, "keyed_rows_waiting_out_their_timeout", keyed, "marker", r.marker.key)
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

package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// A Redis that failed over to a replica which had not received the latest
// writes keeps the ledger's marker (written long before) but has gone back
// in time: the tasks enqueued since the replica's last sync are gone. So
// the relays of a ledger INCR a clock key beside the marker after every
// batch's enqueues, and every markerEvery; each remembers which values it
// got when. Replication is ordered: a replica that lacks a batch's tasks
// lacks the INCR after them too, so once Redis hands out a value no
// greater than one this relay got before, it went back to before that
// moment, and the rows enqueued since go out again, within a second
// rather than after RepairAge.

// errRedisWentBack says the clock went back under a batch.
var errRedisWentBack = errors.New("redis went back in time while the batch enqueued (a failover to a replica that missed the latest writes?): its rows stay pending")

// tick is a value of the clock key and when this relay got it.
type tick struct {
	value int64
	at    time.Time
}

// tickEvery is the finest resolution the relay keeps of the clock: coarser
// ticks only make a rewind send a few more rows again.
const tickEvery = 100 * time.Millisecond

// clockKey is the ledger's clock, in the marker's hash slot (the marker's
// name as its hash tag), so that on a Redis Cluster the two are on one
// node: a node that loses its data loses both or neither, and a batch reads
// both in one round trip.
func (r *Relay) clockKey() string { return "{" + r.marker.key + "}:clock" }

// observeClock records value v of the clock, got at now, and reports
// whether Redis went back in time; if it did, rewindSince is when to send
// rows again from.
func (r *Relay) observeClock(v int64, now time.Time) bool {
	if n := len(r.ticks); n > 0 && v <= r.ticks[n-1].value {
		// Redis holds what it held when the clock was at v-1: rows
		// enqueued since this relay last got a value no greater than that
		// may be gone. A batch's rows are recorded with its start, up to
		// BatchTimeout before their enqueue.
		since := r.ticks[0].at
		for _, t := range r.ticks {
			if t.value <= v-1 {
				since = t.at
			}
		}
		since = since.Add(-r.cfg.BatchTimeout - tickEvery)
		if r.rewindSince.IsZero() || since.Before(r.rewindSince) {
			r.rewindSince = since
		}
		r.ticks = append(r.ticks[:0], tick{value: v, at: now})
		return true
	}
	// Rows enqueued longer than RepairAge ago are repair's anyway.
	drop := 0
	for drop < len(r.ticks) && now.Sub(r.ticks[drop].at) > r.cfg.RepairAge+r.cfg.BatchTimeout {
		drop++
	}
	r.ticks = r.ticks[drop:]
	if n := len(r.ticks); n > 0 && now.Sub(r.ticks[n-1].at) < tickEvery {
		r.ticks[n-1].value = v // keeping the older time only widens a rewind
	} else {
		r.ticks = append(r.ticks, tick{value: v, at: now})
	}
	return false
}

// checkClock advances the ledger's clock in Redis, then, if Redis went
// back in time (seen now or by a batch), makes the keyed rows enqueued
// since pending again. The rows without a key need nothing: the position
// went back with Redis, and they go out again from there.
func (r *Relay) checkClock(ctx context.Context) error {
	now := time.Now()
	v, err := r.redis.Incr(ctx, r.clockKey()).Result()
	if err != nil {
		return fmt.Errorf("advance the ledger's clock in redis: %w", err)
	}
	r.observeClock(v, now)
	if r.rewindSince.IsZero() {
		return nil
	}
	since := r.rewindSince
	total, err := r.resetInChunks(ctx, func(tx pgx.Tx) (int64, error) {
		return r.queries.ResetKeyedSince(ctx, tx, since, r.cfg.BatchSize)
	})
	if err != nil {
		return fmt.Errorf("make keyed rows enqueued since %v pending after redis went back in time: %w", since, err)
	}
	r.rewindSince = time.Time{}
	r.repairHorizon.forget()
	r.renewClient()
	r.cfg.Logger.Warn("signals: redis went back in time (a failover to a replica that missed the latest writes?); sending the rows enqueued since then again",
		"since", since, "clock", v, "keyed_rows_waiting_out_their_timeout", total)
	return nil
}

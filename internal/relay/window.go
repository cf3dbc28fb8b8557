package relay

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/dj-signals/signals/internal/store"
)

// windowBatch enqueues the next rows without an ordering key past the
// position (position.go), records the failures of those that could not go,
// and moves the position past every row it handled. It reads the rows in
// no transaction and writes nothing to PostgreSQL unless a row failed. It
// reports how many rows it read, and errPositionBusy when another relay was
// relaying. A batch that went on from a kept position that was no longer
// there (Redis lost its data, or went back in time) is taken again at once
// from the position Redis holds.
func (r *Relay) windowBatch(ctx context.Context) (int, error) {
	kept := r.kept != nil
	n, moved, err := r.windowOnce(ctx)
	if err == nil && !moved && kept {
		return r.windowBatch(ctx)
	}
	return n, err
}

// windowOnce is one try of windowBatch; it reports whether the position was
// still as the batch read it.
func (r *Relay) windowOnce(ctx context.Context) (int, bool, error) {
	h, err := r.takePosition(ctx)
	if err != nil {
		return 0, false, err
	}
	moved := false
	defer func() {
		if !moved {
			r.releasePosition(h)
		}
	}()
	r.repairHorizon.saw(h.pos.Covered)

	w, err := r.queries.Window(ctx, r.db, h.pos, r.cfg.BatchSize, r.cfg.BatchBytes)
	if err != nil {
		return 0, false, fmt.Errorf("read the outbox past the position: %w", err)
	}
	r.markResends(h.pos, w.Rows)
	s := r.send(ctx, w.Rows)
	if len(s.later)+len(s.dead) > 0 {
		if err := pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error { return r.record(ctx, tx, s) }); err != nil {
			return 0, false, err
		}
	}
	next := h.pos
	switch {
	case w.Upto == "": // no window was open and none is: the next read goes as far
	case s.handled == len(w.Rows) && w.Done:
		next = store.Position{Covered: w.Upto}
	case s.handled > 0:
		next = store.Position{Covered: h.pos.Covered, Upto: w.Upto, After: w.Rows[s.handled-1].Ref()}
	}
	moved = true // putPosition keeps or releases the lock, whatever it finds
	ok, err := r.putPosition(ctx, h, next, len(w.Rows) > 0)
	if err != nil {
		return 0, false, err
	}
	if !ok && len(w.Rows) > 0 {
		r.cfg.Logger.Debug("signals: the position moved under a batch; its rows go out again from where it is now", "rows", len(w.Rows))
	}
	n, err := r.done(s)
	return n, ok, err
}

// markResends counts an enqueue on each row that this relay's position
// passed before the position went back (Redis lost its data, or went back
// in time): middleware sees it sent again. The count is not recorded.
func (r *Relay) markResends(p store.Position, rows []store.Row) {
	xmax := snapshotXmax(p.Covered)
	if xmax >= r.passed {
		r.passed = xmax
		return
	}
	for i := range rows {
		if rows[i].XID < r.passed {
			rows[i].Enqueues++
		}
	}
}

// checkBehind starts the position over when the database is behind it:
// restored from a backup (the transaction IDs it hands out went back), or
// another cluster. No window past such a position would ever find a row.
func (r *Relay) checkBehind(ctx context.Context) error {
	next, err := r.queries.NextXID(ctx, r.db)
	if err != nil {
		return fmt.Errorf("read the database's next transaction ID: %w", err)
	}
	kept := r.kept != nil
	h, err := r.takePosition(ctx)
	if isBusy(err) {
		return nil // the relay that holds it checks too
	} else if err != nil {
		return err
	}
	if !ahead(h.pos, next) {
		if !kept {
			r.releasePosition(h)
		}
		return nil
	}
	r.cfg.Logger.Warn("signals: the position in redis is ahead of the database (restored from a backup?); sending every live row again",
		"position", h.pos.Covered, "next_xid", next)
	if err := r.restamp(ctx); err != nil {
		r.releasePosition(h)
		return err
	}
	_, err = r.putPosition(ctx, h, store.Start, false)
	return err
}

// ahead reports whether p was taken on a database whose next transaction
// ID was beyond next, the database's now.
func ahead(p store.Position, next uint64) bool {
	return snapshotXmax(p.Covered) > next || snapshotXmax(p.Upto) > next
}

// isBusy reports whether err only says another relay holds the position.
func isBusy(err error) bool { return errors.Is(err, errPositionBusy) }

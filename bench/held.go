package main

// The cost scenario's held transaction: events flow at a fixed rate for a
// while, once as they are and once while another session holds a
// transaction open the whole time (a transaction ID and its snapshot, as a
// long report or a stuck client does). The Dispatcher's window read keeps
// that transaction's events back and must not slow down for everyone
// else's: its cost is sampled every ten seconds from pg_stat_statements.

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dj-signals/signals"
)

const (
	heldRate  = 300              // events/s while the transaction is held
	heldSlice = 10 * time.Second // how often the window read's cost is sampled
)

// heldRun is one paced run, with or without a transaction held open.
type heldRun struct {
	lat    latencyRun
	slices []time.Duration // the window read's mean execution time per heldSlice
}

// heldOnce sends events at heldRate for d through dj-signals at its
// defaults; if hold, a transaction with an ID stays open on a connection
// of its own from before the first event to after the last.
func (w *costWorld) heldOnce(ctx context.Context, d time.Duration, hold bool) (heldRun, error) {
	if hold {
		tx, err := w.receivers.Begin(ctx)
		if err != nil {
			return heldRun{}, err
		}
		defer tx.Rollback(context.Background()) //nolint:errcheck // the point is to hold it
		if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
			return heldRun{}, err
		}
	}
	if _, err := w.meter.observer.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		return heldRun{}, err
	}
	var run heldRun
	done := make(chan struct{})
	sampled := make(chan []time.Duration, 1)
	go func() { sampled <- sampleWindowReads(ctx, w.meter.observer, done) }()
	s := w.f.signalsSystem(sysSignals, signals.DispatcherConfig{}, signals.WorkerConfig{})
	var err error
	run.lat, err = latencyOnce(ctx, w.f, w.senders, s, heldRate, d)
	close(done)
	run.slices = <-sampled
	return run, err
}

// windowReadStatement picks the Dispatcher's window read out of
// pg_stat_statements: the one statement that reads rows visible in a
// snapshot in two index ranges. By its shape, not its exact text, which
// changes with its parameters' numbering.
const windowReadStatement = `strpos(query, 'pg_visible_in_snapshot') > 0 AND strpos(query, 'UNION ALL') > 0`

// sampleWindowReads returns the mean execution time of the window reads
// of each heldSlice that had some, until done is closed.
func sampleWindowReads(ctx context.Context, db *pgxpool.Pool, done <-chan struct{}) []time.Duration {
	var out []time.Duration
	var calls int64
	var total float64 // ms
	tick := time.NewTicker(heldSlice)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return out
		case <-ctx.Done():
			return out
		case <-tick.C:
		}
		var c int64
		var t float64
		err := db.QueryRow(ctx, `SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(total_exec_time), 0)
FROM pg_stat_statements WHERE `+windowReadStatement).Scan(&c, &t)
		if err != nil || c == calls {
			continue
		}
		out = append(out, time.Duration((t-total)/float64(c-calls)*float64(time.Millisecond)))
		calls, total = c, t
	}
}

// heldTable adds the runs with and without the held transaction, and the
// targets: its events delay no one else's, and the window read costs as
// much at the end of the hold as at its start.
func heldTable(r *report, plain, held heldRun, d time.Duration) {
	t := &table{
		title: "Cost: a transaction held open while events flow",
		note: fmt.Sprintf("On the cost scenario's own cluster (autovacuum on). %d events/s for %v from %d senders through dj-signals at its defaults, measured from commit to receiver start, "+
			"once as they are and once while another session holds a transaction open (BEGIN; SELECT pg_current_xact_id(); then nothing) from before the first event to after the last: "+
			"its ID stays in every snapshot the Dispatcher takes, and vacuum cannot remove the rows acked meanwhile. "+
			"window read: the Dispatcher's read past its position, mean execution time per call in each %v (pg_stat_statements), first and last slice.",
			heldRate, d, latencySenders, heldSlice),
		header: []string{"run", "p50", "p99", "max", "window read, first slice", "window read, last slice"},
	}
	slice := func(xs []time.Duration, last bool) time.Duration {
		if len(xs) == 0 {
			return 0
		}
		if last {
			return xs[len(xs)-1]
		}
		return xs[0]
	}
	for _, row := range []struct {
		name string
		run  heldRun
	}{{"nothing held", plain}, {"a transaction held", held}} {
		t.rows = append(t.rows, []string{row.name, fmtDur(row.run.lat.pct(50)), fmtDur(row.run.lat.pct(99)), fmtDur(row.run.lat.pct(100)),
			fmtDur(slice(row.run.slices, false)), fmtDur(slice(row.run.slices, true))})
	}
	r.add(t)
	r.target("held transaction: p99 commit → receiver start ≤ 2× the run without it",
		fmt.Sprintf("%s vs %s", fmtDur(held.lat.pct(99)), fmtDur(plain.lat.pct(99))), held.lat.pct(99) <= 2*plain.lat.pct(99) && held.lat.missing == 0)
	first, last := slice(held.slices, false), slice(held.slices, true)
	r.target("held transaction: the window read's cost at the end ≤ 2× at the start",
		fmt.Sprintf("%s → %s per call over %d slices", fmtDur(first), fmtDur(last), len(held.slices)), len(held.slices) > 1 && last <= 2*first)
}

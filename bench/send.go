package main

// Scenario 1, send overhead: business transactions per second when the
// transaction also sends a reliable signal, against the same transaction
// with one more plain row and with a River InsertTx. No relay runs; the
// tables are truncated before every run.

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/dj-signals/signals/internal/store"
)

type sendVariant struct {
	key, name string
	extra     func(ctx context.Context, tx pgx.Tx, o order) error // nil: the plain tx
}

func runSend(ctx context.Context, e *env, o options, r *report) error {
	f, err := e.newFixture(ctx, "send", r)
	if err != nil {
		return err
	}
	defer f.close()
	rc, err := f.newRiver(e.admin, river.QueueConfig{MaxWorkers: riverMaxWorkers}) // insert-only: never started
	if err != nil {
		return err
	}
	variants := []sendVariant{
		{"a", "(a) plain tx: INSERT order", nil},
		{"b", "(b) + one plain INSERT (floor)", func(ctx context.Context, tx pgx.Tx, o order) error {
			_, err := tx.Exec(ctx, f.insertNote, o.OrderID, "placed")
			return err
		}},
		{"b2", "(b′) + outbox row, store INSERT (diagnostic)", func(ctx context.Context, tx pgx.Tx, o order) error {
			row := f.sentRow(o)
			return f.outbox.insert(ctx, tx, store.Event{ID: row.EventID, CorrelationID: row.CorrelationID, Signal: row.Signal, Payload: row.Payload},
				[]store.Target{{TaskID: row.ID, Receiver: row.Receiver, Queue: row.Queue, MaxRetry: row.MaxRetry, TimeoutMS: row.TimeoutMS}})
		}},
		{"c", "(c) + SendReliable, 1 receiver", func(ctx context.Context, tx pgx.Tx, o order) error {
			_, err := f.one.SendReliable(ctx, tx, o)
			return err
		}},
		{"d", "(d) + SendReliable, 3 receivers", func(ctx context.Context, tx pgx.Tx, o order) error {
			_, err := f.three.SendReliable(ctx, tx, o)
			return err
		}},
		{"e", "(e) + River InsertTx", func(ctx context.Context, tx pgx.Tx, o order) error {
			_, err := rc.InsertTx(ctx, tx, o, &river.InsertOpts{Queue: f.queue})
			return err
		}},
	}
	concs := []int{1, 8}

	// tps[conc][variant key] holds one figure per repetition. Repetitions
	// interleave the variants, rotating their order, so drift hits all alike.
	tps := map[int]map[string][]float64{}
	for _, c := range concs {
		tps[c] = map[string][]float64{}
		pool, err := newPool(ctx, e.dbURL, c)
		if err != nil {
			return err
		}
		for rep := range o.reps {
			for i := range variants {
				v := variants[(i+rep)%len(variants)]
				if _, err := f.reset(ctx, 0); err != nil {
					pool.Close()
					return err
				}
				x, err := measureTPS(ctx, c, o.duration, func(ctx context.Context, seq int64) error {
					return f.placeOrder(ctx, pool, seq, v.extra)
				})
				if err != nil {
					pool.Close()
					return fmt.Errorf("%s at %d senders: %w", v.name, c, err)
				}
				tps[c][v.key] = append(tps[c][v.key], x)
				progress("send %d senders rep %d %-44s %8.0f tx/s", c, rep+1, v.name, x)
			}
		}
		pool.Close()
	}

	t := &table{
		title: "1. Send overhead: business transactions/s",
		note: fmt.Sprintf("Each transaction INSERTs one order row, plus the variant's work, and commits (synchronous_commit as the server has it). "+
			"N senders = N goroutines on a pgxpool of N connections. No relay runs; tables are truncated (and a CHECKPOINT taken) before each run. "+
			"Figures are the median of %d runs of %v each, variants interleaved; the range is min–max of the runs. "+
			"Ratios: ×(b) to the one-extra-row floor, ×(e) to River InsertTx, same concurrency, same run. "+
			"(b′) is a diagnostic, not a target: the row SendReliable writes (same outbox table, same values, fresh ULIDs and JSON payload built in the sender) "+
			"inserted with the library's own statement (internal/store's Insert: one multi-row INSERT … VALUES, here one row) but without SendReliable around it: "+
			"(b)→(b′) is the cost of the outbox row itself, (b′)→(c) that of SendReliable's code path (validation, receiver lookup, the relay wake-up).", o.reps, o.duration),
		header: []string{"variant"},
	}
	for _, c := range concs {
		t.header = append(t.header, fmt.Sprintf("%d sender(s) tx/s", c), "range", "×(b)", "×(e)")
	}
	for _, v := range variants {
		row := []string{v.name}
		for _, c := range concs {
			m := median(tps[c][v.key])
			lo, hi := minMax(tps[c][v.key])
			row = append(row, fmtRate(m), fmt.Sprintf("%s–%s", fmtRate(lo), fmtRate(hi)),
				ratio(m, median(tps[c]["b"])), ratio(m, median(tps[c]["e"])))
		}
		t.rows = append(t.rows, row)
	}
	r.add(t)
	for _, c := range concs {
		cc, b, ee := median(tps[c]["c"]), median(tps[c]["b"]), median(tps[c]["e"])
		r.target(fmt.Sprintf("send, %d sender(s): (c) SendReliable ≥ 0.95× (b) one extra row", c),
			fmt.Sprintf("%s vs %s tx/s = %s", fmtRate(cc), fmtRate(b), ratio(cc, b)), cc >= 0.95*b)
		r.target(fmt.Sprintf("send, %d sender(s): (c) SendReliable ≥ (e) River InsertTx", c),
			fmt.Sprintf("%s vs %s tx/s = %s", fmtRate(cc), fmtRate(ee), ratio(cc, ee)), cc >= ee)
	}
	return nil
}

// measureTPS runs tx in conc goroutines for d and returns transactions per
// second. Every transaction started before the deadline is finished and
// counted.
func measureTPS(ctx context.Context, conc int, d time.Duration, tx func(ctx context.Context, seq int64) error) (float64, error) {
	var n atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	err := parallel(conc, func(int) error {
		for time.Now().Before(deadline) {
			if err := tx(ctx, n.Add(1)-1); err != nil {
				return err
			}
		}
		return nil
	})
	return float64(n.Load()) / time.Since(start).Seconds(), err
}

package main

// The cost scenario's receivers that write to PostgreSQL: the same
// end-to-end run, each event's receiver applying one database effect once,
// with signals.Once (an inbox row, then the Worker's ack) or with
// signals.Consume (the delivery's own row is the inbox: its removal is the
// ack).

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dj-signals/signals"
)

// Names of the two receivers' systems.
const (
	sysEffectOnce    = "dj-signals, receiver with Once"
	sysEffectConsume = "dj-signals, receiver with Consume"
)

// effectSystems registers on f's registry two signals whose receiver writes
// one order note in a transaction of its own, one guarded by Once and one
// by Consume, and returns their systems. The receivers' transactions run on
// db, which must outlive the runs.
func (f *fixture) effectSystems(db *pgxpool.Pool) ([]system, error) {
	var out []system
	for _, c := range []struct {
		name, signal string
		once         func(context.Context, pgx.Tx, signals.Event[order]) (bool, error)
	}{
		{sysEffectOnce, "bench.order_noted_once", signals.Once[order]},
		{sysEffectConsume, "bench.order_noted_consume", signals.Consume[order]},
	} {
		sig := signals.Register[order](f.registry, c.signal)
		once := c.once
		sig.Connect("note", func(ctx context.Context, e signals.Event[order]) error {
			err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
				mine, err := once(ctx, tx, e)
				if err != nil || !mine {
					return err
				}
				_, err = tx.Exec(ctx, f.insertNote, e.Payload.OrderID, "noted")
				return err
			})
			if err == nil {
				f.track.Load().started(e.Payload.Seq)
			}
			return err
		}, signals.Queue(f.queue))
		out = append(out, f.signalsSystemOn(c.name, f.registry, sig, signals.DispatcherConfig{}, signals.WorkerConfig{}))
	}
	return out, nil
}

// effectTable adds the two receivers' figures side by side, and the
// targets: Consume writes less WAL, costs PostgreSQL less CPU and delivers
// faster than Once.
func effectTable(r *report, runs map[string][]cost, o options) {
	t := &table{
		title: "Cost per event: a receiver that writes one row in PostgreSQL, once",
		note: fmt.Sprintf("The cost-per-event run (same cluster, senders and business transaction) with a receiver that, in a transaction of its own on a pool of its own, "+
			"calls signals.Once (which inserts an inbox row; the Worker then acks the outbox row in its batches) or signals.Consume (which deletes the delivery's outbox row: "+
			"the Worker's ack then finds nothing), then inserts one order note. Dispatcher and Worker at their defaults. Median of %d runs. "+
			"The inbox rows Once leaves are kept, as in production until pruned.", o.reps),
		header: append([]string{"receiver"}, costHeader...),
	}
	figures := map[string][]float64{}
	for _, name := range []string{sysEffectOnce, sysEffectConsume} {
		figures[name] = costFigures(runs[name], o.events)
		t.rows = append(t.rows, append([]string{strings.TrimPrefix(name, "dj-signals, receiver with ")}, costCells(figures[name])...))
	}
	c, once := figures[sysEffectConsume], figures[sysEffectOnce]
	ratio := []string{"Consume ÷ Once"}
	for i := range c[:len(c)-1] {
		ratio = append(ratio, costRatio(i, c[i], once[i]))
	}
	t.rows = append(t.rows, append(ratio, ""))
	r.add(t)
	for _, m := range []string{"WAL B/event", "PG CPU µs/event", "wall s"} {
		i := indexOf(costHeader, m)
		r.target("effects: Consume's "+m+" below Once's", fmt.Sprintf("%.4g vs %.4g = %s", c[i], once[i], ratio[i+1]), c[i] < once[i])
	}
}

// indexOf returns the index of s in xs.
func indexOf(xs []string, s string) int {
	for i, x := range xs {
		if x == s {
			return i
		}
	}
	panic("no " + s)
}

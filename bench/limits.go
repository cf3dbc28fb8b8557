package main

// Scenario "limits": what receiver limits cost the receivers they do not
// limit. One Worker runs the backlog of an unlimited receiver, "free",
// that two other receivers of the same signal share on one queue, once
// beside two receivers that return at once (no limits) and once beside
// RateLimit(50, 5) on one and ConcurrencyLimit(5) on the other, whose runs
// take 50 ms; the two alternate.

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dj-signals/signals"
)

// limitsEvents is the backlog each run works through.
const limitsEvents = 10000

func runLimits(ctx context.Context, e *env, o options, r *report) error {
	var unlimited, limited []float64
	for rep := range o.reps {
		for _, withLimits := range []bool{false, true} {
			took, err := limitsOnce(ctx, e, r, withLimits)
			if err != nil {
				return err
			}
			progress("limits rep %d, limits %v: free's %d events in %v", rep+1, withLimits, limitsEvents, took.Round(time.Millisecond))
			if withLimits {
				limited = append(limited, took.Seconds())
			} else {
				unlimited = append(unlimited, took.Seconds())
			}
		}
	}
	a, b := median(unlimited), median(limited)
	t := &table{
		title: "Receiver limits: the throughput of the receivers they do not limit",
		note: fmt.Sprintf("One Worker at its defaults, one Dispatcher; a backlog of %s events of one signal whose three receivers share one queue. "+
			"free returns at once; beside it either two more receivers that return at once, or paced with RateLimit(50, 5) and capped with ConcurrencyLimit(5), "+
			"whose runs take 50 ms. Time from the Worker's start until free has run every event (the limited receivers are still working through theirs). "+
			"Median of %d runs each, alternating.", fmtCount(limitsEvents), o.reps),
		header: []string{"beside free", "free's events/s", "× unlimited"},
	}
	t.rows = append(t.rows,
		[]string{"two unlimited receivers", fmtRate(limitsEvents / a), "1.00×"},
		[]string{"RateLimit(50, 5) and ConcurrencyLimit(5)", fmtRate(limitsEvents / b), ratio(limitsEvents/b, limitsEvents/a)},
	)
	r.add(t)
	r.target("limits: unlimited receivers ≥ 0.9× their throughput without limits beside them", ratio(limitsEvents/b, limitsEvents/a), a/b >= 0.9)
	return nil
}

// limitsOnce runs free's backlog once on a fixture of its own and returns
// how long the Worker took to run it.
func limitsOnce(ctx context.Context, e *env, r *report, withLimits bool) (time.Duration, error) {
	f, err := e.newFixture(ctx, "limits", r)
	if err != nil {
		return 0, err
	}
	defer f.close()
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: f.schema})
	if err != nil {
		return 0, err
	}
	placed := signals.Register[order](reg, "bench.order_limits")
	var done atomic.Int64
	placed.Connect("free", func(context.Context, signals.Event[order]) error {
		done.Add(1)
		return nil
	}, signals.Queue(f.queue))
	nop := func(context.Context, signals.Event[order]) error { return nil }
	if withLimits {
		placed.Connect("paced", nop, signals.Queue(f.queue), signals.RateLimit(50, 5))
		placed.Connect("capped", func(ctx context.Context, _ signals.Event[order]) error {
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			return nil
		}, signals.Queue(f.queue), signals.ConcurrencyLimit(5))
	} else {
		placed.Connect("paced", nop, signals.Queue(f.queue))
		placed.Connect("capped", nop, signals.Queue(f.queue))
	}
	for batch := int64(0); batch < limitsEvents; batch += 100 {
		err := pgx.BeginFunc(ctx, e.admin, func(tx pgx.Tx) error {
			for seq := batch; seq < batch+100; seq++ {
				if _, err := placed.SendReliable(ctx, tx, order{Seq: seq}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("send the backlog: %w", err)
		}
	}
	d, err := signals.NewDispatcher(reg, e.admin, e.redis, signals.DispatcherConfig{Logger: quiet})
	if err != nil {
		return 0, err
	}
	w, err := signals.NewWorker(reg, e.admin, e.redis, signals.WorkerConfig{Queues: map[string]int{f.queue: 1}, ShutdownTimeout: 2 * time.Second, Logger: quiet})
	if err != nil {
		return 0, err
	}
	begin := time.Now()
	stop := runAll(ctx, d.Run, w.Run)
	defer stop()
	deadline := time.After(2 * time.Minute)
	for done.Load() < limitsEvents {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-deadline:
			return 0, fmt.Errorf("free ran %d of %d events in 2 minutes", done.Load(), limitsEvents)
		case <-time.After(time.Millisecond):
		}
	}
	return time.Since(begin), nil
}

package main

// Scenario 2, end-to-end throughput: N events committed by concurrent
// senders while the delivery side runs; the clock stops when every event's
// receiver has started.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

const e2eSenders = 8

type e2eRun struct {
	total, send time.Duration // first send to last receiver start; to last commit
	delivered   int64
	timedOut    bool
}

func runE2E(ctx context.Context, e *env, o options, r *report) error {
	f, err := e.newFixture(ctx, "e2e", r)
	if err != nil {
		return err
	}
	defer f.close()
	pool, err := newPool(ctx, e.dbURL, e2eSenders)
	if err != nil {
		return err
	}
	defer pool.Close()

	otel, shutdown, err := f.otelSystem()
	if err != nil {
		return err
	}
	defer shutdown()
	// dj-signals with and without OpenTelemetry run back to back in every
	// rep, in turns first, so that a drift in the machine's state weighs on
	// both alike; the groups rotate as the systems do. That pair runs
	// otelPairs(o.reps) times, the other systems o.reps times.
	plain := f.systems()
	systems := slices.Insert(slices.Clone(plain), 1, otel)
	groups := [][]system{{plain[0], otel}}
	for _, s := range plain[1:] {
		groups = append(groups, []system{s})
	}
	pairs := otelPairs(o.reps)
	runs := map[string][]e2eRun{}
	for rep := range pairs {
		for i := range groups {
			if rep >= o.reps && (i+rep)%len(groups) != 0 {
				continue
			}
			g := slices.Clone(groups[(i+rep)%len(groups)])
			if rep%2 == 1 {
				slices.Reverse(g)
			}
			for _, s := range g {
				run, err := e2eOnce(ctx, f, pool, s, o.events)
				if err != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
				runs[s.name] = append(runs[s.name], run)
				progress("e2e rep %d %-26s %8.0f events/s (commits %8.0f/s)", rep+1, s.name,
					float64(o.events)/run.total.Seconds(), float64(o.events)/run.send.Seconds())
			}
		}
	}

	// Per system: median events/s end to end, and of the commit phase.
	rate := func(name string, send bool) []float64 {
		var out []float64
		for _, run := range runs[name] {
			d := run.total
			if send {
				d = run.send
			}
			out = append(out, float64(o.events)/d.Seconds())
		}
		return out
	}
	base, riv, riv1k := median(rate(sysAsynq, false)), median(rate(sysRiver, false)), median(rate(sysRiverTuned, false))
	dj := median(rate(sysSignals, false))
	t := &table{
		title: "2. End-to-end throughput: commit → receiver ran",
		note: fmt.Sprintf("%d events per run, %d sender goroutines (pool of %d), each event its own business transaction (one order row + the system's send), one no-op receiver. "+
			"Delivery runs in this process while the senders send. dj-signals: Dispatcher + Worker, default config. "+
			"plain asynq: client.Enqueue after commit (not crash-safe), asynq server with the dj-signals Worker's Concurrency (%d) and TaskCheckInterval (%v). "+
			"River: InsertTx in the transaction, MaxWorkers %d (as in River's package docs) or 1000, other settings default; River fetches at most MaxWorkers jobs per FetchCooldown (100 ms). "+
			"The relay and River have their own pools of pgxpool's default size. "+
			"dj-signals + OpenTelemetry: the same with the otelsignals middleware on its registry (OpenTelemetry SDK %s): every span sampled (AlwaysSample) and handed to a batch span processor whose exporter drops it, "+
			"so the application's side is measured (3 spans per event, trace context in each row and task, counters and histograms), not an exporter's serialization and network; metrics aggregated, not collected during the run. "+
			"events/s = N / (first send → last receiver start); median of %d runs, systems interleaved; the two dj-signals rows run %d times each, back to back, in turns first: "+
			"the adapter costs a few percent, less than the spread from one run to the next, so that pair is measured more often than the rest. "+
			"commits/s is the senders' rate alone (N / first send → last sender done); tail is how long after the last sender was done "+
			"(its commit; for plain asynq, its enqueue after the commit) the last receiver started (median).",
			o.events, e2eSenders, e2eSenders, workerConcurrency, workerTaskCheckInterval, riverMaxWorkers, otelVersion(), o.reps, pairs),
		header: []string{"system", "events/s", "range", "× plain asynq", "× River", "× River 1000", "× dj-signals", "commits/s", "tail"},
	}
	for _, s := range systems {
		rs := rate(s.name, false)
		m := median(rs)
		lo, hi := minMax(rs)
		var tails []float64
		name := s.name
		for _, run := range runs[s.name] {
			tails = append(tails, float64(run.total-run.send))
			if run.timedOut {
				name = fmt.Sprintf("%s (TIMED OUT: %d of %d delivered)", s.name, run.delivered, o.events)
			}
		}
		t.rows = append(t.rows, []string{name, fmtRate(m), fmt.Sprintf("%s–%s", fmtRate(lo), fmtRate(hi)),
			ratio(m, base), ratio(m, riv), ratio(m, riv1k), ratio(m, dj), fmtRate(median(rate(s.name, true))), fmtDur(time.Duration(median(tails)))})
	}
	r.add(t)
	r.target("e2e: dj-signals ≥ River (MaxWorkers 100)", fmt.Sprintf("%s vs %s events/s = %s", fmtRate(dj), fmtRate(riv), ratio(dj, riv)), dj >= riv)
	r.target("e2e: dj-signals ≥ River (MaxWorkers 1000)", fmt.Sprintf("%s vs %s events/s = %s", fmtRate(dj), fmtRate(riv1k), ratio(dj, riv1k)), dj >= riv1k)
	r.target("e2e: dj-signals ≥ 0.5× plain asynq", fmt.Sprintf("%s vs %s events/s = %s", fmtRate(dj), fmtRate(base), ratio(dj, base)), dj >= 0.5*base)
	// Judged on the median of the pairs' ratios: two runs back to back
	// share the machine's state, which drifts between pairs by more than
	// the adapter costs. The ratio of the medians is given beside it.
	withOTel := median(rate(sysSignalsOTel, false))
	var paired []float64 // each pair's events/s ratio, of two runs back to back
	var shown []string
	for i, run := range runs[sysSignalsOTel] {
		paired = append(paired, runs[sysSignals][i].total.Seconds()/run.total.Seconds())
		shown = append(shown, ratio(paired[i], 1))
	}
	r.target("e2e: dj-signals + OpenTelemetry ≥ 0.9× dj-signals (median of back-to-back pairs)",
		fmt.Sprintf("%s (pairs: %s); medians %s vs %s events/s = %s", ratio(median(paired), 1), strings.Join(shown, ", "),
			fmtRate(withOTel), fmtRate(dj), ratio(withOTel, dj)),
		median(paired) >= 0.9)
	return nil
}

// otelPairs is how many times the e2e scenario runs dj-signals with and
// without OpenTelemetry, back to back, when it runs the other systems reps
// times.
func otelPairs(reps int) int { return 2*reps + 1 }

// e2eOnce sends n events through s with e2eSenders goroutines, the delivery
// side running, and waits until every receiver has started.
func e2eOnce(ctx context.Context, f *fixture, pool *pgxpool.Pool, s system, n int) (e2eRun, error) {
	tr, err := f.reset(ctx, n)
	if err != nil {
		return e2eRun{}, err
	}
	stop, err := s.start(ctx)
	if err != nil {
		return e2eRun{}, err
	}
	defer stop()

	var next atomic.Int64
	start := time.Now()
	err = parallel(e2eSenders, func(int) error {
		for seq := next.Add(1) - 1; seq < int64(n); seq = next.Add(1) - 1 {
			if err := s.send(ctx, pool, seq, func() { tr.committed(seq) }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return e2eRun{}, err
	}
	run := e2eRun{send: time.Since(start)}
	// Generous: a system this slow has failed the comparison anyway.
	timeout := time.NewTimer(max(time.Minute, 10*run.send))
	defer timeout.Stop()
	select {
	case <-tr.done:
	case <-timeout.C:
		run.timedOut = true
	case <-ctx.Done():
		return e2eRun{}, ctx.Err()
	}
	run.total = time.Since(start)
	run.delivered = int64(n) - tr.left.Load()
	return run, nil
}

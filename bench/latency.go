package main

// Scenario 3, latency at a fixed send rate: from the moment tx.Commit
// returns in the sender to the moment the receiver function starts.

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dj-signals/signals"
)

const (
	latencySenders = 8
	latencyWarmup  = time.Second // sent at the rate first, not counted
)

type latencyRun struct {
	lat          []time.Duration // sorted, warm-up excluded
	sendToCommit []time.Duration // sorted; dj-signals only: SendReliable returned → Commit returned
	relay        []time.Duration // sorted; dj-signals only: Commit returned → enqueue returned in the relay
	worker       []time.Duration // sorted; dj-signals only: enqueue returned → receiver started
	sendRate     float64         // achieved commits/s
	missing      int             // events whose receiver never started
}

func runLatency(ctx context.Context, e *env, o options, r *report) error {
	f, err := e.newFixture(ctx, "latency", r)
	if err != nil {
		return err
	}
	defer f.close()
	f.traceEnqueue = true
	pool, err := newPool(ctx, e.dbURL, latencySenders)
	if err != nil {
		return err
	}
	defer pool.Close()

	t := &table{
		title: "3. Latency: commit returned → receiver started, at a fixed send rate",
		note: fmt.Sprintf("Each cell is one run of %v (after %v of warm-up at the same rate, not counted), so rate × %v samples; events are paced on a fixed schedule and sent by %d goroutines. "+
			"Commit time is taken right after tx.Commit returns, receiver start at the top of the receiver, in the same process (monotonic clock). "+
			"Systems and settings as in scenario 2; plain asynq (enqueue after commit, not crash-safe) is the floor: asynq's own pickup. "+
			"Ratios are p50 / p99 against the plain asynq, River (MaxWorkers 100) and River (MaxWorkers 1000) rows of the same rate.",
			o.latencyDur, latencyWarmup, o.latencyDur, latencySenders),
		header: []string{"system", "rate/s", "achieved/s", "p50", "p99", "max", "× plain asynq", "× River", "× River 1000"},
	}
	defaults := map[int]latencyRun{} // dj-signals' run per rate
	for _, rate := range o.rates {
		runs := map[string]latencyRun{}
		systems := f.systems()
		for _, s := range systems {
			run, err := latencyOnce(ctx, f, pool, s, rate, o.latencyDur)
			if err != nil {
				return fmt.Errorf("%s at %d/s: %w", s.name, rate, err)
			}
			runs[s.name] = run
		}
		for _, s := range systems {
			run := runs[s.name]
			t.rows = append(t.rows, []string{run.label(s.name), fmt.Sprint(rate), fmtRate(run.sendRate),
				fmtDur(run.pct(50)), fmtDur(run.pct(99)), fmtDur(run.pct(100)),
				run.vs(runs[sysAsynq]), run.vs(runs[sysRiver]), run.vs(runs[sysRiverTuned])})
		}
		if rate == 200 {
			dj := runs[sysSignals]
			r.target("latency at 200/s: dj-signals p50 ≤ 5 ms", fmtDur(dj.pct(50)), dj.pct(50) <= 5*time.Millisecond && dj.missing == 0)
			r.target("latency at 200/s: dj-signals p99 ≤ 25 ms", fmtDur(dj.pct(99)), dj.pct(99) <= 25*time.Millisecond && dj.missing == 0)
		}
		defaults[rate] = runs[sysSignals]
	}
	r.add(t)
	return latencyKnobs(ctx, f, pool, o, r, defaults)
}

// latencyKnobs splits dj-signals' latency into its legs, for the default
// runs and for reruns at the lowest rate with one non-default knob at a time.
func latencyKnobs(ctx context.Context, f *fixture, pool *pgxpool.Pool, o options, r *report, defaults map[int]latencyRun) error {
	rate := slices.Min(o.rates)
	t := &table{
		title: "3b. Where dj-signals' latency goes (rows after the first ones: NON-DEFAULT configs, for diagnosis)",
		note: "Same measurement as table 3, dj-signals only, split in legs per event: relay = tx.Commit returned → the relay's asynq enqueue returned " +
			"(timed by a go-redis hook on the relay's Redis client, in this process); worker = enqueue returned → receiver started. " +
			"send→commit is SendReliable returning (when it wakes the in-process relay) → tx.Commit returning: the relay's first look after a wake-up " +
			"comes before the row is visible, then it re-checks after 1, 2, 4, … ms up to PollInterval. " +
			"The default rows are table 3's runs; each knob row is a new run at the lowest rate with one setting changed. Compare the worker leg with table 3's plain asynq row.",
		header: []string{"dj-signals config", "rate/s", "p50", "p99", "× default", "relay p50", "relay p99", "worker p50", "worker p99", "send→commit p99"},
	}
	row := func(name string, rate int, run, def latencyRun) {
		t.rows = append(t.rows, []string{run.label(name), fmt.Sprint(rate), fmtDur(run.pct(50)), fmtDur(run.pct(99)), run.vs(def),
			fmtDur(pct(run.relay, 50)), fmtDur(pct(run.relay, 99)), fmtDur(pct(run.worker, 50)), fmtDur(pct(run.worker, 99)),
			fmtDur(pct(run.sendToCommit, 99))})
	}
	for _, rt := range o.rates {
		row("defaults", rt, defaults[rt], defaults[rt])
	}
	knobs := []struct {
		name string
		d    signals.DispatcherConfig
		w    signals.WorkerConfig
	}{
		{fmt.Sprintf("WorkerConfig.TaskCheckInterval 1ms (default %v)", workerTaskCheckInterval),
			signals.DispatcherConfig{}, signals.WorkerConfig{TaskCheckInterval: time.Millisecond}},
		{fmt.Sprintf("DispatcherConfig.PollInterval 5ms (default %v)", dispatcherPollInterval),
			signals.DispatcherConfig{PollInterval: 5 * time.Millisecond}, signals.WorkerConfig{}},
	}
	for _, k := range knobs {
		run, err := latencyOnce(ctx, f, pool, f.signalsSystem(k.name, k.d, k.w), rate, o.latencyDur)
		if err != nil {
			return fmt.Errorf("%s: %w", k.name, err)
		}
		row(k.name, rate, run, defaults[rate])
	}
	r.add(t)
	return nil
}

func (l latencyRun) pct(p float64) time.Duration { return pct(l.lat, p) }

// vs gives l's p50 and p99 as ratios to base's.
func (l latencyRun) vs(base latencyRun) string {
	return ratio(float64(l.pct(50)), float64(base.pct(50))) + " / " + ratio(float64(l.pct(99)), float64(base.pct(99)))
}

func (l latencyRun) label(name string) string {
	if l.missing > 0 {
		return fmt.Sprintf("%s (%d never started)", name, l.missing)
	}
	return name
}

// latencyOnce sends at rate for warm-up plus d through s and returns the
// commit-to-start latencies after the warm-up.
func latencyOnce(ctx context.Context, f *fixture, pool *pgxpool.Pool, s system, rate int, d time.Duration) (latencyRun, error) {
	warm := int(float64(rate) * latencyWarmup.Seconds())
	n := warm + int(float64(rate)*d.Seconds())
	tr, err := f.reset(ctx, n)
	if err != nil {
		return latencyRun{}, err
	}
	stop, err := s.start(ctx)
	if err != nil {
		return latencyRun{}, err
	}
	defer stop()

	// The pacer hands out sequence numbers on schedule; a sender that falls
	// behind delays sends, never the measured latency (taken after commit).
	seqs := make(chan int64, n)
	interval := time.Second / time.Duration(rate)
	var sendStart time.Time
	go func() {
		defer close(seqs)
		start := time.Now()
		for i := range n {
			if i == warm {
				sendStart = time.Now()
			}
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return
				}
			}
			seqs <- int64(i)
		}
	}()
	err = parallel(latencySenders, func(int) error {
		for seq := range seqs {
			if err := s.send(ctx, pool, seq, func() { tr.committed(seq) }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return latencyRun{}, err
	}
	run := latencyRun{sendRate: float64(n-warm) / time.Since(sendStart).Seconds()}
	select {
	case <-tr.done:
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
		return latencyRun{}, ctx.Err()
	}
	for i := warm; i < n; i++ {
		c, st := tr.commit[i].Load(), tr.start[i].Load()
		if st == 0 {
			run.missing++
			continue
		}
		run.lat = append(run.lat, time.Duration(st-c))
		if sent := tr.sent[i].Load(); sent > 0 {
			run.sendToCommit = append(run.sendToCommit, time.Duration(c-sent))
		}
		if id, ok := tr.tasks.Load(int64(i)); ok {
			if enq, ok := tr.enqueued.Load(id); ok {
				run.relay = append(run.relay, time.Duration(enq.(int64)-c))
				run.worker = append(run.worker, time.Duration(st-enq.(int64)))
			}
		}
	}
	slices.Sort(run.relay)
	slices.Sort(run.worker)
	slices.Sort(run.lat)
	slices.Sort(run.sendToCommit)
	progress("latency %5d/s %-24s p50 %s p99 %s max %s", rate, s.name, fmtDur(run.pct(50)), fmtDur(run.pct(99)), fmtDur(run.pct(100)))
	return run, nil
}

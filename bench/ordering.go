package main

// Scenario "ordering", per-key ordering's cost: the end-to-end run of
// scenario 2 with the receiver connected with OrderBy over 1,000 keys,
// against the same receiver unordered, in the same run.

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/dj-signals/signals"
)

// orderingKeys is how many ordering keys the events spread over, in turn.
const orderingKeys = 1000

const (
	sysUnordered = "dj-signals, unordered"
	sysOrdered   = "dj-signals, OrderBy (1,000 keys)"
)

// keyOrder checks that each key's events started in the order they were
// sent: event seq has key seq % orderingKeys, and its key's earlier events
// have lower seqs.
type keyOrder struct {
	mu         sync.Mutex
	last       map[string]int64
	violations int
}

func (k *keyOrder) reset() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.last, k.violations = map[string]int64{}, 0
}

func (k *keyOrder) started(key string, seq int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if last, ok := k.last[key]; ok && seq < last {
		k.violations++
	}
	k.last[key] = max(k.last[key], seq)
}

func orderingKey(o order) string { return strconv.FormatInt(o.Seq%orderingKeys, 10) }

func runOrdering(ctx context.Context, e *env, o options, r *report) error {
	f, err := e.newFixture(ctx, "ordering", r)
	if err != nil {
		return err
	}
	defer f.close()
	pool, err := newPool(ctx, e.dbURL, e2eSenders)
	if err != nil {
		return err
	}
	defer pool.Close()

	// A registry of its own on the fixture's schema and queue, whose
	// receiver is f.one's with OrderBy.
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: f.schema})
	if err != nil {
		return err
	}
	sig := signals.Register[order](reg, f.one.Name())
	check := &keyOrder{}
	sig.Connect("noop", func(_ context.Context, ev signals.Event[order]) error {
		check.started(ev.OrderingKey, ev.Payload.Seq)
		f.track.Load().started(ev.Payload.Seq)
		return nil
	}, signals.Queue(f.queue), signals.OrderBy(orderingKey))
	systems := []system{
		f.signalsSystem(sysUnordered, signals.DispatcherConfig{}, signals.WorkerConfig{}),
		f.signalsSystemOn(sysOrdered, reg, sig, signals.DispatcherConfig{}, signals.WorkerConfig{}),
	}

	runs := map[string][]float64{}
	violations := 0
	for rep := range o.reps {
		for i := range systems {
			s := systems[(i+rep)%len(systems)]
			check.reset()
			run, err := e2eOnce(ctx, f, pool, s, o.events)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			if run.timedOut {
				return fmt.Errorf("%s: timed out with %d of %d events delivered", s.name, run.delivered, o.events)
			}
			if s.name == sysOrdered {
				violations += check.violations
			}
			rate := float64(o.events) / run.total.Seconds()
			runs[s.name] = append(runs[s.name], rate)
			progress("ordering rep %d %-34s %8.0f events/s", rep+1, s.name, rate)
		}
	}

	base := median(runs[sysUnordered])
	t := &table{
		title: "Per-key ordering: commit → receiver ran, with and without OrderBy",
		note: fmt.Sprintf("Scenario 2's run (%d events, %d sender goroutines, one no-op receiver, default configs) with the receiver connected unordered, "+
			"and with OrderBy over %d keys (event i has key i mod %d, so each key's events are sent in turn, spread over the run): "+
			"each key's next event is enqueued once the one before has succeeded. "+
			"Out of order counts the events that started after a later event of their key, over all runs (sends 1,000 apart, so 0 is expected). "+
			"events/s = N / (first send → last receiver start); median of %d runs, systems interleaved.",
			o.events, e2eSenders, orderingKeys, orderingKeys, o.reps),
		header: []string{"system", "events/s", "range", "× unordered", "out of order"},
	}
	for _, s := range systems {
		m := median(runs[s.name])
		lo, hi := minMax(runs[s.name])
		out := "–"
		if s.name == sysOrdered {
			out = strconv.Itoa(violations)
		}
		t.rows = append(t.rows, []string{s.name, fmtRate(m), fmt.Sprintf("%s–%s", fmtRate(lo), fmtRate(hi)), ratio(m, base), out})
	}
	r.add(t)
	return nil
}

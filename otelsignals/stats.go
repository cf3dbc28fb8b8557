package otelsignals

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/dj-signals/signals"
)

// DefaultStatsTimeout bounds one [signals.Ledger.Stats] call made to
// collect the gauges.
const DefaultStatsTimeout = 10 * time.Second

// StatsReader takes a snapshot of the pipeline; *signals.Ledger is one.
type StatsReader interface {
	Stats(ctx context.Context) (signals.Stats, error)
}

// StatsConfig configures [ObserveStats]. The zero value is valid; every
// zero field takes its default.
type StatsConfig struct {
	// MeterProvider makes the meter of the gauges. Defaults to
	// otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// Timeout bounds one Stats call. Defaults to DefaultStatsTimeout.
	Timeout time.Duration
}

func (c StatsConfig) withDefaults() StatsConfig {
	if c.MeterProvider == nil {
		c.MeterProvider = otel.GetMeterProvider()
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultStatsTimeout
	}
	return c
}

// ObserveStats registers gauges that call src.Stats (a
// *signals.Ledger) each time the metrics are collected, once for all
// of them:
//
//   - signals.backlog: deliveries per signal, receiver and state, pending
//     (committed, waiting for a Dispatcher) or in_flight (enqueued, their
//     receiver not done yet);
//   - signals.backlog.oldest_age: in seconds, per signal, receiver and
//     state, how long ago the oldest pending delivery was sent and the
//     oldest in-flight one enqueued;
//   - signals.dead_letters: dead deliveries per signal and receiver;
//   - signals.queue.tasks: asynq's tasks per queue and state (pending,
//     active, scheduled, retry, archived, completed);
//   - signals.queue.served: 1 while a running Worker serves the queue, 0
//     while nobody does.
//
// A receiver whose backlog emptied reads 0 rather than vanishing. The
// figures are the ledger's and Redis's, the same from every process: observe
// them from one process, or aggregate them with max, not sum. A failed Stats
// call goes to otel.Handle, and what it did read is still observed: an error
// returned to the SDK would hold back every metric of the collection.
// Unregister the returned registration to stop.
func ObserveStats(src StatsReader, cfg StatsConfig) (metric.Registration, error) {
	if src == nil {
		return nil, fmt.Errorf("%w: ObserveStats needs a StatsReader, such as a *signals.Ledger", signals.ErrInvalidConfig)
	}
	cfg = cfg.withDefaults()
	meter := cfg.MeterProvider.Meter(ScopeName)
	o := &statsObserver{src: src, timeout: cfg.Timeout, seen: map[statsKey]bool{}}
	// As in New, an instrument error comes with a usable instrument.
	gauge := func(name, desc, unit string) metric.Int64ObservableGauge {
		g, err := meter.Int64ObservableGauge(name, metric.WithDescription(desc), metric.WithUnit(unit))
		handle(err)
		return g
	}
	o.backlog = gauge(metricBacklog, "Deliveries not done yet: pending (committed, waiting for a Dispatcher) or in_flight (enqueued, their receiver not done yet).", "{delivery}")
	o.dead = gauge(metricDeadLetters, "Dead deliveries kept in the ledger until requeued or discarded.", "{delivery}")
	o.tasks = gauge(metricQueueTasks, "asynq's tasks in the queue, per state.", "{task}")
	o.served = gauge(metricQueueServed, "1 while a running Worker (an asynq server) serves the queue, 0 while nobody does.", "1")
	var err error
	o.oldest, err = meter.Float64ObservableGauge(metricOldestAge,
		metric.WithDescription("Age of the oldest pending delivery (since it was sent) and of the oldest in-flight one (since it was enqueued); 0 when there is none."),
		metric.WithUnit("s"))
	handle(err)
	reg, err := meter.RegisterCallback(o.observe, o.backlog, o.oldest, o.dead, o.tasks, o.served)
	if err != nil {
		return nil, fmt.Errorf("register stats callback: %w", err)
	}
	return reg, nil
}

// statsObserver observes one StatsReader's snapshot.
type statsObserver struct {
	src     StatsReader
	timeout time.Duration

	backlog, dead, tasks, served metric.Int64ObservableGauge
	oldest                       metric.Float64ObservableGauge

	mu   sync.Mutex // the SDK may collect from several readers at once
	seen map[statsKey]bool
}

// statsKey is a receiver (queue empty) or a queue (signal and receiver
// empty) observed before.
type statsKey struct{ signal, receiver, queue string }

func (o *statsObserver) observe(ctx context.Context, obs metric.Observer) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	st, err := o.src.Stats(ctx)
	if err != nil {
		otel.Handle(fmt.Errorf("otelsignals: observe stats: %w", err))
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	now := map[statsKey]signals.ReceiverStats{}
	for _, r := range st.Receivers {
		now[statsKey{signal: r.Signal, receiver: r.Receiver}] = r
	}
	queues := map[statsKey]signals.QueueStats{}
	for _, q := range st.Queues {
		queues[statsKey{queue: q.Queue}] = q
	}
	// After an error a missing entry is unknown, not empty: only a
	// complete snapshot zeroes what was seen before.
	if err == nil {
		for k := range o.seen {
			if k.queue == "" {
				if _, ok := now[k]; !ok {
					now[k] = signals.ReceiverStats{Signal: k.signal, Receiver: k.receiver}
				}
			} else if _, ok := queues[k]; !ok {
				queues[k] = signals.QueueStats{Queue: k.queue}
			}
		}
	}

	for k, r := range now {
		o.seen[k] = true
		sr := []attribute.KeyValue{metricSignal.String(r.Signal), metricReceiver.String(r.Receiver)}
		state := func(s string) metric.ObserveOption {
			return metric.WithAttributes(append(sr, metricState.String(s))...)
		}
		obs.ObserveInt64(o.backlog, int64(r.Pending), state("pending"))
		obs.ObserveInt64(o.backlog, int64(r.InFlight), state("in_flight"))
		obs.ObserveFloat64(o.oldest, r.OldestPending.Seconds(), state("pending"))
		obs.ObserveFloat64(o.oldest, r.OldestInFlight.Seconds(), state("in_flight"))
		obs.ObserveInt64(o.dead, int64(r.Dead), metric.WithAttributes(sr...))
	}
	for k, q := range queues {
		o.seen[k] = true
		queue := metricQueue.String(q.Queue)
		for _, s := range []struct {
			state string
			n     int
		}{
			{"pending", q.Pending}, {"active", q.Active}, {"scheduled", q.Scheduled},
			{"retry", q.Retry}, {"archived", q.Archived}, {"completed", q.Completed},
		} {
			obs.ObserveInt64(o.tasks, int64(s.n), metric.WithAttributes(queue, metricState.String(s.state)))
		}
		served := int64(0)
		if q.Served {
			served = 1
		}
		obs.ObserveInt64(o.served, served, metric.WithAttributes(queue))
	}
	return nil
}

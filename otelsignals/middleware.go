package otelsignals

import (
	"context"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/dj-signals/signals"
)

// ScopeName is the instrumentation scope of the tracer and meter the
// middleware and [ObserveStats] use.
const ScopeName = "github.com/dj-signals/signals/otelsignals"

// Config configures a [Middleware]. The zero value is valid; every zero
// field takes its default.
type Config struct {
	// TracerProvider makes the tracer of the send, enqueue and receive
	// spans. Defaults to otel.GetTracerProvider(), which follows a later
	// otel.SetTracerProvider.
	TracerProvider trace.TracerProvider
	// MeterProvider makes the meter of the counters and histograms.
	// Defaults to otel.GetMeterProvider(), which follows a later
	// otel.SetMeterProvider.
	MeterProvider metric.MeterProvider
	// Propagator writes the send span's context into the event's headers
	// and reads it back in the Dispatcher and the Worker. Defaults to
	// propagation.TraceContext{} (W3C traceparent and tracestate), not to
	// the global propagator, which carries nothing until an application
	// sets one. Pass otel.GetTextMapPropagator() to follow the
	// application's; whatever it writes is stored in every outbox row of
	// the event, so think twice before carrying baggage.
	Propagator propagation.TextMapPropagator
	// LinkReceive starts each receive span as the root of a trace of its
	// own, linked to the send span, rather than as the send span's child.
	// It suits events delivered long after they were sent (At, Delay,
	// retries hours apart), which stretch a request's trace, and tracing
	// backends that cut long traces. Defaults to false: one trace from the
	// request to every receiver and the signals they send.
	LinkReceive bool
}

// withDefaults returns a copy of c with every zero field set to its
// default.
func (c Config) withDefaults() Config {
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.MeterProvider == nil {
		c.MeterProvider = otel.GetMeterProvider()
	}
	if c.Propagator == nil {
		c.Propagator = propagation.TraceContext{}
	}
	return c
}

// Middleware is the OpenTelemetry [signals.Middleware]: it traces and
// counts every send, enqueue and receive of a registry's signals. Set it
// with [signals.RegistryConfig].Middleware, or [signals.Registry.Use] for
// signals.DefaultRegistry. It is safe for concurrent use.
type Middleware struct {
	cfg    Config
	tracer trace.Tracer

	sent, enqueued, duplicates, resent, enqueueFailed metric.Int64Counter
	succeeded, failed, dead                           metric.Int64Counter
	lag, duration                                     metric.Float64Histogram

	// sets caches one measurement option per signal, receiver and queue:
	// building an attribute set sorts and allocates, on every event.
	sets sync.Map // route → metric.MeasurementOption
	// names caches the span names of each signal.
	names sync.Map // signal → *[3]string
}

var _ signals.Middleware = (*Middleware)(nil)

// New returns a Middleware configured by cfg. It does not fail: an error
// creating an instrument (which the OpenTelemetry API returns along with a
// usable instrument) goes to otel.Handle, as in OpenTelemetry's own
// instrumentation libraries.
func New(cfg Config) *Middleware {
	cfg = cfg.withDefaults()
	m := &Middleware{cfg: cfg, tracer: cfg.TracerProvider.Tracer(ScopeName)}
	meter := cfg.MeterProvider.Meter(ScopeName)
	counter := func(name, desc string) metric.Int64Counter {
		c, err := meter.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit("{delivery}"))
		handle(err)
		return c
	}
	m.sent = counter(metricSent, "Deliveries written to the outbox by SendReliable: one per event and receiver. Counted when the write succeeds, before the sender's transaction commits or rolls back.")
	m.enqueued = counter(metricEnqueued, "Deliveries a Dispatcher enqueued into Redis.")
	m.duplicates = counter(metricDuplicates, "Re-enqueues Redis turned away because it already held the task (task ID conflict): an earlier enqueue of the same outbox row.")
	m.resent = counter(metricResent, "Deliveries the Dispatcher's repair enqueued again: Redis had lost their tasks, or the worker running them died. Also counted in "+metricEnqueued+".")
	m.enqueueFailed = counter(metricEnqueueFailed, "Enqueues into Redis that failed; the Dispatcher tries the row again.")
	m.succeeded = counter(metricSucceeded, "Receiver runs that succeeded.")
	m.failed = counter(metricFailed, "Receiver runs that failed: retried, unless the delivery is now dead (see "+metricDead+").")
	m.dead = counter(metricDead, "Deliveries that failed for good in a receiver run, by reason: recorded as dead letters.")
	var err error
	m.lag, err = meter.Float64Histogram(metricLag,
		metric.WithDescription("Delivery lag: from SendReliable (the event ID's time, to the millisecond, a little before the commit) to the start of the receiver's first attempt. Includes any At or Delay the sender asked for."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(lagBuckets...))
	handle(err)
	m.duration, err = meter.Float64Histogram(metricDuration,
		metric.WithDescription("Duration of one receiver run, decoding and classifying included."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(durationBuckets...))
	handle(err)
	return m
}

// Send starts a producer span, "send <signal>", as a child of ctx, writes
// its context into the event's headers, and counts one sent delivery per
// receiver once the outbox rows are written.
func (m *Middleware) Send(ctx context.Context, s *signals.SendInfo, next func(context.Context) error) error {
	// Every attribute at the start, in one slice: the sampler sees them,
	// and the span's own slice is allocated once.
	attrs := append(make([]attribute.KeyValue, 0, 9),
		systemAttr, opSend, opTypeCreate, destination.String(s.Signal),
		attrEventID.String(s.EventID.String()),
		attrCorrelationID.String(s.CorrelationID.String()),
		attrDepth.Int(s.Depth),
		attrReceivers.StringSlice(s.Receivers),
	)
	if s.CausationID != (ulid.ULID{}) {
		attrs = append(attrs, attrCausationID.String(s.CausationID.String()))
	}
	ctx, span := m.tracer.Start(ctx, m.spanName(opNameSend, s.Signal),
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	defer span.End()
	if s.Headers == nil {
		s.Headers = make(map[string]string, 2)
	}
	m.cfg.Propagator.Inject(ctx, propagation.MapCarrier(s.Headers))

	err := next(ctx)
	if err != nil {
		fail(span, err)
		return err
	}
	for _, r := range s.Receivers {
		m.sent.Add(ctx, 1, m.set(route{signal: s.Signal, receiver: r}))
	}
	return nil
}

// Enqueue continues the event's trace with a client span, "enqueue
// <signal>", around one row's enqueue into Redis, and counts it as
// enqueued (and resent, after a repair), duplicate or failed.
func (m *Middleware) Enqueue(ctx context.Context, e *signals.EnqueueInfo, next func(context.Context) error) error {
	ctx = m.cfg.Propagator.Extract(ctx, propagation.MapCarrier(e.Headers))
	attrs := deliveryAttrs(opEnqueue, opTypeSend, e.Signal, e.Receiver, e.Queue, e.TaskID, e.EventID)
	ctx, span := m.tracer.Start(ctx, m.spanName(opNameEnqueue, e.Signal),
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	defer span.End()

	err := next(ctx)
	set := m.set(route{signal: e.Signal, receiver: e.Receiver, queue: e.Queue})
	switch {
	case err != nil:
		fail(span, err)
		m.enqueueFailed.Add(ctx, 1, set)
	case e.Duplicate:
		span.SetAttributes(attrDuplicate.Bool(true))
		m.duplicates.Add(ctx, 1, set)
	default:
		m.enqueued.Add(ctx, 1, set)
		if e.Resent {
			m.resent.Add(ctx, 1, set)
		}
	}
	return err
}

// Receive continues the event's trace with a consumer span, "receive
// <signal>", whose context becomes the receiver's ctx; it records the
// delivery lag on the first attempt, the run's duration, and whether it
// succeeded, failed or is now dead.
func (m *Middleware) Receive(ctx context.Context, r *signals.ReceiveInfo, next func(context.Context) error) error {
	start := time.Now()
	ctx = m.cfg.Propagator.Extract(ctx, propagation.MapCarrier(r.Headers))
	attrs := append(deliveryAttrs(opReceive, opTypeProcess, r.Signal, r.Receiver, r.Queue, r.TaskID, r.EventID),
		attrAttempt.Int(r.Attempt))
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...)}
	if m.cfg.LinkReceive {
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			opts = append(opts, trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	ctx, span := m.tracer.Start(ctx, m.spanName(opNameReceive, r.Signal), opts...)
	defer span.End()
	set := m.set(route{signal: r.Signal, receiver: r.Receiver, queue: r.Queue})
	// An undecodable task has no event ID, and so no send time.
	if r.Attempt == 1 && r.EventID != (ulid.ULID{}) {
		m.lag.Record(ctx, max(start.Sub(r.SentAt), 0).Seconds(), set)
	}

	err := next(ctx)
	m.duration.Record(ctx, time.Since(start).Seconds(), set)
	if err == nil {
		m.succeeded.Add(ctx, 1, set)
		return nil
	}
	fail(span, err)
	m.failed.Add(ctx, 1, set)
	if r.Dead != "" {
		span.SetAttributes(attrDeadReason.String(string(r.Dead)))
		m.dead.Add(ctx, 1, metric.WithAttributes(
			metricSignal.String(r.Signal), metricReceiver.String(r.Receiver),
			metricQueue.String(r.Queue), metricReason.String(string(r.Dead))))
	}
	return err
}

// deliveryAttrs are the span attributes of one delivery, with room for
// one more.
func deliveryAttrs(op, opType attribute.KeyValue, signal, receiver, queue string, taskID, eventID ulid.ULID) []attribute.KeyValue {
	return append(make([]attribute.KeyValue, 0, 10),
		systemAttr, op, opType, destination.String(signal),
		consumerGroup.String(receiver),
		attrQueue.String(queue),
		attrTaskID.String(taskID.String()),
		attrEventID.String(eventID.String()),
	)
}

// spanName returns "<op> <signal>", made once per signal.
func (m *Middleware) spanName(op int, signal string) string {
	if names, ok := m.names.Load(signal); ok {
		return names.(*[3]string)[op]
	}
	names := &[3]string{opNameSend: "send " + signal, opNameEnqueue: "enqueue " + signal, opNameReceive: "receive " + signal}
	n, _ := m.names.LoadOrStore(signal, names)
	return n.(*[3]string)[op]
}

// Indexes of the span names spanName keeps per signal.
const (
	opNameSend = iota
	opNameEnqueue
	opNameReceive
)

// route is what a metric's attributes say about a delivery.
type route struct{ signal, receiver, queue string }

// set returns the measurement option of r's attributes.
func (m *Middleware) set(r route) metric.MeasurementOption {
	if o, ok := m.sets.Load(r); ok {
		return o.(metric.MeasurementOption)
	}
	attrs := []attribute.KeyValue{metricSignal.String(r.signal), metricReceiver.String(r.receiver)}
	if r.queue != "" {
		attrs = append(attrs, metricQueue.String(r.queue))
	}
	o, _ := m.sets.LoadOrStore(r, metric.WithAttributeSet(attribute.NewSet(attrs...)))
	return o.(metric.MeasurementOption)
}

// fail marks span as failed with err.
func fail(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

func handle(err error) {
	if err != nil {
		otel.Handle(err)
	}
}

package otelsignals

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
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

// Config configures the middleware [New] returns. The zero value is valid;
// every zero field takes its default.
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
	// It suits events delivered long after they were sent (At, retries
	// hours apart), which stretch a request's trace, and tracing backends
	// that cut long traces. Defaults to false: one trace from the
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

// middleware holds the tracer and instruments of the [signals.Middleware]
// that New returns.
type middleware struct {
	cfg    Config
	tracer trace.Tracer

	sent, enqueued, duplicates, resent, enqueueFailed metric.Int64Counter
	succeeded, failed, dead                           metric.Int64Counter
	lag, duration                                     metric.Float64Histogram

	// What does not change from one event to the next is made once: span
	// names, attributes and metric attribute sets, which would otherwise
	// be built, sorted and allocated on every event.
	signals cache[string, *signalTelemetry]
	routes  cache[route, *routeTelemetry]
}

// New returns the OpenTelemetry [signals.Middleware], configured by cfg: it
// traces and counts every send, enqueue and receive of a registry's
// signals. Set it with [signals.RegistryConfig].Middleware, or
// [signals.Registry.Use] for signals.DefaultRegistry. It is safe for
// concurrent use. New does not fail: an error creating an instrument
// (which the OpenTelemetry API returns along with a usable instrument) goes
// to otel.Handle, as in OpenTelemetry's own instrumentation libraries.
func New(cfg Config) signals.Middleware {
	cfg = cfg.withDefaults()
	m := &middleware{cfg: cfg, tracer: cfg.TracerProvider.Tracer(ScopeName)}
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
		metric.WithDescription("Delivery lag: from SendReliable (the event ID's time, to the millisecond, a little before the commit) to the start of the receiver's first attempt. Includes any At the sender asked for."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(lagBuckets...))
	handle(err)
	m.duration, err = meter.Float64Histogram(metricDuration,
		metric.WithDescription("Duration of one receiver run, decoding and classifying included."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(durationBuckets...))
	handle(err)
	return signals.Middleware{Send: m.send, Enqueue: m.enqueue, Receive: m.receive}
}

// The three steps below wrap next in a small frame and leave the span's
// start and end to helpers that are not inlined: next runs the rest of the
// step (the receiver, for receive) on the same goroutine, often a fresh one
// with a small stack, and every byte of this frame is a byte less for it
// before the stack must grow and be copied.

// send starts a producer span, "send <signal>", as a child of ctx, writes
// its context into the event's headers, and counts one sent delivery per
// receiver once the outbox rows are written.
func (m *middleware) send(ctx context.Context, s *signals.SendInfo, next func(context.Context) error) error {
	ctx, span, st := m.startSend(ctx, s)
	defer span.End()
	if err := next(ctx); err != nil {
		fail(span, err)
		return err
	}
	for _, set := range st.sent {
		m.sent.Add(ctx, 1, set)
	}
	return nil
}

//go:noinline
func (m *middleware) startSend(ctx context.Context, s *signals.SendInfo) (context.Context, trace.Span, *signalTelemetry) {
	st := m.signalTelemetry(s.Signal, s.Receivers)
	// Every attribute at the start, where the sampler sees them.
	attrs := startAttrs()
	*attrs = append(*attrs, st.sendAttrs...)
	*attrs = append(*attrs,
		attrEventID.String(s.EventID.String()),
		attrCorrelationID.String(s.CorrelationID.String()),
		attrDepth.Int(s.Depth),
	)
	if s.CausationID != (ulid.ULID{}) {
		*attrs = append(*attrs, attrCausationID.String(s.CausationID.String()))
	}
	ctx, span := m.tracer.Start(ctx, st.sendName,
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(*attrs...))
	putStartAttrs(attrs)
	if s.Headers == nil {
		s.Headers = make(map[string]string, 2)
	}
	m.cfg.Propagator.Inject(ctx, propagation.MapCarrier(s.Headers))
	return ctx, span, st
}

// enqueue continues the event's trace with a client span, "enqueue
// <signal>", around one row's enqueue into Redis, and counts it as
// enqueued (and resent, after a repair), duplicate or failed.
func (m *middleware) enqueue(ctx context.Context, e *signals.EnqueueInfo, next func(context.Context) error) error {
	ctx, span, rt := m.startEnqueue(ctx, e)
	defer span.End()
	err := next(ctx)
	m.endEnqueue(ctx, span, rt, e, err)
	return err
}

//go:noinline
func (m *middleware) startEnqueue(ctx context.Context, e *signals.EnqueueInfo) (context.Context, trace.Span, *routeTelemetry) {
	rt := m.routeTelemetry(route{signal: e.Signal, receiver: e.Receiver, queue: e.Queue})
	ctx = m.cfg.Propagator.Extract(ctx, propagation.MapCarrier(e.Headers))
	attrs := deliveryAttrs(rt.enqueueAttrs, e.TaskID, e.EventID)
	ctx, span := m.tracer.Start(ctx, rt.enqueueName,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(*attrs...))
	putStartAttrs(attrs)
	return ctx, span, rt
}

//go:noinline
func (m *middleware) endEnqueue(ctx context.Context, span trace.Span, rt *routeTelemetry, e *signals.EnqueueInfo, err error) {
	switch {
	case err != nil:
		fail(span, err)
		m.enqueueFailed.Add(ctx, 1, rt.metrics)
	case e.Duplicate:
		span.SetAttributes(attrDuplicate.Bool(true))
		m.duplicates.Add(ctx, 1, rt.metrics)
	default:
		m.enqueued.Add(ctx, 1, rt.metrics)
		if e.Resent {
			m.resent.Add(ctx, 1, rt.metrics)
		}
	}
}

// receive continues the event's trace with a consumer span, "receive
// <signal>", whose context becomes the receiver's ctx; it records the
// delivery lag on the first attempt, the run's duration, and whether it
// succeeded, failed or is now dead.
func (m *middleware) receive(ctx context.Context, r *signals.ReceiveInfo, next func(context.Context) error) error {
	start := time.Now()
	ctx, span, rt := m.startReceive(ctx, r, start)
	defer span.End()
	err := next(ctx)
	m.endReceive(ctx, span, rt, r, time.Since(start), err)
	return err
}

//go:noinline
func (m *middleware) startReceive(ctx context.Context, r *signals.ReceiveInfo, start time.Time) (context.Context, trace.Span, *routeTelemetry) {
	rt := m.routeTelemetry(route{signal: r.Signal, receiver: r.Receiver, queue: r.Queue})
	ctx = m.cfg.Propagator.Extract(ctx, propagation.MapCarrier(r.Headers))
	attrs := deliveryAttrs(rt.receiveAttrs, r.TaskID, r.EventID)
	*attrs = append(*attrs, attrAttempt.Int(r.Attempt))
	kind, with := trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(*attrs...)
	var span trace.Span
	if sc := trace.SpanContextFromContext(ctx); m.cfg.LinkReceive && sc.IsValid() {
		ctx, span = m.tracer.Start(ctx, rt.receiveName, kind, with, trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: sc}))
	} else {
		ctx, span = m.tracer.Start(ctx, rt.receiveName, kind, with)
	}
	putStartAttrs(attrs)
	// An undecodable task has no event ID, and so no send time.
	if r.Attempt == 1 && r.EventID != (ulid.ULID{}) {
		m.lag.Record(ctx, max(start.Sub(r.SentAt), 0).Seconds(), rt.metrics)
	}
	return ctx, span, rt
}

//go:noinline
func (m *middleware) endReceive(ctx context.Context, span trace.Span, rt *routeTelemetry, r *signals.ReceiveInfo, took time.Duration, err error) {
	m.duration.Record(ctx, took.Seconds(), rt.metrics)
	if err == nil {
		m.succeeded.Add(ctx, 1, rt.metrics)
		return
	}
	fail(span, err)
	m.failed.Add(ctx, 1, rt.metrics)
	if r.Dead != "" {
		span.SetAttributes(attrDeadReason.String(string(r.Dead)))
		m.dead.Add(ctx, 1, metric.WithAttributes(
			metricSignal.String(r.Signal), metricReceiver.String(r.Receiver),
			metricQueue.String(r.Queue), metricReason.String(string(r.Dead))))
	}
}

// deliveryAttrs are the start attributes of a delivery's span: the
// route's, then its IDs. Give them back with putStartAttrs.
func deliveryAttrs(routeAttrs []attribute.KeyValue, taskID, eventID ulid.ULID) *[]attribute.KeyValue {
	attrs := startAttrs()
	*attrs = append(*attrs, routeAttrs...)
	*attrs = append(*attrs, attrTaskID.String(taskID.String()), attrEventID.String(eventID.String()))
	return attrs
}

// startAttrsPool recycles the slices a span's start attributes are
// gathered in: trace.WithAttributes hands them to the span's start, which
// copies them (trace.NewSpanStartConfig appends them to the span config's
// own slice), and the SDK copies them again into the span. Once the span
// has started, the slice is free.
var startAttrsPool = sync.Pool{New: func() any {
	attrs := make([]attribute.KeyValue, 0, 10)
	return &attrs
}}

// startAttrs returns an empty slice to gather a span's start attributes in.
func startAttrs() *[]attribute.KeyValue {
	return startAttrsPool.Get().(*[]attribute.KeyValue)
}

// putStartAttrs gives back a slice from startAttrs once its span started.
func putStartAttrs(attrs *[]attribute.KeyValue) {
	clear(*attrs) // drop the strings
	*attrs = (*attrs)[:0]
	startAttrsPool.Put(attrs)
}

// signalTelemetry is what Send needs of one signal, made once.
type signalTelemetry struct {
	sendName string
	// receivers are the receivers sendAttrs and sent were made for: a
	// Connect after the first send makes them anew.
	receivers []string
	// sendAttrs are the send span's attributes that every event of the
	// signal shares.
	sendAttrs []attribute.KeyValue
	// sent holds each receiver's metric attributes, in receivers' order.
	sent []metric.MeasurementOption
}

// signalTelemetry returns the telemetry of signal sent to receivers.
func (m *middleware) signalTelemetry(signal string, receivers []string) *signalTelemetry {
	if st, ok := m.signals.load(signal); ok && slices.Equal(st.receivers, receivers) {
		return st
	}
	return m.newSignalTelemetry(signal, receivers)
}

func (m *middleware) newSignalTelemetry(signal string, receivers []string) *signalTelemetry {
	st := &signalTelemetry{
		sendName:  "send " + signal,
		receivers: slices.Clone(receivers),
		sendAttrs: []attribute.KeyValue{
			systemAttr, opSend, opTypeCreate, destination.String(signal),
			attrReceivers.StringSlice(receivers),
		},
	}
	for _, r := range receivers {
		st.sent = append(st.sent, metric.WithAttributeSet(attribute.NewSet(metricSignal.String(signal), metricReceiver.String(r))))
	}
	m.signals.store(signal, st)
	return st
}

// route is a delivery's address, which its enqueue and receive spans and
// metrics name.
type route struct{ signal, receiver, queue string }

// routeTelemetry is what Enqueue and Receive need of one route, made once.
type routeTelemetry struct {
	enqueueName, receiveName string
	// enqueueAttrs and receiveAttrs are the spans' attributes that every
	// delivery on the route shares.
	enqueueAttrs, receiveAttrs []attribute.KeyValue
	// metrics holds the metrics' attributes.
	metrics metric.MeasurementOption
}

// routeTelemetry returns r's telemetry.
func (m *middleware) routeTelemetry(r route) *routeTelemetry {
	if rt, ok := m.routes.load(r); ok {
		return rt
	}
	return m.newRouteTelemetry(r)
}

func (m *middleware) newRouteTelemetry(r route) *routeTelemetry {
	shared := func(op, opType attribute.KeyValue) []attribute.KeyValue {
		return []attribute.KeyValue{
			systemAttr, op, opType, destination.String(r.signal),
			consumerGroup.String(r.receiver), attrQueue.String(r.queue),
		}
	}
	rt := &routeTelemetry{
		// Spans are named per route, so a trace view tells one receiver's
		// delivery from another's before any span is opened.
		enqueueName:  "enqueue " + r.signal + " → " + r.receiver,
		receiveName:  "receive " + r.signal + " → " + r.receiver,
		enqueueAttrs: shared(opEnqueue, opTypeSend),
		receiveAttrs: shared(opReceive, opTypeProcess),
		metrics: metric.WithAttributeSet(attribute.NewSet(
			metricSignal.String(r.signal), metricReceiver.String(r.receiver), metricQueue.String(r.queue))),
	}
	m.routes.store(r, rt)
	return rt
}

// maxCached bounds a cache: the names of an undecodable task's delivery
// come from the task, and need not be a registry's.
const maxCached = 1024

// cache is a map read on every event and written once per key: a read
// takes no lock and hashes the key with the map's own hash function, and
// a write copies the map.
type cache[K comparable, V any] struct {
	m  atomic.Pointer[map[K]V]
	mu sync.Mutex // serializes writes
}

func (c *cache[K, V]) load(k K) (v V, ok bool) {
	if m := c.m.Load(); m != nil {
		v, ok = (*m)[k]
	}
	return v, ok
}

// store sets k to v, unless the cache is full.
func (c *cache[K, V]) store(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]V
	if m := c.m.Load(); m != nil {
		old = *m
	}
	if _, ok := old[k]; !ok && len(old) >= maxCached {
		return
	}
	m := make(map[K]V, len(old)+1)
	maps.Copy(m, old)
	m[k] = v
	c.m.Store(&m)
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

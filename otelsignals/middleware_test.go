package otelsignals_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/otelsignals"
)

// These tests call the middleware's methods as the library does, with a
// next that stands for the step, and read back what the SDK recorded.

type testBundle struct {
	tm *telemetry
	// root is an open span standing for the request that sends.
	root trace.Span
	ctx  context.Context
}

func setupMiddleware(t *testing.T, cfg otelsignals.Config) (signals.Middleware, *testBundle) {
	t.Helper()
	tm := newTelemetry(t)
	cfg.TracerProvider, cfg.MeterProvider = tm.tp, tm.mp
	ctx, root := tm.tp.Tracer("test").Start(t.Context(), "HTTP handler")
	t.Cleanup(func() { root.End() })
	return otelsignals.New(cfg), &testBundle{tm: tm, root: root, ctx: ctx}
}

// sendInfo is what SendReliable gives Send for one event.
func sendInfo(receivers ...string) *signals.SendInfo {
	id := ulid.Make()
	return &signals.SendInfo{Signal: "order.placed", EventID: id, CorrelationID: id, Receivers: receivers}
}

// send runs m.Send with a next that succeeds, and returns the headers the
// event would carry.
func send(t *testing.T, m signals.Middleware, ctx context.Context, s *signals.SendInfo) map[string]string {
	t.Helper()
	require.NoError(t, m.Send(ctx, s, func(context.Context) error { return nil }))
	return s.Headers
}

func receiveInfo(s *signals.SendInfo, receiver string, attempt int) *signals.ReceiveInfo {
	return &signals.ReceiveInfo{
		Signal: s.Signal, Receiver: receiver, Queue: "q",
		TaskID: ulid.Make(), EventID: s.EventID, Attempt: attempt, MaxRetry: 3,
		SentAt: time.UnixMilli(int64(s.EventID.Time())), Headers: s.Headers,
	}
}

var (
	emailAttrs = []attribute.KeyValue{attribute.String("signal", "order.placed"), attribute.String("receiver", "email")}
	auditAttrs = []attribute.KeyValue{attribute.String("signal", "order.placed"), attribute.String("receiver", "audit")}
)

func TestSend(t *testing.T) {
	t.Parallel()

	t.Run("StartsAProducerSpanUnderTheSendersAndCarriesItInTheHeaders", func(t *testing.T) {
		t.Parallel()
		m, b := setupMiddleware(t, otelsignals.Config{})
		s := sendInfo("email", "audit")
		s.Headers = map[string]string{"outer": "kept"}
		var inner trace.SpanContext
		require.NoError(t, m.Send(b.ctx, s, func(ctx context.Context) error {
			inner = trace.SpanContextFromContext(ctx)
			return nil
		}))

		spans := b.tm.ended("send order.placed")
		require.Len(t, spans, 1)
		span := spans[0]
		require.Equal(t, trace.SpanKindProducer, span.SpanKind())
		require.Equal(t, b.root.SpanContext().SpanID(), span.Parent().SpanID(), "a child of the sender's span")
		require.Equal(t, span.SpanContext(), inner, "next runs inside the span")
		a := attrs(span)
		require.Equal(t, "dj-signals", a["messaging.system"].AsString())
		require.Equal(t, "send", a["messaging.operation.name"].AsString())
		require.Equal(t, "create", a["messaging.operation.type"].AsString())
		require.Equal(t, "order.placed", a["messaging.destination.name"].AsString())
		require.Equal(t, s.EventID.String(), a["signals.event_id"].AsString())
		require.Equal(t, s.EventID.String(), a["signals.correlation_id"].AsString())
		require.Equal(t, []string{"email", "audit"}, a["signals.receivers"].AsStringSlice())
		require.NotContains(t, a, attribute.Key("signals.causation_id"), "a root event has no cause")

		require.Equal(t, "kept", s.Headers["outer"], "an outer middleware's headers stay")
		carried := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(s.Headers))
		require.Equal(t, span.SpanContext().SpanID(), trace.SpanContextFromContext(carried).SpanID(), "the headers carry the send span")
		require.Equal(t, span.SpanContext().TraceID(), trace.SpanContextFromContext(carried).TraceID())

		require.EqualValues(t, 1, b.tm.sum(t, "signals.sent", emailAttrs...))
		require.EqualValues(t, 1, b.tm.sum(t, "signals.sent", auditAttrs...))
	})

	t.Run("AFailedWriteIsAnErrorSpanAndCountsNothing", func(t *testing.T) {
		t.Parallel()
		m, b := setupMiddleware(t, otelsignals.Config{})
		boom := errors.New("tx aborted")
		err := m.Send(b.ctx, sendInfo("email"), func(context.Context) error { return boom })
		require.ErrorIs(t, err, boom, "next's error comes back as it was")
		span := b.tm.ended("send order.placed")[0]
		require.Equal(t, codes.Error, span.Status().Code)
		require.Equal(t, "tx aborted", span.Status().Description)
		require.Zero(t, b.tm.sum(t, "signals.sent"))
	})

	t.Run("AReceiverConnectedAfterTheFirstSendIsCounted", func(t *testing.T) {
		t.Parallel()
		m, b := setupMiddleware(t, otelsignals.Config{})
		send(t, m, b.ctx, sendInfo("email"))
		send(t, m, b.ctx, sendInfo("email", "audit"))

		spans := b.tm.ended("send order.placed")
		require.Len(t, spans, 2)
		require.Equal(t, []string{"email"}, attrs(spans[0])["signals.receivers"].AsStringSlice())
		require.Equal(t, []string{"email", "audit"}, attrs(spans[1])["signals.receivers"].AsStringSlice())
		require.EqualValues(t, 2, b.tm.sum(t, "signals.sent", emailAttrs...))
		require.EqualValues(t, 1, b.tm.sum(t, "signals.sent", auditAttrs...))
	})

	t.Run("ACascadeNamesItsCause", func(t *testing.T) {
		t.Parallel()
		m, b := setupMiddleware(t, otelsignals.Config{})
		s := sendInfo("email")
		s.CausationID, s.Depth = ulid.Make(), 1
		send(t, m, b.ctx, s)
		a := attrs(b.tm.ended("send order.placed")[0])
		require.Equal(t, s.CausationID.String(), a["signals.causation_id"].AsString())
		require.EqualValues(t, 1, a["signals.depth"].AsInt64())
	})

	t.Run("UsesTheConfiguredPropagator", func(t *testing.T) {
		t.Parallel()
		m, b := setupMiddleware(t, otelsignals.Config{Propagator: propagation.NewCompositeTextMapPropagator()})
		require.Empty(t, send(t, m, b.ctx, sendInfo("email")), "a propagator that carries nothing writes nothing")
	})
}

func TestEnqueue(t *testing.T) {
	t.Parallel()

	enqueueInfo := func(s *signals.SendInfo) *signals.EnqueueInfo {
		return &signals.EnqueueInfo{Signal: s.Signal, Receiver: "email", Queue: "q", TaskID: ulid.Make(), EventID: s.EventID, SentAt: time.Now(), Headers: s.Headers}
	}

	t.Run("ContinuesTheSendsTraceAndCounts", func(t *testing.T) {
		t.Parallel()
		m, b := setupMiddleware(t, otelsignals.Config{})
		s := sendInfo("email")
		send(t, m, b.ctx, s)
		sendSpan := b.tm.ended("send order.placed")[0]

		e := enqueueInfo(s)
		// The relay's ctx knows nothing of the sender's trace.
		require.NoError(t, m.Enqueue(context.Background(), e, func(ctx context.Context) error {
			require.Equal(t, sendSpan.SpanContext().TraceID(), trace.SpanContextFromContext(ctx).TraceID())
			return nil
		}))
		dup := enqueueInfo(s)
		require.NoError(t, m.Enqueue(context.Background(), dup, func(context.Context) error {
			dup.Duplicate = true
			return nil
		}))
		down := errors.New("redis down")
		require.ErrorIs(t, m.Enqueue(context.Background(), enqueueInfo(s), func(context.Context) error { return down }), down)
		resent := enqueueInfo(s)
		resent.Resent = true
		require.NoError(t, m.Enqueue(context.Background(), resent, func(context.Context) error { return nil }))

		spans := b.tm.ended("enqueue order.placed")
		require.Len(t, spans, 4)
		for _, span := range spans {
			require.Equal(t, "enqueue order.placed → "+attrs(span)["messaging.consumer.group.name"].AsString(), span.Name(), "named by route, receiver included")
			require.Equal(t, trace.SpanKindClient, span.SpanKind())
			require.Equal(t, sendSpan.SpanContext().SpanID(), span.Parent().SpanID(), "a child of the send span")
			require.Equal(t, sendSpan.SpanContext().TraceID(), span.SpanContext().TraceID())
		}
		a := attrs(spans[0])
		require.Equal(t, "enqueue", a["messaging.operation.name"].AsString())
		require.Equal(t, "send", a["messaging.operation.type"].AsString())
		require.Equal(t, "email", a["messaging.consumer.group.name"].AsString())
		require.Equal(t, "q", a["signals.queue"].AsString())
		require.Equal(t, e.TaskID.String(), a["signals.task_id"].AsString())
		require.Equal(t, e.EventID.String(), a["signals.event_id"].AsString())
		require.True(t, attrs(spans[1])["signals.duplicate"].AsBool())
		require.Equal(t, codes.Error, spans[2].Status().Code)

		q := slices.Concat(emailAttrs, []attribute.KeyValue{attribute.String("queue", "q")})
		require.EqualValues(t, 2, b.tm.sum(t, "signals.enqueued", q...), "the first enqueue and the resend")
		require.EqualValues(t, 1, b.tm.sum(t, "signals.enqueue.resent", q...))
		require.EqualValues(t, 1, b.tm.sum(t, "signals.enqueue.duplicates", q...))
		require.EqualValues(t, 1, b.tm.sum(t, "signals.enqueue.failed", q...))
	})

	t.Run("WithoutATraceInTheHeadersStartsAtTheRelay", func(t *testing.T) {
		t.Parallel()
		m, b := setupMiddleware(t, otelsignals.Config{})
		e := enqueueInfo(sendInfo("email"))
		require.NoError(t, m.Enqueue(context.Background(), e, func(context.Context) error { return nil }))
		span := b.tm.ended("enqueue order.placed")[0]
		require.False(t, span.Parent().IsValid(), "a root span")
	})
}

func TestReceive(t *testing.T) {
	t.Parallel()

	t.Run("ChildOfTheSendAndTheReceiversCtx", func(t *testing.T) {
		t.Parallel()
		m, b := setupMiddleware(t, otelsignals.Config{})
		s := sendInfo("email")
		send(t, m, b.ctx, s)
		sendSpan := b.tm.ended("send order.placed")[0]

		r := receiveInfo(s, "email", 1)
		var cascade trace.SpanContext
		require.NoError(t, m.Receive(context.Background(), r, func(ctx context.Context) error {
			// A receiver that sends with its ctx: a cascade.
			c := sendInfo("audit")
			send(t, m, ctx, c)
			cascade = trace.SpanContextFromContext(ctx)
			return nil
		}))

		spans := b.tm.ended("receive order.placed")
		require.Len(t, spans, 1)
		span := spans[0]
		require.Equal(t, "receive order.placed → email", span.Name(), "named by route, receiver included")
		require.Equal(t, trace.SpanKindConsumer, span.SpanKind())
		require.Equal(t, sendSpan.SpanContext().SpanID(), span.Parent().SpanID(), "a child of the send span")
		require.Equal(t, span.SpanContext(), cascade, "the receiver's ctx carries the receive span")
		require.Empty(t, span.Links())
		a := attrs(span)
		require.Equal(t, "receive", a["messaging.operation.name"].AsString())
		require.Equal(t, "process", a["messaging.operation.type"].AsString())
		require.Equal(t, "order.placed", a["messaging.destination.name"].AsString())
		require.Equal(t, "email", a["messaging.consumer.group.name"].AsString())
		require.Equal(t, "q", a["signals.queue"].AsString())
		require.Equal(t, r.TaskID.String(), a["signals.task_id"].AsString())
		require.Equal(t, r.EventID.String(), a["signals.event_id"].AsString())
		require.EqualValues(t, 1, a["signals.attempt"].AsInt64())
		require.Equal(t, codes.Unset, span.Status().Code)

		sends := b.tm.ended("send order.placed")
		require.Len(t, sends, 2)
		require.Equal(t, span.SpanContext().SpanID(), sends[1].Parent().SpanID(), "the cascade is a child of the receive span")
		require.Equal(t, span.SpanContext().TraceID(), sends[1].SpanContext().TraceID())

		q := slices.Concat(emailAttrs, []attribute.KeyValue{attribute.String("queue", "q")})
		require.EqualValues(t, 1, b.tm.sum(t, "signals.receive.succeeded", q...))
		require.Zero(t, b.tm.sum(t, "signals.receive.failed"))
		n, _ := b.tm.histogram(t, "signals.receive.duration", q...)
		require.EqualValues(t, 1, n)
	})

	t.Run("RecordsTheLagOfTheFirstAttemptOnly", func(t *testing.T) {
		t.Parallel()
		m, b := setupMiddleware(t, otelsignals.Config{})
		s := sendInfo("email")
		s.EventID = ulid.MustNew(ulid.Timestamp(time.Now().Add(-2*time.Second)), ulid.DefaultEntropy())
		send(t, m, b.ctx, s)
		ok := func(context.Context) error { return nil }
		require.NoError(t, m.Receive(b.ctx, receiveInfo(s, "email", 1), ok))
		require.NoError(t, m.Receive(b.ctx, receiveInfo(s, "email", 2), ok))
		undecodable := &signals.ReceiveInfo{Signal: "order.placed", Receiver: "email", Queue: "q", Attempt: 1}
		require.NoError(t, m.Receive(b.ctx, undecodable, ok))

		n, sum := b.tm.histogram(t, "signals.delivery.lag", emailAttrs...)
		require.EqualValues(t, 1, n)
		require.InDelta(t, 2, sum, 1, "seconds since the event was sent")
	})

	t.Run("AFailureIsAnErrorSpanAndDeadIsCountedWithItsReason", func(t *testing.T) {
		t.Parallel()
		m, b := setupMiddleware(t, otelsignals.Config{})
		s := sendInfo("email")
		send(t, m, b.ctx, s)
		flaky := errors.New("smtp timeout")
		require.ErrorIs(t, m.Receive(b.ctx, receiveInfo(s, "email", 1), func(context.Context) error { return flaky }), flaky)
		r := receiveInfo(s, "email", 2)
		refused := signals.Permanent(errors.New("no such address"))
		require.ErrorIs(t, m.Receive(b.ctx, r, func(context.Context) error {
			r.Dead = signals.ReasonPermanent
			return refused
		}), refused)

		spans := b.tm.ended("receive order.placed")
		require.Len(t, spans, 2)
		for _, span := range spans {
			require.Equal(t, codes.Error, span.Status().Code)
			require.Len(t, span.Events(), 1, "the error is recorded")
		}
		require.NotContains(t, attrs(spans[0]), attribute.Key("signals.dead_reason"))
		require.Equal(t, "permanent", attrs(spans[1])["signals.dead_reason"].AsString())

		q := slices.Concat(emailAttrs, []attribute.KeyValue{attribute.String("queue", "q")})
		require.EqualValues(t, 2, b.tm.sum(t, "signals.receive.failed", q...))
		require.EqualValues(t, 1, b.tm.sum(t, "signals.receive.dead", slices.Concat(q, []attribute.KeyValue{attribute.String("reason", "permanent")})...))
		require.Zero(t, b.tm.sum(t, "signals.receive.succeeded"))
	})

	t.Run("LinkReceiveStartsATraceLinkedToTheSend", func(t *testing.T) {
		t.Parallel()
		m, b := setupMiddleware(t, otelsignals.Config{LinkReceive: true})
		s := sendInfo("email")
		send(t, m, b.ctx, s)
		sendSpan := b.tm.ended("send order.placed")[0]
		require.NoError(t, m.Receive(context.Background(), receiveInfo(s, "email", 1), func(context.Context) error { return nil }))

		span := b.tm.ended("receive order.placed")[0]
		require.False(t, span.Parent().IsValid(), "a root span")
		require.NotEqual(t, sendSpan.SpanContext().TraceID(), span.SpanContext().TraceID())
		require.Len(t, span.Links(), 1)
		require.Equal(t, sendSpan.SpanContext().SpanID(), span.Links()[0].SpanContext.SpanID())
	})
}

// BenchmarkMiddleware measures one event's trip through the middleware as
// the bench's e2e scenario runs it: the SDK samples every span and hands it
// to a batch span processor whose exporter drops it, and aggregates the
// metrics. One send, one enqueue and one receive.
func BenchmarkMiddleware(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(dropSpans{}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	m := otelsignals.New(otelsignals.Config{TracerProvider: tp, MeterProvider: mp})
	ok := func(context.Context) error { return nil }
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		s := sendInfo("email")
		_ = m.Send(ctx, s, ok)
		e := &signals.EnqueueInfo{Signal: s.Signal, Receiver: "email", Queue: "q", TaskID: s.EventID, EventID: s.EventID, Headers: s.Headers}
		_ = m.Enqueue(ctx, e, ok)
		_ = m.Receive(ctx, receiveInfo(s, "email", 1), ok)
	}
}

// dropSpans is a span exporter that drops what it is given.
type dropSpans struct{}

func (dropSpans) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (dropSpans) Shutdown(context.Context) error                             { return nil }

package otelsignals_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// telemetry is an OpenTelemetry SDK that keeps what it records in memory:
// every span sampled, metrics read on demand.
type telemetry struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
	mp     *sdkmetric.MeterProvider
}

func newTelemetry(t *testing.T) *telemetry {
	t.Helper()
	tm := &telemetry{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	tm.tp = sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(tm.spans))
	tm.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(tm.reader))
	t.Cleanup(func() {
		require.NoError(t, tm.tp.Shutdown(context.Background()))
		require.NoError(t, tm.mp.Shutdown(context.Background()))
	})
	return tm
}

// ended returns the ended spans named name, or, for a delivery's spans,
// named name followed by " → " and the receiver.
func (tm *telemetry) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range tm.spans.Ended() {
		if s.Name() == name || strings.HasPrefix(s.Name(), name+" → ") {
			out = append(out, s)
		}
	}
	return out
}

// metric returns the collected metric named name, or nil if none was
// recorded.
func (tm *telemetry) metric(t *testing.T, name string) *metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, tm.reader.Collect(t.Context(), &rm))
	for _, sm := range rm.ScopeMetrics {
		for i := range sm.Metrics {
			if sm.Metrics[i].Name == name {
				return &sm.Metrics[i]
			}
		}
	}
	return nil
}

// sum adds up the data points of counter name whose attributes include
// attrs; 0 when it recorded nothing.
func (tm *telemetry) sum(t *testing.T, name string, attrs ...attribute.KeyValue) int64 {
	t.Helper()
	m := tm.metric(t, name)
	if m == nil {
		return 0
	}
	data, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is a %T", name, m.Data)
	var n int64
	for _, dp := range data.DataPoints {
		if has(dp.Attributes, attrs) {
			n += dp.Value
		}
	}
	return n
}

// histogram returns the count and sum of histogram name's data points
// whose attributes include attrs.
func (tm *telemetry) histogram(t *testing.T, name string, attrs ...attribute.KeyValue) (count uint64, sum float64) {
	t.Helper()
	m := tm.metric(t, name)
	if m == nil {
		return 0, 0
	}
	data, ok := m.Data.(metricdata.Histogram[float64])
	require.True(t, ok, "%s is a %T", name, m.Data)
	for _, dp := range data.DataPoints {
		if has(dp.Attributes, attrs) {
			count += dp.Count
			sum += dp.Sum
		}
	}
	return count, sum
}

// gauge returns the value of gauge name at exactly attrs, and whether it
// was observed.
func gauge[N int64 | float64](t *testing.T, tm *telemetry, name string, attrs ...attribute.KeyValue) (N, bool) {
	t.Helper()
	m := tm.metric(t, name)
	if m == nil {
		return 0, false
	}
	data, ok := m.Data.(metricdata.Gauge[N])
	require.True(t, ok, "%s is a %T", name, m.Data)
	want := attribute.NewSet(slices.Clone(attrs)...) // NewSet sorts its argument
	for _, dp := range data.DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Value, true
		}
	}
	return 0, false
}

func has(set attribute.Set, attrs []attribute.KeyValue) bool {
	for _, kv := range attrs {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// attrs returns a span's attributes by key.
func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	out := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		out[kv.Key] = kv.Value
	}
	return out
}

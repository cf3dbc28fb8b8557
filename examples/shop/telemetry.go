package main

import (
	"context"
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	otelprometheus "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.39.0"
	"go.opentelemetry.io/otel/trace"
)

// telemetry holds the OpenTelemetry providers that the otelsignals
// middleware, its gauges and the API record with: metrics that Prometheus
// scrapes at GET /metrics, and traces.
type telemetry struct {
	tracerProvider trace.TracerProvider
	meterProvider  *sdkmetric.MeterProvider
	// metrics serves the Prometheus text format of every instrument made
	// by meterProvider, collected on each request.
	metrics http.Handler
	// spans records every span in memory, for the demo to print; nil when
	// the shop serves, whose spans go to the global tracer provider.
	spans    *tracetest.SpanRecorder
	shutdown func(context.Context) error
}

// newTelemetry sets up metrics for Prometheus and, with recordSpans, an SDK
// tracer provider that keeps the spans in memory. Otherwise traces go to
// otel.GetTracerProvider(), which drops them until a program sets one with
// an exporter (OTLP to a collector, say).
func newTelemetry(recordSpans bool) (*telemetry, error) {
	res := resource.NewSchemaless(semconv.ServiceName("shop"))
	// A registry of the shop's own rather than prometheus.DefaultRegisterer,
	// so that /metrics shows the shop's instruments alone, without the Go
	// runtime's, and nothing else in the process can collide with them.
	registry := prometheus.NewRegistry()
	// Every series comes from one scope, otelsignals': its otel_scope_*
	// labels would only lengthen each line.
	exporter, err := otelprometheus.New(otelprometheus.WithRegisterer(registry), otelprometheus.WithoutScopeInfo())
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	t := &telemetry{
		tracerProvider: otel.GetTracerProvider(),
		meterProvider:  mp,
		metrics:        promhttp.HandlerFor(registry, promhttp.HandlerOpts{}),
		shutdown:       mp.Shutdown,
	}
	if recordSpans {
		t.spans = tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(t.spans), sdktrace.WithResource(res))
		t.tracerProvider = tp
		t.shutdown = func(ctx context.Context) error { return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx)) }
	}
	return t, nil
}

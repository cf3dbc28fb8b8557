package main

import (
	"encoding/json"
	"errors"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.39.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/dj-signals/signals/examples/shop/orders"
)

type placeOrderRequest struct {
	Customer string `json:"customer"`
	Cents    int64  `json:"cents"`
}

type placeOrderResponse struct {
	OrderID int64  `json:"order_id"`
	EventID string `json:"event_id"`
}

// api serves POST /orders, traced, and the metrics handler at GET /metrics.
func api(svc *orders.Service, tracer trace.Tracer, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		// The request's span roots the order's trace (or joins the caller's,
		// given a traceparent header): OrderPlaced's send span is its child,
		// and the enqueue and receive spans follow from that.
		ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, "POST /orders", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(semconv.HTTPRequestMethodPost, semconv.HTTPRoute("/orders")))
		defer span.End()

		var req placeOrderRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Customer == "" {
			span.SetAttributes(semconv.HTTPResponseStatusCode(http.StatusBadRequest))
			http.Error(w, `want {"customer": "...", "cents": N}`, http.StatusBadRequest)
			return
		}
		orderID, eventID, err := svc.PlaceOrder(ctx, req.Customer, req.Cents)
		switch {
		case errors.Is(err, orders.ErrPaymentDeclined):
			span.SetAttributes(semconv.HTTPResponseStatusCode(http.StatusPaymentRequired))
			http.Error(w, err.Error(), http.StatusPaymentRequired)
			return
		case err != nil:
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			span.SetAttributes(semconv.HTTPResponseStatusCode(http.StatusInternalServerError))
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		span.SetAttributes(semconv.HTTPResponseStatusCode(http.StatusCreated), attribute.Int64("shop.order_id", orderID))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(placeOrderResponse{OrderID: orderID, EventID: eventID.String()})
	})
	return mux
}

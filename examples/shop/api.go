package main

import (
	"encoding/json"
	"errors"
	"net/http"

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

// api serves POST /orders.
func api(svc *orders.Service) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		var req placeOrderRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Customer == "" {
			http.Error(w, `want {"customer": "...", "cents": N}`, http.StatusBadRequest)
			return
		}
		orderID, eventID, err := svc.PlaceOrder(r.Context(), req.Customer, req.Cents)
		switch {
		case errors.Is(err, orders.ErrPaymentDeclined):
			http.Error(w, err.Error(), http.StatusPaymentRequired)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(placeOrderResponse{OrderID: orderID, EventID: eventID.String()})
	})
	return mux
}

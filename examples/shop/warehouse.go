package main

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/dj-signals/signals/examples/shop/orders"
)

// warehouse is a stand-in for another team's service: it ships each order
// once, deduplicating by Idempotency-Key, and can be told to fail the next
// calls with 503 to show retries.
type warehouse struct {
	mu        sync.Mutex
	failNext  int
	shipped   map[string]orders.OrderPlacedPayload // by idempotency key
	calls     map[int64]int                        // by order ID
	customers map[string]int                       // calls by customer
}

func newWarehouse() *warehouse {
	return &warehouse{shipped: map[string]orders.OrderPlacedPayload{}, calls: map[int64]int{}, customers: map[string]int{}}
}

func (w *warehouse) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var p orders.OrderPlacedPayload
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls[p.OrderID]++
	w.customers[p.Customer]++
	if w.failNext > 0 {
		w.failNext--
		http.Error(rw, "warehouse busy", http.StatusServiceUnavailable)
		return
	}
	if _, dup := w.shipped[key]; dup {
		rw.WriteHeader(http.StatusOK) // already shipped: nothing more to do
		return
	}
	w.shipped[key] = p
	rw.WriteHeader(http.StatusAccepted)
}

// failNextCalls makes the next n calls answer 503.
func (w *warehouse) failNextCalls(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failNext = n
}

// shipments returns the idempotency keys under which an order shipped.
func (w *warehouse) shipments(orderID int64) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var keys []string
	for k, p := range w.shipped {
		if p.OrderID == orderID {
			keys = append(keys, k)
		}
	}
	return keys
}

func (w *warehouse) callsFor(orderID int64) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls[orderID]
}

func (w *warehouse) callsBy(customer string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.customers[customer]
}

// Package orders is the domain of the example shop: placing an order, and
// the side effects that follow once it is committed.
package orders

import "github.com/dj-signals/signals"

// OrderPlaced is sent, inside the order's transaction, when an order is
// placed.
var OrderPlaced = signals.New[OrderPlacedPayload]("shop.order_placed")

// OrderPlacedPayload carries IDs and small values only: receivers read the
// rest through the repository.
type OrderPlacedPayload struct {
	OrderID  int64  `json:"order_id"`
	Customer string `json:"customer"`
}

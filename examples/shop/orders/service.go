package orders

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals"
)

// ErrPaymentDeclined is returned when an order's payment fails; the order
// and its signal are rolled back together.
var ErrPaymentDeclined = errors.New("payment declined")

// Service places orders.
type Service struct {
	db   signals.DB
	repo *Repository
}

// NewService returns a service beginning its transactions on db.
func NewService(db signals.DB, repo *Repository) *Service {
	return &Service{db: db, repo: repo}
}

// PlaceOrder creates the order and sends OrderPlaced in one transaction,
// then charges the payment; a declined payment rolls both back, so no
// receiver ever hears of the order.
func (s *Service) PlaceOrder(ctx context.Context, customer string, cents int64) (orderID int64, eventID ulid.ULID, err error) {
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if orderID, err = s.repo.CreateOrder(ctx, tx, customer, cents); err != nil {
			return fmt.Errorf("create order: %w", err)
		}
		payload := OrderPlacedPayload{OrderID: orderID, Customer: customer}
		if eventID, err = OrderPlaced.SendReliable(ctx, tx, payload); err != nil {
			return fmt.Errorf("send %s: %w", OrderPlaced.Name(), err)
		}
		return charge(cents)
	})
	return orderID, eventID, err
}

// charge stands in for a payment provider: it declines non-positive
// amounts.
func charge(cents int64) error {
	if cents <= 0 {
		return fmt.Errorf("%w: amount %d", ErrPaymentDeclined, cents)
	}
	return nil
}

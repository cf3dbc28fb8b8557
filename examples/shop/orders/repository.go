package orders

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dj-signals/signals"
)

// Repository is the only code that touches the shop's tables; services and
// receivers go through it.
type Repository struct {
	pool *pgxpool.Pool
}

// NewRepository returns a repository on pool, which it does not close.
func NewRepository(pool *pgxpool.Pool) *Repository { return &Repository{pool: pool} }

// Migrate creates the shop's tables if they are missing.
func (r *Repository) Migrate(ctx context.Context) error {
	_, err := r.pool.Exec(ctx, `
CREATE SCHEMA IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.orders (
    id       bigserial PRIMARY KEY,
    customer text   NOT NULL,
    cents    bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS shop.receipts (
    order_id bigint PRIMARY KEY REFERENCES shop.orders (id),
    email    text NOT NULL,
    task_id  text NOT NULL -- the delivery that stored it
);`)
	return err
}

// CreateOrder inserts an order in tx and returns its ID.
func (r *Repository) CreateOrder(ctx context.Context, tx pgx.Tx, customer string, cents int64) (int64, error) {
	var id int64
	err := tx.QueryRow(ctx, `INSERT INTO shop.orders (customer, cents) VALUES ($1, $2) RETURNING id`, customer, cents).Scan(&id)
	return id, err
}

// OrderExists reports whether an order was committed.
func (r *Repository) OrderExists(ctx context.Context, id int64) (bool, error) {
	var ok bool
	err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM shop.orders WHERE id = $1)`, id).Scan(&ok)
	return ok, err
}

// RecordReceipt stores the receipt email of an order once per event, and
// reports whether this call stored it. signals.Once and the receipt's
// primary key both guard against a second delivery.
func (r *Repository) RecordReceipt(ctx context.Context, e signals.Event[OrderPlacedPayload], email string) (bool, error) {
	var stored bool
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		first, err := signals.Once(ctx, tx, e)
		if err != nil || !first {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO shop.receipts (order_id, email, task_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			e.Payload.OrderID, email, e.TaskID.String())
		stored = tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("record receipt of order %d: %w", e.Payload.OrderID, err)
	}
	return stored, nil
}

// ReceiptTask returns the task ID of the delivery that stored an order's
// receipt.
func (r *Repository) ReceiptTask(ctx context.Context, orderID int64) (string, error) {
	var id string
	err := r.pool.QueryRow(ctx, `SELECT task_id FROM shop.receipts WHERE order_id = $1`, orderID).Scan(&id)
	return id, err
}

// Receipts counts the receipts stored for an order.
func (r *Repository) Receipts(ctx context.Context, orderID int64) (int, error) {
	var n int
	err := r.pool.QueryRow(ctx, `SELECT count(*) FROM shop.receipts WHERE order_id = $1`, orderID).Scan(&n)
	return n, err
}

// ReceiptsFor counts the receipts stored for a customer's orders.
func (r *Repository) ReceiptsFor(ctx context.Context, customer string) (int, error) {
	var n int
	err := r.pool.QueryRow(ctx, `SELECT count(*) FROM shop.receipts JOIN shop.orders o ON o.id = order_id WHERE o.customer = $1`, customer).Scan(&n)
	return n, err
}

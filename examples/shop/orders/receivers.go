package orders

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/dj-signals/signals"
)

// Queue is the asynq queue of the shop's receivers: a name that says whose
// they are when asynqmon lists the queues of a Redis shared with others.
const Queue = "shop"

// Receivers holds what the receivers depend on.
type Receivers struct {
	Repo *Repository
	// WarehouseURL receives a POST per order, with the task ID as
	// Idempotency-Key.
	WarehouseURL string
	HTTP         *http.Client
	Log          *slog.Logger
}

// Connect wires the receivers to OrderPlaced. Every binary of the shop that
// places orders calls it once, at init; the fields must be set before the
// worker runs, since the receivers read them on each delivery.
func (r *Receivers) Connect() {
	OrderPlaced.Connect("email-receipt", r.EmailReceipt, signals.Queue(Queue))
	OrderPlaced.Connect("notify-warehouse", r.NotifyWarehouse, signals.Queue(Queue),
		signals.Backoff(200*time.Millisecond, 5*time.Second), signals.Timeout(10*time.Second))
}

// EmailReceipt records the receipt email of the order, once.
func (r *Receivers) EmailReceipt(ctx context.Context, e signals.Event[OrderPlacedPayload]) error {
	email := fmt.Sprintf("To: %s\nThank you for order #%d.", e.Payload.Customer, e.Payload.OrderID)
	stored, err := r.Repo.RecordReceipt(ctx, e, email)
	if err != nil {
		return err
	}
	r.Log.Info("email-receipt", "order", e.Payload.OrderID, "attempt", e.Attempt, "stored", stored)
	return nil
}

// NotifyWarehouse asks the warehouse to ship the order. The warehouse
// deduplicates by Idempotency-Key, so a second delivery is harmless.
func (r *Receivers) NotifyWarehouse(ctx context.Context, e signals.Event[OrderPlacedPayload]) error {
	body, err := json.Marshal(e.Payload)
	if err != nil {
		return signals.Permanent(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.WarehouseURL, bytes.NewReader(body))
	if err != nil {
		return signals.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", e.TaskID.String())
	resp, err := r.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("call warehouse: %w", err)
	}
	defer resp.Body.Close()
	r.Log.Info("notify-warehouse", "order", e.Payload.OrderID, "attempt", e.Attempt, "status", resp.StatusCode)
	switch {
	case resp.StatusCode >= 500:
		return fmt.Errorf("warehouse answered %s", resp.Status) // retried
	case resp.StatusCode >= 400:
		return signals.Permanent(fmt.Errorf("warehouse refused the order: %s", resp.Status))
	}
	return nil
}

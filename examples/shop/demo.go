package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/examples/shop/orders"
)

// narrate walks through the guarantees against the running shop, printing
// what happens; it returns an error as soon as one does not hold.
func narrate(ctx context.Context, out io.Writer, apiURL string, repo *orders.Repository, wh *warehouse, receivers *orders.Receivers) error {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	say("dj-signals demo: an order service whose side effects must never be lost or invented.")
	say("")

	say("1. Place an order for ada@example.com (POST /orders).")
	say("   The order row and its %s event commit in one transaction.", orders.OrderPlaced.Name())
	say("   The warehouse webhook is set to answer 503 to its next call.")
	wh.failNextCalls(1)
	ada, err := placeOrder(ctx, apiURL, "ada@example.com", 4200)
	if err != nil {
		return err
	}
	say("   → committed order #%d with event %s", ada.OrderID, ada.EventID)
	if err := waitFor(ctx, func() (bool, error) {
		n, err := repo.Receipts(ctx, ada.OrderID)
		return n == 1, err
	}); err != nil {
		return fmt.Errorf("ada's receipt: %w", err)
	}
	say("   ✓ email-receipt stored ada's receipt.")
	if err := waitFor(ctx, func() (bool, error) { return len(wh.shipments(ada.OrderID)) == 1, nil }); err != nil {
		return fmt.Errorf("ada's shipment: %w", err)
	}
	say("   ✓ notify-warehouse got a 503, was retried with backoff, and the order shipped (%d calls).", wh.callsFor(ada.OrderID))
	say("")

	say("2. Place an order for bob@example.com whose payment is declined.")
	say("   SendReliable runs, then the payment fails and the transaction rolls back.")
	if _, err := placeOrder(ctx, apiURL, "bob@example.com", 0); err == nil {
		return fmt.Errorf("bob's order: want a declined payment, got a committed order")
	} else {
		say("   → %v", err)
	}
	say("   Then place an order for carol@example.com and wait until its receivers are done.")
	carol, err := placeOrder(ctx, apiURL, "carol@example.com", 1999)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, func() (bool, error) {
		n, err := repo.Receipts(ctx, carol.OrderID)
		return n == 1 && len(wh.shipments(carol.OrderID)) == 1, err
	}); err != nil {
		return fmt.Errorf("carol's receipt and shipment: %w", err)
	}
	say("   ✓ carol: receipt stored, order shipped.")
	bobReceipts, err := repo.ReceiptsFor(ctx, "bob@example.com")
	if err != nil {
		return err
	}
	if bobReceipts != 0 || wh.callsBy("bob@example.com") != 0 {
		return fmt.Errorf("bob's rolled-back order had effects: %d receipts, %d warehouse calls", bobReceipts, wh.callsBy("bob@example.com"))
	}
	say("   ✓ bob: no receipt and no warehouse call. The rolled-back event never ran.")
	say("")

	say("3. Deliver ada's event to both receivers again, as asynq does when a worker")
	say("   dies after a receiver's work but before acknowledging it.")
	payload := orders.OrderPlacedPayload{OrderID: ada.OrderID, Customer: "ada@example.com"}
	eventID, err := ulid.ParseStrict(ada.EventID)
	if err != nil {
		return err
	}
	receiptTask, err := repo.ReceiptTask(ctx, ada.OrderID)
	if err != nil {
		return err
	}
	again := orders.OrderPlaced.NewEvent("email-receipt", payload)
	again.ID, again.TaskID, again.Attempt = eventID, ulid.MustParseStrict(receiptTask), 2
	if err := receivers.EmailReceipt(ctx, again); err != nil {
		return err
	}
	if n, err := repo.Receipts(ctx, ada.OrderID); err != nil || n != 1 {
		return fmt.Errorf("ada's receipts after a duplicate delivery: %d (%v)", n, err)
	}
	say("   ✓ email-receipt ran again: still one receipt (signals.Once knew the task).")
	again = orders.OrderPlaced.NewEvent("notify-warehouse", payload)
	again.ID, again.TaskID, again.Attempt = eventID, ulid.MustParseStrict(wh.shipments(ada.OrderID)[0]), 2
	if err := receivers.NotifyWarehouse(ctx, again); err != nil {
		return err
	}
	if n := len(wh.shipments(ada.OrderID)); n != 1 {
		return fmt.Errorf("ada's shipments after a duplicate delivery: %d", n)
	}
	say("   ✓ notify-warehouse ran again: same Idempotency-Key, still one shipment.")
	say("")
	say("Every guarantee held. Run `make test` for the full suite.")
	return nil
}

// placeOrder calls the API as a client would.
func placeOrder(ctx context.Context, apiURL, customer string, cents int64) (placeOrderResponse, error) {
	var out placeOrderResponse
	body, _ := json.Marshal(placeOrderRequest{Customer: customer, Cents: cents})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/orders", bytes.NewReader(body))
	if err != nil {
		return out, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(resp.Body)
		return out, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

// waitFor polls cond until it holds, for up to 15 s.
func waitFor(ctx context.Context, cond func() (bool, error)) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok, err := cond()
		switch {
		case err != nil:
			return err
		case ok:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("not done within 15s: are the relay and worker running?")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/dj-signals/signals/examples/shop/orders"
)

// narrate walks through the guarantees against the running shop, printing
// what happens; it returns an error as soon as one does not hold. Then it
// prints the trace of the first order, from spans, and a few lines of the
// shop's /metrics.
func narrate(ctx context.Context, out io.Writer, apiURL string, repo *orders.Repository, wh *warehouse, receivers *orders.Receivers, spans *tracetest.SpanRecorder) error {
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

	say("4. Watch it. otelsignals traced ada's order in one trace, from the request through")
	say("   the Dispatcher to each receiver, the 503 and its retry included:")
	var trace []sdktrace.ReadOnlySpan
	if err := waitFor(ctx, func() (bool, error) {
		trace = traceOf(spans.Ended(), "signals.event_id", ada.EventID)
		return traceMissing(trace) == "", nil
	}); err != nil {
		return fmt.Errorf("ada's trace lacks %s: %w", traceMissing(trace), err)
	}
	if err := writeTraceTree(out, "   ", trace); err != nil {
		return err
	}
	say("   GET /metrics has the same pipeline for Prometheus; a few of its lines:")
	metrics, err := scrape(ctx, apiURL+"/metrics")
	if err != nil {
		return err
	}
	for _, name := range []string{"signals_sent_total", "signals_enqueued_total", "signals_receive_failed_total", "signals_delivery_lag_seconds_count"} {
		for _, line := range metrics {
			if strings.HasPrefix(line, name+"{") && strings.Contains(line, `receiver="notify-warehouse"`) {
				say("   %s", line)
			}
		}
	}
	say("   sent counts bob's rolled-back send too: the middleware runs inside the transaction")
	say("   and cannot see it roll back. enqueued counts only what committed.")
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

// traceMissing names a step the trace lacks: the request, the send, or an
// enqueue and a successful receive for each receiver. It returns "" when
// the trace has them all.
func traceMissing(trace []sdktrace.ReadOnlySpan) string {
	has := func(name string) bool {
		for _, s := range trace {
			if s.Name() == name && s.Status().Code != codes.Error {
				return true
			}
		}
		return false
	}
	signal := orders.OrderPlaced.Name()
	if !has("POST /orders") {
		return "the POST /orders span"
	}
	if !has("send " + signal) {
		return "the send span"
	}
	for _, receiver := range []string{"email-receipt", "notify-warehouse"} {
		for _, op := range []string{"enqueue ", "receive "} {
			if name := op + signal + " → " + receiver; !has(name) {
				return fmt.Sprintf("a successful %q span", name)
			}
		}
	}
	return ""
}

// scrape returns the lines of a Prometheus text exposition.
func scrape(ctx context.Context, url string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return strings.Split(string(body), "\n"), nil
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

package signals_test

import (
	"context"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/dj-signals/signals/signalstest"
)

// OrderRef is the payload of the example's signals.
type OrderRef struct {
	OrderID string `json:"order_id"`
}

// A receiver that sends a signal with its own ctx starts a cascade: the new
// event records the receiver's event as its cause, keeps the root event as
// its correlation, and is one level deeper. Here signalstest.Eager runs the
// receivers in-process at commit; a Dispatcher and a Worker deliver the same
// metadata.
func ExampleEvent_cascade() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.DatabaseURL())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	const dropSchema = `DROP SCHEMA IF EXISTS example_cascade CASCADE`
	if _, err := pool.Exec(ctx, dropSchema); err != nil {
		log.Fatal(err)
	}
	defer pool.Exec(ctx, dropSchema) //nolint:errcheck

	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: "example_cascade"})
	if err != nil {
		log.Fatal(err)
	}
	if err := reg.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	orderPlaced := signals.Register[OrderRef](reg, "order.placed")
	invoiceIssued := signals.Register[OrderRef](reg, "invoice.issued")
	invoiceEmailed := signals.Register[OrderRef](reg, "invoice.emailed")

	names := map[ulid.ULID]string{ulid.ULID{}: "nothing"}
	describe := func(e signals.Event[OrderRef]) {
		names[e.ID] = e.Signal
		fmt.Printf("%s: depth %d, caused by %s, correlation %s\n",
			e.Signal, e.Depth, names[e.CausationID], names[e.CorrelationID])
	}
	// sendNext returns a receiver that sends next with the receiver's ctx.
	sendNext := func(next *signals.Signal[OrderRef]) signals.ReceiverFunc[OrderRef] {
		return func(ctx context.Context, e signals.Event[OrderRef]) error {
			describe(e)
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				_, err := next.SendReliable(ctx, tx, e.Payload)
				return err
			})
		}
	}
	orderPlaced.Connect("issue-invoice", sendNext(invoiceIssued))
	invoiceIssued.Connect("email-invoice", sendNext(invoiceEmailed))
	invoiceEmailed.Connect("log", func(_ context.Context, e signals.Event[OrderRef]) error {
		describe(e)
		return nil
	})

	eager, err := signalstest.NewEager(pool, reg)
	if err != nil {
		log.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, eager, func(tx pgx.Tx) error {
		_, err := orderPlaced.SendReliable(ctx, tx, OrderRef{OrderID: "o-1"})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// order.placed: depth 0, caused by nothing, correlation order.placed
	// invoice.issued: depth 1, caused by order.placed, correlation order.placed
	// invoice.emailed: depth 2, caused by invoice.issued, correlation order.placed
}

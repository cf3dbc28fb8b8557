package dashboard_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/dashboard"
	"github.com/dj-signals/signals/internal/testenv"
)

// An application mounts the dashboard on its own mux, under a path of its
// choosing and behind its own authentication (here, none).
func ExampleNew() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.DatabaseURL())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	const dropSchema = `DROP SCHEMA IF EXISTS example_dashboard CASCADE`
	if _, err := pool.Exec(ctx, dropSchema); err != nil {
		log.Fatal(err)
	}
	defer pool.Exec(ctx, dropSchema) //nolint:errcheck
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: "example_dashboard"})
	if err != nil {
		log.Fatal(err)
	}
	if err := reg.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}

	ledger, err := signals.NewLedger(reg, pool, nil) // with a Redis option, the overview shows the queues too
	if err != nil {
		log.Fatal(err)
	}
	h, err := dashboard.New(ledger, dashboard.Config{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ops/signals/", http.StripPrefix("/ops/signals", h))

	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, page := range []string{"", "dead", "event"} {
		resp, err := http.Get(srv.URL + "/ops/signals/" + page)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		fmt.Println("/ops/signals/"+page, resp.Status)
	}
	// Output:
	// /ops/signals/ 200 OK
	// /ops/signals/dead 200 OK
	// /ops/signals/event 200 OK
}

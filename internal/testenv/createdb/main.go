// Command createdb creates the database the tests run against
// (SIGNALS_TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test)
// when it does not exist yet. `make test` runs it first, so that a missing
// database is one message with what to do, not every test failing alike.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dj-signals/signals/internal/testenv"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := testenv.DatabaseURL()
	created, err := testenv.EnsureDatabase(ctx, url)
	if err != nil {
		fmt.Fprintf(os.Stderr, "make test: the test database: %v\n", err)
		os.Exit(1)
	}
	if created {
		cfg, _ := pgx.ParseConfig(url) // EnsureDatabase parsed it already
		fmt.Printf("make test: created database %q for the tests\n", cfg.Database)
	}
}

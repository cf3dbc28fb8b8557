package signals

import (
	"context"
	"fmt"

	"github.com/dj-signals/signals/internal/store"
)

// DB is what the library reads and writes PostgreSQL through: it runs
// statements (Exec, Query) and starts transactions (Begin, as
// pgx.BeginFunc needs). A *pgxpool.Pool, usually; *pgx.Conn and pgx.Tx
// satisfy it too. The library never closes the pool or connection it is
// given.
type DB = store.DB

// Migrate creates the registry's schema ([RegistryConfig].Schema) if needed
// and applies, in one transaction, every migration of its outbox tables not
// yet recorded in its schema_migrations table. It is idempotent and safe to
// call from several processes starting at once: a transaction-scoped
// advisory lock serializes them. Call DefaultRegistry.Migrate for signals
// made with [New]. It never closes db.
func (r *Registry) Migrate(ctx context.Context, db DB) error {
	if err := store.Migrate(ctx, db, r.cfg.Schema); err != nil {
		return fmt.Errorf("signals: migrate schema %q: %w", r.cfg.Schema, err)
	}
	return nil
}

// Migration is one versioned step of the outbox schema, for teams that run
// migrations with their own tool (goose, golang-migrate, ...). Apply them in
// Version order, each once.
type Migration struct {
	// Version orders the migrations, starting at 1.
	Version int
	// Name describes the step, such as "outbox".
	Name string
	// SQL is the statement text with the schema name already quoted in.
	SQL string
}

// Migrations returns the outbox schema's migrations for schema, in version
// order. Apply them with your migration tool, or let [Registry.Migrate] do
// it; do not mix the two on one schema, since only Migrate records its
// progress in schema_migrations. It returns [ErrInvalidName] for a schema
// that breaks the naming rules.
func Migrations(schema string) ([]Migration, error) {
	ms, err := store.Migrations(schema)
	if err != nil {
		return nil, err
	}
	out := make([]Migration, len(ms))
	for i, m := range ms {
		out[i] = Migration(m)
	}
	return out, nil
}

// missingTables explains a store.TablesMissing error with its fix.
func missingTables(schema string, err error) error {
	return fmt.Errorf("the tables of schema %q are missing: run Registry.Migrate (or apply signals.Migrations) first: %w", schema, err)
}

// explain adds the fix to an error that says the registry's tables are
// missing; other errors, and nil, pass unchanged.
func (r *Registry) explain(err error) error {
	if store.TablesMissing(err) {
		return missingTables(r.Schema(), err)
	}
	return err
}

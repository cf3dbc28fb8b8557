package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/store"
)

func migrateCommand(ctx context.Context, args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("migrate", "signals migrate [--sql] [connection flags]", stdout)
	var c connection
	c.addFlags(fs)
	printSQL := fs.Bool("sql", false, "print the migrations' SQL, in order, instead of applying them; needs no server")
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	migrations, err := signals.Migrations(c.schema)
	if err != nil {
		return schemaError(err)
	}
	if *printSQL {
		return printMigrations(stdout, c.schema, migrations)
	}

	s, err := c.open(ctx, false)
	if err != nil {
		return err
	}
	defer s.Close()
	before, err := s.applied(ctx)
	if err != nil {
		return err
	}
	if err := s.reg.Migrate(ctx, s.pool); err != nil {
		return s.explain(err)
	}
	after, err := s.applied(ctx)
	if err != nil {
		return err
	}
	for _, m := range migrations {
		if slices.Contains(after, m.Version) && !slices.Contains(before, m.Version) {
			fmt.Fprintf(stdout, "applied migration %d (%s)\n", m.Version, m.Name)
		}
	}
	last := migrations[len(migrations)-1]
	switch current := slices.Max(after); {
	case current > last.Version:
		_, err = fmt.Fprintf(stdout, "schema %s is at migration %d, newer than this signals command knows (%d): use a newer one\n", c.schema, current, last.Version)
	case len(after) == len(before):
		_, err = fmt.Fprintf(stdout, "schema %s is already up to date at migration %d (%s)\n", c.schema, last.Version, last.Name)
	default:
		_, err = fmt.Fprintf(stdout, "schema %s is up to date at migration %d (%s)\n", c.schema, last.Version, last.Name)
	}
	return err
}

// applied returns the versions of the migrations recorded in the schema,
// none if it has no migrations table yet.
func (s *session) applied(ctx context.Context) ([]int, error) {
	versions, err := store.Applied(ctx, s.pool, s.conn.schema)
	if store.TablesMissing(err) {
		return nil, nil
	}
	return versions, s.explain(err)
}

// printMigrations writes the migrations as one SQL script, each under a
// comment with its version, for a migration tool to split or apply.
func printMigrations(w io.Writer, schema string, migrations []signals.Migration) error {
	fmt.Fprintf(w, "-- dj-signals schema %s: %d migrations. Apply them in version order, each once.\n", schema, len(migrations))
	fmt.Fprintf(w, "-- Do not also run signals migrate on this schema: only it records its progress in %s.schema_migrations.\n", schema)
	for _, m := range migrations {
		fmt.Fprintf(w, "\n-- signals migration %d: %s\n%s\n", m.Version, m.Name, strings.TrimSpace(m.SQL))
	}
	return nil
}

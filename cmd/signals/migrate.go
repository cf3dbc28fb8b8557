package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/dj-signals/signals"
)

func migrateCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", "signals migrate [--sql] [connection flags]", stderr)
	var c connection
	c.addFlags(fs)
	printSQL := fs.Bool("sql", false, "print the migrations' SQL, in order, instead of applying them; needs no server")
	args, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	migrations, err := signals.Migrations(c.schema)
	if err != nil {
		return usagef("--schema: %v", err)
	}
	if *printSQL {
		return printMigrations(stdout, c.schema, migrations)
	}

	s, err := c.open(ctx, false)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := signals.MigrateSchema(ctx, s.pool, c.schema); err != nil {
		return s.explain(err)
	}
	last := migrations[len(migrations)-1]
	_, err = fmt.Fprintf(stdout, "schema %s is up to date: migration %d (%s)\n", c.schema, last.Version, last.Name)
	return err
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

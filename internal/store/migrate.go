package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/dj-signals/signals/internal/envelope"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one versioned schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the migrations for schema in version order, with the
// schema name quoted into the SQL.
func Migrations(schema string) ([]Migration, error) {
	if err := envelope.ValidateSchema(schema); err != nil {
		return nil, err
	}
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	quoted := pgx.Identifier{schema}.Sanitize()
	out := make([]Migration, 0, len(names))
	for _, path := range names {
		body, err := migrationFiles.ReadFile(path)
		if err != nil {
			return nil, err
		}
		base := strings.TrimSuffix(strings.TrimPrefix(path, "migrations/"), ".sql")
		num, name, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration file %q: want NNN_name.sql", path)
		}
		out = append(out, Migration{
			Version: version,
			Name:    name,
			SQL:     strings.ReplaceAll(string(body), "{{schema}}", quoted),
		})
	}
	return out, nil
}

// Applied returns the versions recorded in schema's schema_migrations
// table, in order.
func Applied(ctx context.Context, db Executor, schema string) ([]int, error) {
	if err := envelope.ValidateSchema(schema); err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, `SELECT version FROM `+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+` ORDER BY version`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// Tables returns the sorted names of the tables in schema.
func Tables(ctx context.Context, db Executor, schema string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT tablename::text FROM pg_catalog.pg_tables WHERE schemaname = $1 ORDER BY tablename`, schema)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Migrate applies the migrations of schema that are not yet recorded in its
// schema_migrations table, in one transaction. A transaction-scoped advisory
// lock keyed on the schema serializes concurrent callers, so several
// processes may migrate at start-up at once.
func Migrate(ctx context.Context, db Beginner, schema string) error {
	migrations, err := Migrations(schema)
	if err != nil {
		return err
	}
	quoted := pgx.Identifier{schema}.Sanitize()
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "dj-signals/migrate/"+schema); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+quoted); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+quoted+`.schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+quoted+`.schema_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		for _, m := range migrations {
			if m.Version <= current {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply migration %03d_%s: %w", m.Version, m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+quoted+`.schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return fmt.Errorf("record migration %03d_%s: %w", m.Version, m.Name, err)
			}
		}
		return nil
	})
}

package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

func TestMigrate(t *testing.T) {
	t.Parallel()
	schema := testenv.Schema(t)
	migrations, err := signals.Migrations(schema)
	require.NoError(t, err)
	last := migrations[len(migrations)-1]

	r := runSignals(t, serverEnv(), "migrate", "--schema", schema)
	requireCode(t, exitOK, r)
	var want strings.Builder
	for _, m := range migrations {
		fmt.Fprintf(&want, "applied migration %d (%s)\n", m.Version, m.Name)
	}
	fmt.Fprintf(&want, "schema %s is up to date at migration %d (%s)\n", schema, last.Version, last.Name)
	require.Equal(t, want.String(), r.stdout)

	r = runSignals(t, serverEnv(), "migrate", "--schema", schema)
	requireCode(t, exitOK, r)
	require.Equal(t, fmt.Sprintf("schema %s is already up to date at migration %d (%s)\n", schema, last.Version, last.Name), r.stdout)
	requireCode(t, exitOK, runSignals(t, serverEnv(), "status", "--schema", schema))

	// A newer command migrated the schema further.
	_, err = testenv.Pool(t).Exec(t.Context(), `INSERT INTO `+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+` (version, name) VALUES (999, 'future')`)
	require.NoError(t, err)
	r = runSignals(t, serverEnv(), "migrate", "--schema", schema)
	requireCode(t, exitOK, r)
	require.Equal(t, fmt.Sprintf("schema %s is at migration 999, newer than this signals command knows (%d): use a newer one\n", schema, last.Version), r.stdout)
}

// TestMigrateListsOnlyWhatItApplied upgrades a schema that has the first
// migrations already, as after an upgrade of the library.
func TestMigrateListsOnlyWhatItApplied(t *testing.T) {
	t.Parallel()
	schema := testenv.Schema(t)
	migrations, err := signals.Migrations(schema)
	require.NoError(t, err)
	require.Greater(t, len(migrations), 2)
	pool := testenv.Pool(t)
	quoted := pgx.Identifier{schema}.Sanitize()
	_, err = pool.Exec(t.Context(), `CREATE SCHEMA `+quoted+`;
CREATE TABLE `+quoted+`.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	for _, m := range migrations[:2] {
		_, err := pool.Exec(t.Context(), m.SQL)
		require.NoError(t, err)
		_, err = pool.Exec(t.Context(), `INSERT INTO `+quoted+`.schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
		require.NoError(t, err)
	}

	r := runSignals(t, serverEnv(), "migrate", "--schema", schema)
	requireCode(t, exitOK, r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, len(migrations)-2+1, r.stdout)
	require.Equal(t, fmt.Sprintf("applied migration %d (%s)", migrations[2].Version, migrations[2].Name), lines[0])
	require.NotContains(t, r.stdout, fmt.Sprintf("migration %d (%s)", migrations[1].Version, migrations[1].Name))
}

func TestMigrateSQL(t *testing.T) {
	t.Parallel()
	schema := testenv.Schema(t)
	migrations, err := signals.Migrations(schema)
	require.NoError(t, err)

	r := runSignals(t, nil, "migrate", "--sql", "--schema", schema)
	requireCode(t, exitOK, r)
	at := 0
	for _, m := range migrations {
		header := "-- signals migration " + strconv.Itoa(m.Version) + ": " + m.Name + "\n"
		i := strings.Index(r.stdout, header)
		require.Greater(t, i, at, "migration %d comes after the previous one", m.Version)
		at = i
		require.Contains(t, r.stdout, strings.TrimSpace(m.SQL))
	}

	// What a migration tool would apply makes a schema the command can read.
	_, err = testenv.Pool(t).Exec(t.Context(), r.stdout)
	require.NoError(t, err)
	requireCode(t, exitOK, runSignals(t, serverEnv(), "status", "--schema", schema))
}

func TestMigrateRefusesABadSchemaName(t *testing.T) {
	t.Parallel()
	r := runSignals(t, serverEnv(), "migrate", "--schema", "Robert'); DROP TABLE students;--")
	requireCode(t, exitUsage, r)
	require.Contains(t, r.stderr, "signals migrate: --schema: invalid name: schema", "the library's prefix is not repeated")
}

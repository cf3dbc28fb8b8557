package main

import (
	"strconv"
	"strings"
	"testing"

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

	for range 2 { // the second run finds nothing to do
		r := runSignals(t, serverEnv(), "migrate", "--schema", schema)
		requireCode(t, exitOK, r)
		require.Contains(t, r.stdout, "schema "+schema+" is up to date: migration ")
		require.Contains(t, r.stdout, last.Name)
	}
	requireCode(t, exitOK, runSignals(t, serverEnv(), "status", "--schema", schema))
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
	require.Contains(t, r.stderr, "invalid schema name")
}

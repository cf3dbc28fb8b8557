package main

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestInboxPruneRemovesOnlyOldRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	inbox := pgx.Identifier{b.schema, "inbox"}.Sanitize()
	_, err := b.pool.Exec(t.Context(), `INSERT INTO `+inbox+` (task_id, event_id, signal, receiver, processed_at)
SELECT gen_random_uuid(), gen_random_uuid(), 'order.placed', 'r', now() - make_interval(days => d, hours => 12)
FROM generate_series(0, 40) AS d`)
	require.NoError(t, err)

	r := b.signals(t, "inbox", "prune", "--older-than", "720h")
	requireCode(t, exitOK, r)
	require.Contains(t, r.stdout, "removed 11 inbox rows recorded before ")
	var left int
	require.NoError(t, b.pool.QueryRow(t.Context(), `SELECT count(*) FROM `+inbox).Scan(&left))
	require.Equal(t, 30, left, "the rows of the last 30 days stay")

	requireCode(t, exitOK, b.signals(t, "inbox", "prune", "--older-than", "720h"))
	require.NoError(t, b.pool.QueryRow(t.Context(), `SELECT count(*) FROM `+inbox).Scan(&left))
	require.Equal(t, 30, left, "nothing more to remove")
}

func TestInboxPruneRefusesAMissingAgeOrSubcommand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.signals(t, "inbox", "prune")
	requireCode(t, exitUsage, r)
	require.Contains(t, r.stderr, "--older-than is required")
	r = b.signals(t, "inbox", "clean", "--older-than", "1h")
	requireCode(t, exitUsage, r)
	require.Contains(t, r.stderr, `unknown subcommand "clean"`)
	r = b.signals(t, "inbox")
	requireCode(t, exitUsage, r)
	require.Contains(t, r.stderr, "missing subcommand")
}

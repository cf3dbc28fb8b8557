package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dj-signals/signals"
)

// inboxPrune times Ledger.PruneInbox on an inbox of n rows as signals.Once
// leaves them, nine in ten older than the retention: the rows are written
// server-side with task IDs that, like ULIDs, grow with their time, then
// VACUUM ANALYZE, as autovacuum would have run while the inbox grew. It
// returns how long the prune took and how many rows it removed.
func inboxPrune(ctx context.Context, e *env, f *fixture, n int) (time.Duration, int, error) {
	inbox := pgx.Identifier{f.schema, "inbox"}.Sanitize()
	old := n / 10 * 9
	load := fmt.Sprintf(`INSERT INTO %s (task_id, event_id, signal, receiver, processed_at)
SELECT (lpad(to_hex(ms), 12, '0') || substr(md5(i::text), 1, 20))::uuid, gen_random_uuid(), 'bench.inbox', 'r',
       to_timestamp(ms / 1000.0)
FROM (SELECT i, (extract(epoch FROM now()) * 1000)::bigint
             - CASE WHEN i <= $2 THEN 7200000 - i ELSE $1 - i END AS ms
      FROM generate_series(1, $1::int) AS i) AS s`, inbox)
	if _, err := e.admin.Exec(ctx, load, n, old); err != nil {
		return 0, 0, fmt.Errorf("load inbox: %w", err)
	}
	if _, err := e.admin.Exec(ctx, `VACUUM ANALYZE `+inbox); err != nil {
		return 0, 0, fmt.Errorf("vacuum inbox: %w", err)
	}
	ledger, err := signals.NewLedger(f.registry, e.admin, nil)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	removed, err := ledger.PruneInbox(ctx, time.Hour)
	took := time.Since(start)
	if err != nil {
		return took, removed, err
	}
	if removed != old {
		f.report.warn("PruneInbox removed %d inbox rows, want %d", removed, old)
	}
	return took, removed, nil
}

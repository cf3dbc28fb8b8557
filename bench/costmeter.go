package main

// What one run of the cost scenario costs: WAL written, CPU time of the
// PostgreSQL cluster, of Redis and of this process, and the statements
// PostgreSQL ran, read before and after the run.

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// costMeter reads the cost of a run on the scenario's own cluster and
// Redis. Its pool connects as a role of its own whose statements
// pg_stat_statements leaves out of the counts: the meter's readings and
// the scenario's checks whether a ledger is empty are not the systems'
// work. Their CPU time is in PostgreSQL's, and is a few milliseconds a run.
type costMeter struct {
	observer   *pgxpool.Pool
	postmaster int
	rdb        *redis.Client
}

// costReading is the state of the counters at one moment.
type costReading struct {
	at       time.Time
	lsn      string // pg_current_wal_insert_lsn()
	pgTicks  uint64 // clock ticks, the postmaster and its children
	redisCPU time.Duration
	appCPU   time.Duration
	// autovacuums counts the vacuums and analyzes autovacuum has run.
	autovacuums int64
}

// cost is what one run cost in all.
type cost struct {
	wal                     int64 // bytes
	pgCPU, redisCPU, appCPU time.Duration
	statements              int64
	autovacuums             int64 // autovacuum's vacuums and analyzes that ended
	wall                    time.Duration
	top                     []statementCost // by total execution time
}

// statementCost is one statement's line in pg_stat_statements.
type statementCost struct {
	query     string
	calls     int64
	totalTime time.Duration
	wal       int64 // bytes
}

// begin checkpoints, so that every run writes full-page images for the
// pages it touches alike, empties pg_stat_statements, and reads the
// counters.
func (m *costMeter) begin(ctx context.Context) (costReading, error) {
	if _, err := m.observer.Exec(ctx, `CHECKPOINT`); err != nil {
		return costReading{}, fmt.Errorf("checkpoint: %w", err)
	}
	if _, err := m.observer.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		return costReading{}, fmt.Errorf("reset pg_stat_statements: %w", err)
	}
	return m.read(ctx)
}

// end reads the counters again and returns the run's cost since before,
// with the top statements by total execution time.
func (m *costMeter) end(ctx context.Context, before costReading, top int) (cost, error) {
	after, err := m.read(ctx)
	if err != nil {
		return cost{}, err
	}
	c := cost{
		pgCPU:       time.Duration(after.pgTicks-before.pgTicks) * time.Second / clockTicks,
		redisCPU:    after.redisCPU - before.redisCPU,
		appCPU:      after.appCPU - before.appCPU,
		wall:        after.at.Sub(before.at),
		autovacuums: after.autovacuums - before.autovacuums,
	}
	if err := m.observer.QueryRow(ctx, `SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint`, after.lsn, before.lsn).Scan(&c.wal); err != nil {
		return cost{}, fmt.Errorf("wal diff: %w", err)
	}
	if err := m.observer.QueryRow(ctx, `SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE userid <> to_regrole(current_user)::oid`).Scan(&c.statements); err != nil {
		return cost{}, fmt.Errorf("count statements: %w", err)
	}
	rows, err := m.observer.Query(ctx, `SELECT query, calls, total_exec_time, wal_bytes::bigint FROM pg_stat_statements
WHERE userid <> to_regrole(current_user)::oid ORDER BY total_exec_time DESC LIMIT $1`, top)
	if err != nil {
		return cost{}, fmt.Errorf("top statements: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var s statementCost
		var ms float64
		if err := rows.Scan(&s.query, &s.calls, &ms, &s.wal); err != nil {
			return cost{}, err
		}
		s.totalTime = time.Duration(ms * float64(time.Millisecond))
		c.top = append(c.top, s)
	}
	return c, rows.Err()
}

func (m *costMeter) read(ctx context.Context) (costReading, error) {
	r := costReading{at: time.Now()}
	if err := m.observer.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text,
    (SELECT sum(autovacuum_count + autoanalyze_count)::bigint FROM pg_stat_all_tables)`).Scan(&r.lsn, &r.autovacuums); err != nil {
		return r, fmt.Errorf("wal position: %w", err)
	}
	var err error
	if r.pgTicks, err = clusterTicks(m.postmaster); err != nil {
		return r, err
	}
	if r.redisCPU, err = redisCPU(ctx, m.rdb); err != nil {
		return r, err
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return r, fmt.Errorf("getrusage: %w", err)
	}
	r.appCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return r, nil
}

// clusterTicks sums the CPU time, in clock ticks, of the postmaster and of
// its live children. The postmaster's own figure includes the children it
// has reaped (/proc's cutime and cstime), so backends and autovacuum
// workers that exited between two readings are counted too.
func clusterTicks(postmaster int) (uint64, error) {
	// The postmaster first: a child that exits after this reading and
	// before its own is lost rather than counted twice.
	pm, err := readProcStat(fmt.Sprintf("/proc/%d/stat", postmaster))
	if err != nil {
		return 0, fmt.Errorf("postmaster CPU: %w", err)
	}
	sum := pm.ticks
	paths, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return 0, err
	}
	for _, p := range paths {
		if st, err := readProcStat(p); err == nil && st.ppid == postmaster {
			sum += st.ticks
		}
	}
	return sum, nil
}

// redisCPU is the Redis server's user and system CPU time so far.
func redisCPU(ctx context.Context, rdb *redis.Client) (time.Duration, error) {
	info, err := rdb.InfoMap(ctx, "cpu").Result()
	if err != nil {
		return 0, fmt.Errorf("redis INFO cpu: %w", err)
	}
	var sum float64
	for _, field := range []string{"used_cpu_sys", "used_cpu_user"} {
		v, err := strconv.ParseFloat(info["CPU"][field], 64)
		if err != nil {
			return 0, fmt.Errorf("redis INFO cpu %s: %w", field, err)
		}
		sum += v
	}
	return time.Duration(sum * float64(time.Second)), nil
}

// shortQuery puts a statement on one line, without the given schemas'
// qualifiers, cut to width characters.
func shortQuery(q string, width int, schemas ...string) string {
	q = strings.Join(strings.Fields(q), " ")
	for _, s := range schemas {
		q = strings.ReplaceAll(strings.ReplaceAll(q, `"`+s+`".`, ""), s+".", "")
	}
	if r := []rune(q); len(r) > width {
		q = string(r[:width-1]) + "…"
	}
	return q
}

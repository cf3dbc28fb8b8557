package main

// Scenario 4, backlog drain: a large committed backlog in the outbox and no
// relay, then one Dispatcher, run as a child process so that its memory can
// be read alone, until the outbox is empty. No Worker runs: the tasks pile
// up in the asynq queue and are deleted afterwards.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals"
)

func runDrain(ctx context.Context, e *env, o options, r *report) error {
	f, err := e.newFixture(ctx, "drain")
	if err != nil {
		return err
	}
	defer f.close()
	n := o.rows

	// The backlog: the rows SendReliable would write for n events with one
	// receiver each, loaded with COPY; then VACUUM ANALYZE, as autovacuum
	// would have done while a real backlog built up.
	loadStart := time.Now()
	if err := copyBacklog(ctx, e.admin, f, n); err != nil {
		return fmt.Errorf("load backlog: %w", err)
	}
	loadTime := time.Since(loadStart)
	if _, err := e.admin.Exec(ctx, `VACUUM ANALYZE `+pgx.Identifier{f.schema, "outbox"}.Sanitize()); err != nil {
		return err
	}
	progress("drain: %d rows loaded in %v", n, loadTime.Round(time.Millisecond))

	// Baseline: the same tasks enqueued straight from memory, as many in
	// flight as the relay uses, no PostgreSQL: the relay's ceiling.
	ceilN := min(n, 100_000)
	ceil, err := enqueueCeiling(ctx, e, f.queue+"_ceiling", ceilN)
	if err != nil {
		return err
	}
	progress("drain: asynq enqueue ceiling %.0f tasks/s", ceil)

	d, err := drainOnce(ctx, e, f, n, o.drainTimeout)
	if err != nil {
		return err
	}
	rate := float64(d.drained) / d.elapsed.Seconds()
	progress("drain: %d rows in %v = %.0f rows/s, relay VmHWM %.1f MB", d.drained, d.elapsed.Round(time.Millisecond), rate, mb(d.hwm))

	cleanStart := time.Now()
	if err := e.deleteQueue(ctx, f.queue); err != nil {
		return err
	}
	cleanTime := time.Since(cleanStart)

	status := ""
	if d.drained < int64(n) {
		status = fmt.Sprintf(" (TIMED OUT after %v: %d of %d rows)", o.drainTimeout, d.drained, n)
	}
	t := &table{
		title: "4. Backlog drain: one Dispatcher, default config, separate process",
		note: fmt.Sprintf("%s outbox rows (one receiver each, as SendReliable writes them) loaded with COPY in %v, then VACUUM ANALYZE; no relay meanwhile. "+
			"Then ONE Dispatcher (DispatcherConfig{Schema} only: BatchSize %d, Concurrency %d) runs in a child process (this binary re-executed) until the outbox is empty. "+
			"No Worker runs: the tasks stay in the asynq queue, deleted afterwards in %v. "+
			"Time runs from the child's start. RSS is the child's: VmRSS sampled from /proc when 25/50/75/100%% of the rows are in the queue, and VmHWM (peak) at the end. "+
			"Baseline: asynq Client.Enqueue of %s tasks of the same size and options (TaskID, Queue, MaxRetry, Timeout, Retention), %d in flight, no PostgreSQL: the relay's ceiling on this machine. One run.",
			fmtCount(n), loadTime.Round(time.Millisecond), signals.DefaultBatchSize, signals.DefaultDispatchConcurrency, cleanTime.Round(time.Millisecond),
			fmtCount(ceilN), signals.DefaultDispatchConcurrency),
		header: []string{"measure", "value", "× enqueue ceiling"},
	}
	t.rows = append(t.rows,
		[]string{"drain rows/s" + status, fmtRate(rate), ratio(rate, ceil)},
		[]string{"drain time", fmtDur(d.elapsed), ""},
		[]string{"asynq enqueue ceiling tasks/s (baseline)", fmtRate(ceil), "1.00×"},
		[]string{"relay peak RSS (VmHWM)", fmt.Sprintf("%.1f MB", mb(d.hwm)), ""},
	)
	for _, s := range d.samples {
		t.rows = append(t.rows, []string{fmt.Sprintf("relay VmRSS at %d%% drained", s.pct), fmt.Sprintf("%.1f MB", mb(s.rss)), ""})
	}
	r.add(t)

	r.target("drain ≥ 20k rows/s", fmt.Sprintf("%s rows/s%s", fmtRate(rate), status), rate >= 20_000 && status == "")
	r.target("drain: relay RSS ≤ 100 MB", fmt.Sprintf("VmHWM %.1f MB", mb(d.hwm)), d.hwm <= 100<<20)
	flat, desc := rssFlat(d.samples)
	r.target("drain: relay RSS flat (25→100% samples within 10 MB)", desc, flat)
	return nil
}

// copyBacklog writes n outbox rows with COPY, with the values SendReliable
// writes for f.one's single receiver.
func copyBacklog(ctx context.Context, pool *pgxpool.Pool, f *fixture, n int) error {
	i := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		i++
		return f.outboxRow(order{OrderID: int64(i), Seq: int64(i - 1)}), nil
	})
	_, err := pool.CopyFrom(ctx, pgx.Identifier{f.schema, "outbox"}, outboxColumns, src)
	return err
}

// enqueueCeiling enqueues n tasks shaped like the relay's into queue q with
// signals.DefaultDispatchConcurrency in flight, returns tasks/s, and deletes
// the queue.
func enqueueCeiling(ctx context.Context, e *env, q string, n int) (float64, error) {
	client := asynq.NewClientFromRedisClient(e.rdb)
	body, _ := json.Marshal(order{OrderID: 1, Seq: 1})
	var next atomic.Int64
	start := time.Now()
	err := parallel(signals.DefaultDispatchConcurrency, func(int) error {
		for i := next.Add(1); i <= int64(n); i = next.Add(1) {
			_, err := client.EnqueueContext(ctx, asynq.NewTask("signals:bench.order_placed:noop", body),
				asynq.TaskID(ulid.Make().String()), asynq.Queue(q), asynq.MaxRetry(signals.DefaultMaxRetries),
				asynq.Timeout(signals.DefaultTimeout), asynq.Retention(signals.DefaultRetention))
			if err != nil {
				return err
			}
		}
		return nil
	})
	rate := float64(n) / time.Since(start).Seconds()
	if derr := e.deleteQueue(ctx, q); err == nil {
		err = derr
	}
	return rate, err
}

type rssSample struct {
	pct int
	rss int64 // bytes
}

type drainResult struct {
	drained int64
	elapsed time.Duration
	hwm     int64 // bytes
	samples []rssSample
}

// drainOnce starts the relay child and waits until the outbox is empty (or
// timeout), sampling the child's RSS along the way.
func drainOnce(ctx context.Context, e *env, f *fixture, n int, timeout time.Duration) (drainResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return drainResult{}, err
	}
	cmd := exec.Command(exe, "-relay-child", f.schema, "-db", e.dbURL, "-redis", e.redis.Addr)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return drainResult{}, err
	}
	pid := cmd.Process.Pid
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()

	var res drainResult
	pending := "asynq:{" + f.queue + "}:pending"
	marks := []int{25, 50, 75, 100}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := start.Add(timeout)
	for {
		select {
		case <-ctx.Done():
			return drainResult{}, ctx.Err()
		case <-tick.C:
		}
		queued, err := e.rdb.LLen(ctx, pending).Result()
		if err != nil {
			return drainResult{}, err
		}
		for len(marks) > 0 && queued*100 >= int64(marks[0])*int64(n) {
			rss, _ := procStatus(pid, "VmRSS")
			res.samples = append(res.samples, rssSample{marks[0], rss})
			marks = marks[1:]
		}
		if queued >= int64(n) {
			var empty bool
			if err := e.admin.QueryRow(ctx, `SELECT NOT EXISTS (SELECT FROM `+pgx.Identifier{f.schema, "outbox"}.Sanitize()+`)`).Scan(&empty); err != nil {
				return drainResult{}, err
			}
			if empty {
				res.drained = int64(n)
				break
			}
		}
		if time.Now().After(deadline) {
			res.drained = queued
			break
		}
	}
	res.elapsed = time.Since(start)
	res.hwm, err = procStatus(pid, "VmHWM")
	return res, err
}

// procStatus reads a "kB" field of /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func rssFlat(s []rssSample) (bool, string) {
	if len(s) == 0 {
		return false, "no samples"
	}
	lo, hi := s[0].rss, s[0].rss
	var parts []string
	for _, x := range s {
		lo, hi = min(lo, x.rss), max(hi, x.rss)
		parts = append(parts, fmt.Sprintf("%.1f", mb(x.rss)))
	}
	return hi-lo <= 10<<20, fmt.Sprintf("VmRSS %s MB at %d–%d%%", strings.Join(parts, " / "), s[0].pct, s[len(s)-1].pct)
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// relayChild is the child process of the drain scenario: one Dispatcher
// with its defaults on schema, until SIGTERM.
func relayChild(schema, dbURL, redisAddr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	d, err := signals.NewDispatcher(pool, asynq.RedisClientOpt{Addr: redisAddr}, signals.DispatcherConfig{Schema: schema})
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

package main

// Scenario 4, backlog drain: a large committed backlog in the outbox and no
// relay, then one Dispatcher, run as a child process so that its memory can
// be read alone, until every row is enqueued (the rows stay in the outbox,
// as the ledger, until a worker acks them). No Worker runs: the tasks pile
// up in a throwaway Redis, stopped afterwards.

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/relay"
	"github.com/dj-signals/signals/internal/store"
)

func runDrain(ctx context.Context, e *env, o options, r *report) error {
	f, err := e.newFixture(ctx, "drain", r)
	if err != nil {
		return err
	}
	defer f.close()
	n := o.rows

	// The relay's tasks, a million of them, go to a Redis of the scenario's
	// own that is simply stopped at the end: nothing to delete from the
	// shared one, where asynq's DeleteQueue would block it for seconds.
	target := newDrainRedis(ctx, e, r, f.queue)
	defer target.cleanup(r)

	// The backlog: the rows SendReliable would write for n events with one
	// receiver each, loaded with COPY; then VACUUM ANALYZE, as autovacuum
	// would have done while a real backlog built up, and a CHECKPOINT so that
	// the load's WAL is not flushed during the drain.
	loadStart := time.Now()
	if _, err := f.outbox.load(ctx, e.admin, f.backlog(n)); err != nil {
		return fmt.Errorf("load backlog: %w", err)
	}
	loadTime := time.Since(loadStart)
	if err := f.outbox.vacuum(ctx, e.admin); err != nil {
		return err
	}
	if _, err := e.admin.Exec(ctx, `CHECKPOINT`); err != nil {
		return err
	}
	progress("drain: %d rows loaded in %v", n, loadTime.Round(time.Millisecond))
	statsPending, err := timeStats(ctx, e, f, target, n, func(r signals.ReceiverStats) int { return r.Pending })
	if err != nil {
		return err
	}
	progress("drain: Ledger.Stats with %d rows pending took %v", n, statsPending.Round(time.Millisecond))

	// Baseline: the relay's own tasks for rows like the backlog's, enqueued
	// straight from memory to the same Redis, as many in flight as the
	// relay uses, no PostgreSQL: the relay's ceiling.
	ceilN := min(n, 100_000)
	ceil, err := enqueueCeiling(ctx, f, target, ceilN)
	if err != nil {
		return err
	}
	progress("drain: asynq enqueue ceiling %.0f tasks/s", ceil)

	d, err := drainOnce(ctx, e, f, target, n, o.drainTimeout)
	if err != nil {
		return err
	}
	rate := float64(d.drained) / d.elapsed.Seconds()
	progress("drain: %d rows in %v = %.0f rows/s, relay VmHWM %.1f MB", d.drained, d.elapsed.Round(time.Millisecond), rate, mb(d.hwm))
	inFlight := int(d.drained - d.dead)
	statsInFlight, err := timeStats(ctx, e, f, target, inFlight, func(r signals.ReceiverStats) int { return r.InFlight })
	if err != nil {
		return err
	}
	progress("drain: Ledger.Stats with %d rows in flight took %v", inFlight, statsInFlight.Round(time.Millisecond))

	pruned, removed, err := inboxPrune(ctx, e, f, n)
	if err != nil {
		return err
	}
	progress("drain: Ledger.PruneInbox removed %d of %d inbox rows in %v", removed, n, pruned.Round(time.Millisecond))

	status := ""
	switch {
	case d.dead > 0:
		status = fmt.Sprintf(" (%d rows DEAD: the relay could not enqueue them)", d.dead)
	case d.drained < int64(n):
		status = fmt.Sprintf(" (TIMED OUT after %v: %d of %d rows)", o.drainTimeout, d.drained, n)
	}
	t := &table{
		title: "4. Backlog drain: one Dispatcher, default config, separate process",
		note: fmt.Sprintf("%s outbox rows (one receiver each, with the values SendReliable writes) loaded with COPY in %v, then VACUUM ANALYZE and a CHECKPOINT; no relay meanwhile. "+
			"Then ONE Dispatcher (default config: BatchSize %d, Concurrency %d) runs in a child process (this binary re-executed) until every row is recorded as enqueued (rows stay in the outbox until a worker acks them). "+
			"%s No Worker runs: the tasks stay in the queue. "+
			"Time runs from the child's start. RSS is the child's: VmRSS sampled from /proc when 25/50/75/100%% of the rows are in the queue, and VmHWM (peak) at the end. "+
			"Baseline: the relay's own asynq tasks (type, headers, payload and options as the relay builds them) for %s rows like the backlog's, "+
			"enqueued with asynq Client.Enqueue to the same Redis, %d in flight, no PostgreSQL: the relay's ceiling on this machine. "+
			"Ledger.Stats (what signals status reads) is timed once, from this process, after the load (every row pending) and once after the drain (every row in flight, "+
			"its task queued in the same Redis). Then an inbox of as many rows as signals.Once leaves them, nine in ten older than an hour, is written server-side and "+
			"VACUUM ANALYZEd, and Ledger.PruneInbox(ctx, time.Hour) (what signals inbox prune runs) is timed. One run.",
			fmtCount(n), loadTime.Round(time.Millisecond), dispatcherBatchSize, dispatcherConcurrency,
			target.describe(), fmtCount(ceilN), dispatcherConcurrency),
		header: []string{"measure", "value", "× enqueue ceiling"},
	}
	t.rows = append(t.rows,
		[]string{"drain rows/s" + status, fmtRate(rate), ratio(rate, ceil)},
		[]string{"drain time", fmtDur(d.elapsed), ""},
		[]string{"asynq enqueue ceiling tasks/s (baseline)", fmtRate(ceil), "1.00×"},
		[]string{"relay peak RSS (VmHWM)", fmt.Sprintf("%.1f MB", mb(d.hwm)), ""},
		[]string{fmt.Sprintf("Ledger.Stats, %s rows pending", fmtCount(n)), fmtDur(statsPending), ""},
		[]string{fmt.Sprintf("Ledger.Stats, %s rows in flight", fmtCount(inFlight)), fmtDur(statsInFlight), ""},
		[]string{fmt.Sprintf("Ledger.PruneInbox, %s of %s inbox rows removed", fmtCount(removed), fmtCount(n)), fmtDur(pruned), ""},
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

// timeStats times one Ledger.Stats on f's outbox, reading the queues
// from target, and warns unless the snapshot counts want rows: a drain cut
// short is still measured.
func timeStats(ctx context.Context, e *env, f *fixture, target *drainRedis, want int, count func(signals.ReceiverStats) int) (time.Duration, error) {
	d, err := signals.NewLedger(f.registry, e.admin, asynq.RedisClientOpt{Addr: target.addr})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	st, err := d.Stats(ctx)
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("ledger stats: %w", err)
	}
	got := 0
	for _, r := range st.Receivers {
		got += count(r)
	}
	if got != want {
		f.report.warn("Ledger.Stats counted %d rows, want %d", got, want)
	}
	return took, nil
}

// drainRedis is where the drain's tasks go: a throwaway redis-server when
// one can be started, else the shared Redis, cleaned in bounded steps.
type drainRedis struct {
	rdb     *redis.Client
	addr    string
	scratch *scratchRedis // nil: the shared Redis
	queues  []string      // to delete from the shared Redis
	why     string        // why the shared Redis
}

// newDrainRedis starts a throwaway redis-server, or falls back to the
// shared Redis: a scenario never fails for want of its scratch server.
func newDrainRedis(ctx context.Context, e *env, r *report, queue string) *drainRedis {
	s, err := startScratchRedis(ctx)
	if err == nil {
		return &drainRedis{rdb: s.rdb, addr: s.addr, scratch: s}
	}
	d := &drainRedis{rdb: e.rdb, addr: e.redis.Addr, queues: []string{queue}, why: "No redis-server binary was found"}
	if !errors.Is(err, errNoRedisServer) {
		r.warn("%v; the drain uses the shared Redis", err)
		d.why = "The throwaway redis-server did not start (see the warnings)"
	}
	return d
}

func (d *drainRedis) describe() string {
	if d.scratch != nil {
		return fmt.Sprintf("The relay enqueues to a throwaway redis-server %s of this scenario's own (no persistence; the baseline's tasks flushed before the drain starts), stopped at the end with the tasks in it.", d.scratch.version)
	}
	return fmt.Sprintf("%s, so the relay enqueues to the shared Redis; the tasks are deleted at the end in bounded steps (SCAN and UNLINK, %s keys at a time).",
		d.why, fmtCount(deleteStep))
}

// empty discards everything enqueued so far.
func (d *drainRedis) empty(ctx context.Context, queue string) error {
	if d.scratch != nil {
		return d.rdb.FlushAll(ctx).Err()
	}
	d.queues = append(d.queues, queue)
	return deleteQueue(ctx, d.rdb, queue)
}

// cleanup stops the throwaway server, or deletes the queues from the shared
// Redis; failures are warnings.
func (d *drainRedis) cleanup(r *report) {
	if d.scratch != nil {
		took, err := d.scratch.stop()
		if err != nil {
			r.warn("stop throwaway redis-server: %v", err)
		}
		progress("drain: throwaway redis-server stopped in %v", took.Round(time.Millisecond))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, q := range d.queues {
		start := time.Now()
		if err := deleteQueue(ctx, d.rdb, q); err != nil {
			r.warn("delete asynq queue %s: %v", q, err)
			continue
		}
		progress("drain: queue %s deleted in %v", q, time.Since(start).Round(time.Millisecond))
	}
}

// backlog yields n outbox rows as SendReliable writes them for f.one.
func (f *fixture) backlog(n int) iter.Seq[store.Row] {
	return func(yield func(store.Row) bool) {
		for i := range n {
			if !yield(f.sentRow(order{OrderID: int64(i + 1), Seq: int64(i)})) {
				return
			}
		}
	}
}

// enqueueCeiling enqueues n of the relay's tasks for rows like f's backlog
// into a queue of their own on target, with the relay's concurrency, and
// returns tasks/s. The tasks are discarded afterwards.
func enqueueCeiling(ctx context.Context, f *fixture, target *drainRedis, n int) (float64, error) {
	client := asynq.NewClientFromRedisClient(target.rdb)
	queue := f.queue + "_ceiling"
	tasks := make([]*asynq.Task, n)
	opts := make([][]asynq.Option, n)
	for i := range n {
		row := f.sentRow(order{OrderID: int64(i + 1), Seq: int64(i)})
		row.Queue = queue
		var err error
		if tasks[i], opts[i], err = relay.Task(row, f.schema, dispatcherRetention); err != nil {
			return 0, err
		}
	}
	var next atomic.Int64
	start := time.Now()
	err := parallel(dispatcherConcurrency, func(int) error {
		for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
			if _, err := client.EnqueueContext(ctx, tasks[i], opts[i]...); err != nil {
				return err
			}
		}
		return nil
	})
	rate := float64(n) / time.Since(start).Seconds()
	if err != nil {
		return 0, err
	}
	if err := target.empty(ctx, queue); err != nil {
		f.report.warn("discard the ceiling's tasks: %v", err)
	}
	return rate, nil
}

type rssSample struct {
	pct int
	rss int64 // bytes
}

type drainResult struct {
	drained int64
	dead    int64 // rows the relay could not enqueue
	elapsed time.Duration
	hwm     int64 // bytes
	samples []rssSample
}

// drainOnce starts the relay child and waits until every row is enqueued
// (or timeout), sampling the child's RSS along the way.
func drainOnce(ctx context.Context, e *env, f *fixture, target *drainRedis, n int, timeout time.Duration) (drainResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return drainResult{}, err
	}
	cmd := exec.Command(exe, "-relay-child", f.schema, "-db", e.dbURL, "-redis", target.addr)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return drainResult{}, err
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
		}
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
		case err := <-exited:
			exited <- err // for the deferred stop
			return drainResult{}, fmt.Errorf("relay child exited before the outbox was empty: %v", err)
		case <-tick.C:
		}
		queued, err := target.rdb.LLen(ctx, pending).Result()
		if err != nil {
			return drainResult{}, err
		}
		for len(marks) > 0 && queued*100 >= int64(marks[0])*int64(n) {
			rss, _ := procStatus(pid, "VmRSS")
			res.samples = append(res.samples, rssSample{marks[0], rss})
			marks = marks[1:]
		}
		if queued >= int64(n) {
			// Every row's task is in Redis: the relay enqueued them all.
			if res.dead, err = f.outbox.dead(ctx, e.admin); err != nil {
				return drainResult{}, err
			}
			res.drained = int64(n)
			break
		}
		if time.Now().After(deadline) {
			res.drained = queued
			// Rows the relay recorded as dead never reach the queue; say so rather than
			// report a plain timeout.
			if res.dead, err = f.outbox.dead(ctx, e.admin); err != nil {
				return drainResult{}, err
			}
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
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: schema})
	if err != nil {
		return err
	}
	d, err := signals.NewDispatcher(reg, pool, asynq.RedisClientOpt{Addr: redisAddr}, signals.DispatcherConfig{})
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

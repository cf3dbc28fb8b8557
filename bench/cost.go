package main

// Scenario "cost": what each event costs PostgreSQL, Redis and the
// application, on a PostgreSQL cluster and a Redis of the scenario's own, so
// that the servers' CPU time is the systems' alone. Cost moves far less with
// the machine's load than throughput does, so database-side designs are
// judged by it: the WAL and CPU per event of dj-signals against those of the
// least a ledger can write (the minimum ledger, minledger.go). Then a
// burn-down: a committed backlog, delivered by dj-signals and by River.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/dj-signals/signals"
)

const (
	// costObserver is the role the meter connects as; pg_stat_statements'
	// counts leave its statements out.
	costObserver = "bench_observer"
	// costSettle is how long a delivery side runs before the counters are
	// read: its start-up (River's leader election, the first polls) is not
	// part of any event's cost.
	costSettle = 500 * time.Millisecond
	// costCustomerLen makes the business row about 150 bytes on disk: a
	// 24-byte tuple header, the bigint ID, the customer, the integer cents.
	costCustomerLen = 110
	costTop         = 5 // statements listed for the dj-signals run
	// riverFetchCooldown is the burn-down River's FetchCooldown (River's
	// default is 100 ms, which caps it at MaxWorkers jobs per 100 ms).
	riverFetchCooldown = 5 * time.Millisecond
)

// costClusterSettings are the scenario's PostgreSQL settings. autovacuum
// looks every second rather than every minute, so that each run pays for
// vacuuming its own dead rows during the run, not another system's.
var costClusterSettings = []string{
	"max_connections=100", "shared_buffers=128MB", "fsync=on", "synchronous_commit=on",
	"autovacuum=on", "autovacuum_naptime=1s", "shared_preload_libraries=pg_stat_statements",
}

// Names of the systems only the cost scenario runs.
const (
	sysFloor     = "floor"
	sysMinLedger = "minimum ledger"
)

// costSystem is a system of the cost scenario and how to tell that its run
// is over.
type costSystem struct {
	system
	delivers bool // false: the floor, whose run ends with the senders
	// empty reports whether the system's ledger has nothing left to
	// deliver; nil: no ledger.
	empty func(ctx context.Context, db *pgxpool.Pool) (bool, error)
}

// costWorld is the scenario's own PostgreSQL and Redis, the fixture on
// them, and the pools that live through every run.
type costWorld struct {
	pg        *scratchPostgres
	redis     *scratchRedis
	env       *env
	f         *fixture
	min       *minLedger
	senders   *pgxpool.Pool
	receivers *pgxpool.Pool // the transactions of receivers that write
	meter     *costMeter
}

func runCost(ctx context.Context, _ *env, o options, r *report) error {
	w, err := startCostWorld(ctx, r)
	if err != nil {
		return err
	}
	defer w.close(r)
	f := w.f

	systems := []costSystem{
		{system: f.floorSystem()},
		{system: f.asynqSystem(), delivers: true},
		{system: w.min.system(sysMinLedger), delivers: true, empty: w.min.empty},
		{system: f.signalsSystem(sysSignals, signals.DispatcherConfig{}, signals.WorkerConfig{}), delivers: true, empty: f.outboxEmpty},
		{system: f.riverSystem(sysRiver, river.QueueConfig{MaxWorkers: riverMaxWorkers}), delivers: true, empty: f.riverEmpty},
	}
	effects, err := f.effectSystems(w.receivers)
	if err != nil {
		return err
	}
	for _, s := range effects {
		systems = append(systems, costSystem{system: s, delivers: true, empty: f.outboxEmpty})
	}
	codec, err := f.codecSystem()
	if err != nil {
		return err
	}
	systems = append(systems, costSystem{system: codec, delivers: true, empty: f.outboxEmpty})
	runs := map[string][]cost{}
	top := map[string][]statementCost{} // dj-signals' and the minimum ledger's, last rep
	for rep := range o.reps {
		for _, s := range systems {
			c, err := w.costOnce(ctx, s, o.events)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			runs[s.name] = append(runs[s.name], c)
			if s.name == sysSignals || s.name == sysMinLedger {
				top[s.name] = c.top
			}
			progress("cost rep %d %-15s %s", rep+1, s.name, c.describe(o.events))
		}
	}
	costTable(r, w, runs, o)
	topTable(r, w, sysSignals, top[sysSignals], o.events, o.reps)
	topTable(r, w, sysMinLedger, top[sysMinLedger], o.events, o.reps)
	effectTable(r, runs, o)
	codecTable(r, runs, o)

	plain, err := w.heldOnce(ctx, o.held, false)
	if err != nil {
		return fmt.Errorf("paced run: %w", err)
	}
	held, err := w.heldOnce(ctx, o.held, true)
	if err != nil {
		return fmt.Errorf("paced run with a transaction held: %w", err)
	}
	heldTable(r, plain, held, o.held)

	// The burn-down: dj-signals and River alternate.
	riverBacklog, err := f.riverBacklogSystem()
	if err != nil {
		return err
	}
	burn := []costSystem{
		{system: f.signalsSystem(sysSignals, signals.DispatcherConfig{}, signals.WorkerConfig{}), delivers: true, empty: f.outboxEmpty},
		{system: riverBacklog, delivers: true, empty: f.riverEmpty},
	}
	burnRuns := map[string][]cost{}
	for rep := range o.reps {
		for _, s := range burn {
			c, err := w.burnOnce(ctx, s, o.burnDown)
			if err != nil {
				return fmt.Errorf("burn-down %s: %w", s.name, err)
			}
			burnRuns[s.name] = append(burnRuns[s.name], c)
			progress("burn-down rep %d %-10s %8.0f events/s; %s", rep+1, s.name, float64(o.burnDown)/c.wall.Seconds(), c.describe(o.burnDown))
		}
	}
	burnTable(r, w, burnRuns, o)
	return nil
}

// startCostWorld starts the scenario's PostgreSQL and Redis and sets up
// the fixture on them.
func startCostWorld(ctx context.Context, r *report) (_ *costWorld, err error) {
	w := &costWorld{}
	defer func() {
		if err != nil {
			w.close(r)
		}
	}()
	if w.pg, err = startScratchPostgres(ctx, costClusterSettings...); err != nil {
		return nil, fmt.Errorf("the scenario's own PostgreSQL: %w", err)
	}
	if w.redis, err = startScratchRedis(ctx); err != nil {
		if errors.Is(err, errNoRedisServer) {
			err = errors.New("the scenario's own Redis: no redis-server on PATH (install Redis)")
		}
		return nil, err
	}
	conn, err := pgx.Connect(ctx, w.pg.url("postgres"))
	if err != nil {
		return nil, err
	}
	_, err = conn.Exec(ctx, `CREATE EXTENSION pg_stat_statements; CREATE ROLE `+costObserver+` LOGIN SUPERUSER`)
	_ = conn.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("set up the scenario's PostgreSQL: %w", err)
	}
	if w.env, err = newEnv(ctx, w.pg.url("postgres"), w.redis.addr); err != nil {
		return nil, err
	}
	if w.f, err = w.env.newFixture(ctx, "cost", r); err != nil {
		return nil, err
	}
	w.f.customer = strings.Repeat("c", costCustomerLen)
	w.min = newMinLedger(w.f)
	if err := w.min.setup(ctx); err != nil {
		return nil, err
	}
	if w.senders, err = newPool(ctx, w.pg.url("postgres"), e2eSenders); err != nil {
		return nil, err
	}
	if w.receivers, err = newPool(ctx, w.pg.url("postgres"), workerConcurrency); err != nil {
		return nil, err
	}
	observer, err := newPool(ctx, w.pg.url(costObserver), 2)
	if err != nil {
		return nil, err
	}
	w.meter = &costMeter{observer: observer, postmaster: w.pg.pid(), rdb: w.redis.rdb}
	return w, nil
}

// close stops what startCostWorld started; failures are warnings.
func (w *costWorld) close(r *report) {
	if w.meter != nil {
		w.meter.observer.Close()
	}
	if w.senders != nil {
		w.senders.Close()
	}
	if w.receivers != nil {
		w.receivers.Close()
	}
	if w.f != nil {
		w.f.close()
	}
	if w.env != nil {
		w.env.close()
	}
	if w.redis != nil {
		if _, err := w.redis.stop(); err != nil {
			r.warn("stop the cost scenario's redis-server: %v", err)
		}
	}
	if w.pg != nil {
		if err := w.pg.stop(); err != nil {
			r.warn("stop the cost scenario's PostgreSQL: %v", err)
		}
	}
}

// costOnce runs n events through s with e2eSenders goroutines, the delivery
// side running, and returns the cost from the first send until every
// receiver has run and the ledger is empty.
func (w *costWorld) costOnce(ctx context.Context, s costSystem, n int) (cost, error) {
	if err := w.min.truncate(ctx); err != nil {
		return cost{}, err
	}
	tr, err := w.f.reset(ctx, n)
	if err != nil {
		return cost{}, err
	}
	stop, err := s.start(ctx)
	if err != nil {
		return cost{}, err
	}
	defer stop()
	select {
	case <-time.After(costSettle):
	case <-ctx.Done():
		return cost{}, ctx.Err()
	}
	before, err := w.meter.begin(ctx)
	if err != nil {
		return cost{}, err
	}
	if err := w.send(ctx, s, tr, n); err != nil {
		return cost{}, err
	}
	if err := w.await(ctx, s, tr, max(time.Minute, 10*time.Since(before.at))); err != nil {
		return cost{}, err
	}
	return w.meter.end(ctx, before, costTop)
}

// burnOnce commits n events through s with no delivery side running, then
// starts it and returns the cost from its start until the backlog is gone.
func (w *costWorld) burnOnce(ctx context.Context, s costSystem, n int) (cost, error) {
	tr, err := w.f.reset(ctx, n)
	if err != nil {
		return cost{}, err
	}
	if err := w.send(ctx, s, tr, n); err != nil {
		return cost{}, err
	}
	before, err := w.meter.begin(ctx)
	if err != nil {
		return cost{}, err
	}
	stop, err := s.start(ctx)
	if err != nil {
		return cost{}, err
	}
	defer stop()
	if err := w.await(ctx, s, tr, 5*time.Minute); err != nil {
		return cost{}, err
	}
	return w.meter.end(ctx, before, 0)
}

// send runs n business transactions through s from e2eSenders goroutines.
func (w *costWorld) send(ctx context.Context, s costSystem, tr *tracker, n int) error {
	var next atomic.Int64
	return parallel(e2eSenders, func(int) error {
		for seq := next.Add(1) - 1; seq < int64(n); seq = next.Add(1) - 1 {
			if err := s.send(ctx, w.senders, seq, func() { tr.committed(seq) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// await waits until every receiver of s has run and its ledger is empty,
// checking the ledger every 10 ms once the receivers are done.
func (w *costWorld) await(ctx context.Context, s costSystem, tr *tracker, timeout time.Duration) error {
	if !s.delivers {
		return nil
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	select {
	case <-tr.done:
	case <-deadline.C:
		return fmt.Errorf("timed out after %v: %d of %d receivers ran", timeout, int64(len(tr.start))-tr.left.Load(), len(tr.start))
	case <-ctx.Done():
		return ctx.Err()
	}
	if s.empty == nil {
		return nil
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		empty, err := s.empty(ctx, w.meter.observer)
		if err != nil || empty {
			return err
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return fmt.Errorf("timed out after %v: every receiver ran, the ledger is not empty", timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// floorSystem is the business transaction alone, with nothing to deliver.
func (f *fixture) floorSystem() system {
	return system{
		name:  sysFloor,
		start: func(context.Context) (func(), error) { return func() {}, nil },
		send: func(ctx context.Context, pool *pgxpool.Pool, seq int64, committed func()) error {
			err := f.placeOrder(ctx, pool, seq, nil)
			if err == nil {
				committed()
			}
			return err
		},
	}
}

// riverBacklogSystem is River with the burn-down's settings. Its send
// inserts through a client that is never started, so that a backlog can be
// committed before any River client works it.
func (f *fixture) riverBacklogSystem() (system, error) {
	inserter, err := f.newRiver(f.env.admin, river.QueueConfig{MaxWorkers: riverMaxWorkers})
	if err != nil {
		return system{}, err
	}
	s := f.riverSystem(sysRiver, river.QueueConfig{MaxWorkers: riverMaxWorkers, FetchCooldown: riverFetchCooldown})
	s.send = func(ctx context.Context, pool *pgxpool.Pool, seq int64, committed func()) error {
		err := f.placeOrder(ctx, pool, seq, func(ctx context.Context, tx pgx.Tx, o order) error {
			_, err := inserter.InsertTx(ctx, tx, o, &river.InsertOpts{Queue: f.queue})
			return err
		})
		if err == nil {
			committed()
		}
		return err
	}
	return s, nil
}

// outboxEmpty reports whether every outbox row's receiver has succeeded.
func (f *fixture) outboxEmpty(ctx context.Context, db *pgxpool.Pool) (bool, error) {
	n, err := f.outbox.unfinished(ctx, db)
	return n == 0, err
}

// riverEmpty reports whether every River job has completed. River keeps
// completed jobs (for 24 hours by default); they are not work left.
func (f *fixture) riverEmpty(ctx context.Context, db *pgxpool.Pool) (bool, error) {
	var left bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT FROM `+pgx.Identifier{f.riverSchema, "river_job"}.Sanitize()+` WHERE state <> 'completed')`).Scan(&left)
	return !left, err
}

// describe is one run's progress line.
func (c cost) describe(n int) string {
	e := c.perEvent(n)
	return fmt.Sprintf("WAL %5.0f B, PG %4.0f µs, Redis %4.0f µs, app %4.0f µs, %4.1f statements per event; wall %v; %d autovacuums",
		e.wal, e.pgCPU, e.redisCPU, e.appCPU, e.statements, c.wall.Round(time.Millisecond), c.autovacuums)
}

// eventCost is a run's cost divided by its events: bytes, µs, statements.
type eventCost struct {
	wal, pgCPU, redisCPU, appCPU, statements float64
}

func (c cost) perEvent(n int) eventCost {
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	return eventCost{float64(c.wal) / float64(n), us(c.pgCPU), us(c.redisCPU), us(c.appCPU), float64(c.statements) / float64(n)}
}

// costFigures are the medians over a system's runs, in table order: WAL
// B/event, PG, Redis, app and all CPU µs/event, statements/event, wall s.
func costFigures(runs []cost, n int) []float64 {
	col := func(f func(cost) float64) float64 {
		xs := make([]float64, len(runs))
		for i, c := range runs {
			xs[i] = f(c)
		}
		return median(xs)
	}
	per := func(f func(eventCost) float64) float64 { return col(func(c cost) float64 { return f(c.perEvent(n)) }) }
	return []float64{
		per(func(e eventCost) float64 { return e.wal }),
		per(func(e eventCost) float64 { return e.pgCPU }),
		per(func(e eventCost) float64 { return e.redisCPU }),
		per(func(e eventCost) float64 { return e.appCPU }),
		per(func(e eventCost) float64 { return e.pgCPU + e.redisCPU + e.appCPU }),
		per(func(e eventCost) float64 { return e.statements }),
		col(func(c cost) float64 { return c.wall.Seconds() }),
		col(func(c cost) float64 { return float64(c.autovacuums) }),
	}
}

var costHeader = []string{"WAL B/event", "PG CPU µs/event", "Redis CPU µs/event", "app CPU µs/event", "all CPU µs/event", "statements/event", "wall s", "autovacuums"}

// costCells formats costFigures' figures.
func costCells(xs []float64) []string {
	cells := make([]string, len(xs))
	for i, x := range xs {
		cells[i] = costCell(i, x)
	}
	return cells
}

func costCell(i int, x float64) string {
	if i == 5 || i == 6 { // statements/event, wall s
		return fmt.Sprintf("%.2f", x)
	}
	return fmt.Sprintf("%.0f", x)
}

// costRatio is ratio for figure i of costFigures, but "–" where the base
// shows as zero (River uses no Redis): a ratio to nothing says nothing.
func costRatio(i int, x, base float64) string {
	if strings.Trim(costCell(i, base), "-0.") == "" {
		return "–"
	}
	return ratio(x, base)
}

// costTable adds the per-event cost of each system and dj-signals' targets
// against the minimum ledger.
func costTable(r *report, w *costWorld, runs map[string][]cost, o options) {
	t := &table{
		title: "Cost per event: PostgreSQL, Redis and the application, on servers of the scenario's own",
		note: fmt.Sprintf("On a PostgreSQL %s cluster and a Redis %s of the scenario's own, not the shared servers: initdb into a temporary directory, trust authentication over loopback, %s "+
			"(autovacuum looks every second, so that each run pays for vacuuming its own dead rows); redis-server without persistence. "+
			"%s events per run from %d sender goroutines, each its own business transaction: one order row of about 150 bytes plus the system's send, for one no-op receiver. "+
			"floor: the order row alone. plain asynq: Enqueue after the commit (not crash-safe), asynq server with the dj-signals Worker's Concurrency (%d) and TaskCheckInterval (%v). "+
			"minimum ledger (written in the benchmark, the reference): one row in the transaction; a relay reads past a position kept in memory (%d rows a read) and enqueues each row with its ID as asynq TaskID (%d in flight), writing nothing per row; "+
			"the same asynq server runs the receiver, and the row is deleted in a batch every %v: two writes per event. Its relay learns from the senders, in this process and at no database cost, below which ID every transaction has ended, as IDs are handed out in order and committed out of order: "+
			"a lower bound on what any relay pays for that guarantee. "+
			"dj-signals: Dispatcher + Worker at their defaults. River: InsertTx in the transaction, MaxWorkers %d, other settings default (FetchCooldown 100 ms). "+
			"A run goes from the first send until every receiver has run and the ledger is empty (dj-signals: no outbox row pending or enqueued; minimum ledger: no row; River: every job completed), "+
			"the delivery side started %v before; a CHECKPOINT before each run, so that every run writes full-page images alike. "+
			"WAL: pg_current_wal_insert_lsn() before and after. PG CPU: user + system time of the postmaster and its children from /proc/<pid>/stat; "+
			"the postmaster's figure includes the children it reaped, so backends and autovacuum workers that came and went during the run count too, and so do the checkpointer and the WAL writer. "+
			"Redis CPU: INFO cpu (used_cpu_sys + used_cpu_user). app CPU: getrusage of this process, which runs the senders, the relay and the workers alike. "+
			"statements: pg_stat_statements calls (reset before each run; BEGIN and COMMIT count), leaving out the meter's own, which connects as a role of its own. "+
			"autovacuums: the vacuums and analyzes autovacuum finished during the run, on any table (pg_stat_all_tables). "+
			"Median of %d runs, the systems interleaved. The ÷ rows give dj-signals' figures over the minimum ledger's, in total and above the floor (each minus the floor's).",
			w.pg.version, w.redis.version, strings.Join(costClusterSettings, ", "), fmtCount(o.events), e2eSenders,
			workerConcurrency, workerTaskCheckInterval, minLedgerBatch, minLedgerConcurrency, minLedgerAckEvery, riverMaxWorkers, costSettle, o.reps),
		header: append([]string{"system"}, costHeader...),
	}
	figures := map[string][]float64{}
	for _, name := range []string{sysFloor, sysAsynq, sysMinLedger, sysSignals, sysRiver} {
		figures[name] = costFigures(runs[name], o.events)
		t.rows = append(t.rows, append([]string{name}, costCells(figures[name])...))
	}
	dj, ref, floor := figures[sysSignals], figures[sysMinLedger], figures[sysFloor]
	total, above := []string{"dj-signals ÷ minimum ledger"}, []string{"dj-signals ÷ minimum ledger, above the floor"}
	for i := range dj[:len(dj)-1] {
		total = append(total, costRatio(i, dj[i], ref[i]))
		above = append(above, costRatio(i, dj[i]-floor[i], ref[i]-floor[i]))
	}
	t.rows = append(t.rows, append(total, ""), append(above, ""))
	r.add(t)

	for _, c := range []struct {
		what, unit string
		col        int
		limit      float64
	}{
		{"WAL", "B/event", 0, 1.2},
		{"PG CPU", "µs/event", 1, 1.2},
		{"wall time", "s", 6, 1.15},
	} {
		r.target(fmt.Sprintf("cost: dj-signals %s ≤ %.2f× minimum ledger", c.what, c.limit),
			fmt.Sprintf("%.4g vs %.4g %s = %s", dj[c.col], ref[c.col], c.unit, ratio(dj[c.col], ref[c.col])), dj[c.col] <= c.limit*ref[c.col])
	}
}

// topTable adds the statements that took system's PostgreSQL the most time
// in its last run.
func topTable(r *report, w *costWorld, system string, top []statementCost, n, reps int) {
	t := &table{
		title: "Cost per event: " + system + "'s top statements",
		note: fmt.Sprintf("The %d statements with the most total execution time in "+system+"'s last run of the cost-per-event table (run %d of %d; %s events), from pg_stat_statements "+
			"(schema names left out, text cut). WAL is what the statement itself wrote (pg_stat_statements.wal_bytes), full-page images included; commit records belong to no statement.", costTop, reps, reps, fmtCount(n)),
		header: []string{"statement", "calls", "calls/event", "total ms", "µs/call", "WAL B", "WAL B/event"},
	}
	for _, s := range top {
		t.rows = append(t.rows, []string{
			shortQuery(s.query, 90, w.f.schema, w.f.riverSchema), fmtCount(int(s.calls)), fmt.Sprintf("%.2f", float64(s.calls)/float64(n)),
			fmt.Sprintf("%.0f", float64(s.totalTime)/float64(time.Millisecond)), fmt.Sprintf("%.0f", float64(s.totalTime.Microseconds())/float64(max(s.calls, 1))),
			fmtCount(int(s.wal)), fmt.Sprintf("%.0f", float64(s.wal)/float64(n)),
		})
	}
	r.add(t)
}

// burnTable adds the burn-down's rates and costs and its target.
func burnTable(r *report, w *costWorld, runs map[string][]cost, o options) {
	t := &table{
		title: "Cost: burn-down of a committed backlog",
		note: fmt.Sprintf("On the same cluster and Redis of the scenario's own, autovacuum on. %s events committed first (%d sender goroutines, one order row + the send each), no delivery side running; "+
			"then a CHECKPOINT and the delivery side starts: dj-signals' Dispatcher + Worker at their defaults, or a River client with MaxWorkers %d and FetchCooldown %v (River's default is 100 ms). "+
			"Measured from its start until every receiver has run and the ledger is empty (River: every job completed), with the figures of the cost-per-event table; events/s = backlog / that time. "+
			"autovacuum may also be vacuuming the backlog's freshly inserted rows meanwhile. "+
			"Median of %d runs, the two systems alternating.",
			fmtCount(o.burnDown), e2eSenders, riverMaxWorkers, riverFetchCooldown, o.reps),
		header: append([]string{"system", "events/s"}, costHeader...),
	}
	rates := map[string]float64{}
	figures := map[string][]float64{}
	for _, name := range []string{sysSignals, sysRiver} {
		var xs []float64
		for _, c := range runs[name] {
			xs = append(xs, float64(o.burnDown)/c.wall.Seconds())
		}
		rates[name], figures[name] = median(xs), costFigures(runs[name], o.burnDown)
		t.rows = append(t.rows, append([]string{name, fmtRate(rates[name])}, costCells(figures[name])...))
	}
	row := []string{"dj-signals ÷ River", ratio(rates[sysSignals], rates[sysRiver])}
	for i := range figures[sysSignals][:len(costHeader)-1] {
		row = append(row, costRatio(i, figures[sysSignals][i], figures[sysRiver][i]))
	}
	t.rows = append(t.rows, append(row, ""))
	r.add(t)
	dj, riv := rates[sysSignals], rates[sysRiver]
	r.target("burn-down: dj-signals ≥ 1.2× River (MaxWorkers 100, FetchCooldown 5 ms)",
		fmt.Sprintf("%s vs %s events/s = %s", fmtRate(dj), fmtRate(riv), ratio(dj, riv)), dj >= 1.2*riv)
}

package main

// Scenario 5, many processes: the end-to-end workload of scenario 2 run by
// one application process, then by four sharing one outbox and one Redis,
// each sending, relaying and working, as the replicas of one service do;
// then by four of which one has its Dispatcher down, so that the others
// must relay its rows. Every process is this binary re-executed (-procs-child)
// and reports, when told to stop, when it committed each of its events and
// when and how often it started each event's receiver.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dj-signals/signals"
)

// procsMany is how many application processes share the outbox.
const procsMany = 4

// procsPickupRates are the send rates, events/s, of the process whose
// Dispatcher is down while the others are idle: steady, and sparse (one
// row per PollInterval).
var procsPickupRates = []int{200, 10}

// procsPart is one process's part in a run, passed as -procs-child.
type procsPart struct {
	Schema, Queue string
	Total         int  // events in the run: the receivers' seqs are 0..Total-1
	First, Count  int  // this process sends seqs First..First+Count-1
	Senders       int  // goroutines sending, each on a connection of its own
	Rate          int  // events/s on a fixed schedule; 0: as fast as the senders go
	Relay         bool // run a Dispatcher
	Index         int  // the process's number in the run, for messages
}

// procsMsg is one line a child writes to its stdout: "ready" once its
// Dispatcher and Worker run, "sent" once its events are committed, and
// "done" with its result once told to stop (its stdin closed).
type procsMsg struct {
	State  string
	Result *procsResult `json:",omitempty"`
}

// procsResult is what one process saw, in wall-clock nanoseconds, so that
// the processes' times compare.
type procsResult struct {
	SendStart int64   // the go-ahead: sending began
	Commits   []int64 // per own seq (First+i): when its commit returned
	Starts    []int64 // per seq of the run: the first start of its receiver here; 0: never here
	Runs      []int32 // per seq: receiver starts here
}

// procsRun is one run's figures, the processes' results merged.
type procsRun struct {
	total, send time.Duration // first send → last first receiver start; → last commit
	ranTwice    int           // seqs whose receiver started more than once, in any processes
	neverRan    int
	timedOut    bool
	// commit → first receiver start, by whether the sender's Dispatcher ran.
	pickupDown, pickupUp []time.Duration
}

func runProcs(ctx context.Context, e *env, o options, r *report) error {
	f, err := e.newFixture(ctx, "procs", r)
	if err != nil {
		return err
	}
	defer f.close()
	split := func(n, procs, senders, rate int, down bool) []procsPart {
		parts := make([]procsPart, procs)
		for i := range parts {
			parts[i] = procsPart{Schema: f.schema, Queue: f.queue, Total: n, First: n * i / procs, Count: n*(i+1)/procs - n*i/procs,
				Senders: senders, Rate: rate, Relay: !down || i > 0, Index: i}
		}
		return parts
	}
	// The same workload, in the same total of sender goroutines and
	// connections: e2eSenders in one process, or e2eSenders/procsMany in each
	// of procsMany.
	one := split(o.events, 1, e2eSenders, 0, false)
	many := split(o.events, procsMany, e2eSenders/procsMany, 0, false)
	runs := map[int][]procsRun{}
	for rep := range o.reps {
		order := []int{1, procsMany}
		if rep%2 == 1 {
			slices.Reverse(order)
		}
		for _, procs := range order {
			parts := one
			if procs > 1 {
				parts = many
			}
			run, err := procsOnce(ctx, e, f, parts)
			if err != nil {
				return fmt.Errorf("%d processes: %w", procs, err)
			}
			runs[procs] = append(runs[procs], run)
			progress("procs rep %d: %d process(es) %8.0f events/s (commits %8.0f/s), %d ran twice, %d never ran", rep+1, procs,
				float64(o.events)/run.total.Seconds(), float64(o.events)/run.send.Seconds(), run.ranTwice, run.neverRan)
		}
	}
	down, err := procsOnce(ctx, e, f, split(o.events, procsMany, e2eSenders/procsMany, 0, true))
	if err != nil {
		return fmt.Errorf("%d processes, one Dispatcher down: %w", procsMany, err)
	}
	progress("procs: %d processes, process 0's Dispatcher down: %8.0f events/s; its rows picked up in p50 %s p99 %s",
		procsMany, float64(o.events)/down.total.Seconds(), fmtDur(pct(down.pickupDown, 50)), fmtDur(pct(down.pickupDown, 99)))
	// The others idle: only the process whose Dispatcher is down sends, so
	// its rows wait for the others' Dispatchers to look: at a steady rate,
	// they keep looking (a Dispatcher that found rows looks again within
	// 1 ms, then 2, 4… up to PollInterval); sparse rows wait for a poll.
	idle := map[int]procsRun{}
	for _, rate := range procsPickupRates {
		n := max(1, int(float64(rate)*o.latencyDur.Seconds()))
		parts := split(n, procsMany, e2eSenders/procsMany, rate, true)
		for i := range parts {
			parts[i].First, parts[i].Count = 0, 0
		}
		parts[0].Count = n
		run, err := procsOnce(ctx, e, f, parts)
		if err != nil {
			return fmt.Errorf("pickup at %d/s with the others idle: %w", rate, err)
		}
		idle[rate] = run
		progress("procs: others idle, %d/s: rows of the process whose Dispatcher is down picked up in p50 %s p99 %s",
			rate, fmtDur(pct(run.pickupDown, 50)), fmtDur(pct(run.pickupDown, 99)))
	}

	rate := func(rs []procsRun) []float64 {
		var out []float64
		for _, run := range rs {
			out = append(out, float64(o.events)/run.total.Seconds())
		}
		return out
	}
	base := median(rate(runs[1]))
	t := &table{
		title: "5. Many processes: one outbox, one Redis",
		note: fmt.Sprintf("The workload of scenario 2 (%d events, each its own business transaction, one no-op receiver) sent by %d sender goroutines in all, "+
			"in 1 process or split evenly among %d (%d goroutines each, on a pool of as many connections), "+
			"every process this binary re-executed and running its own Dispatcher and Worker with default config (PollInterval %v, Worker Concurrency %d each) on a pool of pgxpool's default size; "+
			"all share the outbox schema, the asynq queue and the Redis. "+
			"Times are taken in the processes from the wall clock: events/s = N / (first send in any process → last first start of a receiver in any process); "+
			"median of %d runs, 1 and %d processes interleaved; the last row is one run in which process 0 sends its share but runs no Dispatcher. "+
			"ran twice: events whose receiver started more than once, in any processes (nothing fails here, so at-least-once allows none); never ran: events whose receiver never started.",
			o.events, e2eSenders, procsMany, e2eSenders/procsMany, dispatcherPollInterval, workerConcurrency, o.reps, procsMany),
		header: []string{"run", "Dispatchers", "events/s", "range", "× 1 process", "commits/s", "tail", "ran twice", "never ran"},
	}
	ranTwice, neverRan := 0, 0
	row := func(name string, dispatchers int, rs []procsRun) {
		m := median(rate(rs))
		lo, hi := minMax(rate(rs))
		var commits, tails []float64
		twice, never := 0, 0
		for _, run := range rs {
			commits = append(commits, float64(o.events)/run.send.Seconds())
			tails = append(tails, float64(run.total-run.send))
			twice, never = twice+run.ranTwice, never+run.neverRan
			if run.timedOut {
				name += " (TIMED OUT)"
			}
		}
		ranTwice, neverRan = ranTwice+twice, neverRan+never
		t.rows = append(t.rows, []string{name, fmt.Sprint(dispatchers), fmtRate(m), fmt.Sprintf("%s–%s", fmtRate(lo), fmtRate(hi)),
			ratio(m, base), fmtRate(median(commits)), fmtDur(time.Duration(median(tails))), fmt.Sprint(twice), fmt.Sprint(never)})
	}
	row("1 process", 1, runs[1])
	row(fmt.Sprintf("%d processes", procsMany), procsMany, runs[procsMany])
	row(fmt.Sprintf("%d processes, process 0's Dispatcher down", procsMany), procsMany-1, []procsRun{down})
	r.add(t)

	lt := &table{
		title: "5b. Pickup of rows sent by a process whose Dispatcher is down",
		note: fmt.Sprintf("Commit returned in the sending process → receiver started in any process, wall clock, per event. "+
			"Under load: the run of the last row of table 5, whose other processes' Dispatchers are woken by their own sends. "+
			"Others idle: only process 0 (no Dispatcher) sends, at the rate given on a fixed schedule for %v, so its rows wait for another process's Dispatcher to look: "+
			"one that found rows looks again after 1 ms, then 2, 4… up to PollInterval (%v), so a steady stream is chased, while a sparse row waits for the next poll of one of %d Dispatchers.",
			o.latencyDur, dispatcherPollInterval, procsMany-1),
		header: []string{"rows sent by", "while", "events", "p50", "p99", "max"},
	}
	pickupRow := func(rows, while string, ds []time.Duration) {
		lt.rows = append(lt.rows, []string{rows, while, fmt.Sprint(len(ds)), fmtDur(pct(ds, 50)), fmtDur(pct(ds, 99)), fmtDur(pct(ds, 100))})
	}
	pickupRow("process 0 (Dispatcher down)", "all sending", down.pickupDown)
	pickupRow(fmt.Sprintf("processes 1–%d (own Dispatcher)", procsMany-1), "all sending", down.pickupUp)
	for _, rate := range procsPickupRates {
		pickupRow("process 0 (Dispatcher down)", fmt.Sprintf("others idle, %d/s", rate), idle[rate].pickupDown)
		ranTwice, neverRan = ranTwice+idle[rate].ranTwice, neverRan+idle[rate].neverRan
	}
	r.add(lt)

	manyRate := median(rate(runs[procsMany]))
	r.target(fmt.Sprintf("procs: every receiver started once, 1 and %d processes, no failures", procsMany),
		fmt.Sprintf("%d ran twice, %d never ran, in %d runs (throughput, not a target: %d processes %s vs 1 process %s events/s = %s)",
			ranTwice, neverRan, 2*o.reps+1+len(procsPickupRates), procsMany, fmtRate(manyRate), fmtRate(base), ratio(manyRate, base)),
		ranTwice == 0 && neverRan == 0)
	return nil
}

// procsOnce empties f's outbox and queue, starts one process per part,
// lets them send, waits until every row is done, stops them and merges
// what they saw.
func procsOnce(ctx context.Context, e *env, f *fixture, parts []procsPart) (procsRun, error) {
	if _, err := f.reset(ctx, 0); err != nil {
		return procsRun{}, err
	}
	procs := make([]*procsProcess, 0, len(parts))
	defer func() {
		for _, p := range procs {
			p.kill()
		}
	}()
	for _, part := range parts {
		p, err := startProcs(e, part)
		if err != nil {
			return procsRun{}, err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		if _, err := p.await(ctx, "ready", time.Minute); err != nil {
			return procsRun{}, err
		}
	}
	start := time.Now()
	for _, p := range procs {
		if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
			return procsRun{}, fmt.Errorf("process %d: go-ahead: %w", p.part.Index, err)
		}
	}
	for _, p := range procs {
		if _, err := p.await(ctx, "sent", 10*time.Minute); err != nil {
			return procsRun{}, err
		}
	}
	// Every row done (acked by a Worker) means every receiver has started.
	// Generous, as in scenario 2: a run this slow has failed anyway.
	var run procsRun
	deadline := time.Now().Add(max(time.Minute, 10*time.Since(start)))
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		c, err := f.outbox.q.Count(ctx, e.admin)
		if err != nil {
			return procsRun{}, err
		}
		if c.Live == 0 {
			break
		}
		if time.Now().After(deadline) {
			run.timedOut = true
			break
		}
		select {
		case <-ctx.Done():
			return procsRun{}, ctx.Err()
		case <-poll.C:
		}
	}
	results := make([]*procsResult, len(procs))
	for i, p := range procs {
		_ = p.stdin.Close()
		msg, err := p.await(ctx, "done", time.Minute)
		if err != nil {
			return procsRun{}, err
		}
		results[i] = msg.Result
	}
	return mergeProcs(parts, results), nil
}

// mergeProcs computes a run's figures from what each process saw.
func mergeProcs(parts []procsPart, results []*procsResult) procsRun {
	total := parts[0].Total
	var run procsRun
	first, lastCommit, lastStart := int64(0), int64(0), int64(0)
	for i, res := range results {
		if parts[i].Count > 0 && (first == 0 || res.SendStart < first) {
			first = res.SendStart
		}
	}
	for seq := range total {
		runs, started := 0, int64(0)
		for _, res := range results {
			runs += int(res.Runs[seq])
			if s := res.Starts[seq]; s > 0 && (started == 0 || s < started) {
				started = s
			}
		}
		switch {
		case runs == 0:
			run.neverRan++
			continue
		case runs > 1:
			run.ranTwice++
		}
		lastStart = max(lastStart, started)
		for i, part := range parts {
			if seq < part.First || seq >= part.First+part.Count {
				continue
			}
			committed := results[i].Commits[seq-part.First]
			lastCommit = max(lastCommit, committed)
			if part.Relay {
				run.pickupUp = append(run.pickupUp, time.Duration(started-committed))
			} else {
				run.pickupDown = append(run.pickupDown, time.Duration(started-committed))
			}
		}
	}
	run.total, run.send = time.Duration(lastStart-first), time.Duration(lastCommit-first)
	slices.Sort(run.pickupUp)
	slices.Sort(run.pickupDown)
	return run
}

// procsProcess is one running child.
type procsProcess struct {
	part   procsPart
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	msgs   chan procsMsg // closed when its stdout ends
	exited chan struct{}
	err    error // the exit status, once exited is closed
}

func startProcs(e *env, part procsPart) (*procsProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	arg, err := json.Marshal(part)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-procs-child", string(arg), "-db", e.dbURL, "-redis", e.redis.Addr)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &procsProcess{part: part, cmd: cmd, msgs: make(chan procsMsg, 4), exited: make(chan struct{})}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		dec := json.NewDecoder(stdout)
		for {
			var m procsMsg
			if err := dec.Decode(&m); err != nil {
				break
			}
			p.msgs <- m // at most three: never blocks
		}
		// Wait closes stdout, so only once the decoder is done with it.
		p.err = cmd.Wait()
		close(p.exited)
		close(p.msgs)
	}()
	return p, nil
}

// await returns the child's next message, which must be state.
func (p *procsProcess) await(ctx context.Context, state string, timeout time.Duration) (procsMsg, error) {
	select {
	case m, ok := <-p.msgs:
		switch {
		case !ok:
			return procsMsg{}, fmt.Errorf("process %d exited before %q: %v", p.part.Index, state, p.err)
		case m.State != state:
			return procsMsg{}, fmt.Errorf("process %d: got %q, want %q", p.part.Index, m.State, state)
		}
		return m, nil
	case <-time.After(timeout):
		return procsMsg{}, fmt.Errorf("process %d: no %q within %v", p.part.Index, state, timeout)
	case <-ctx.Done():
		return procsMsg{}, ctx.Err()
	}
}

// kill ends the child if it still runs and waits for it.
func (p *procsProcess) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// procsChild is one process of the procs scenario, part given as JSON: it
// runs its Worker, and its Dispatcher if part says so, says "ready", waits
// for a line on stdin, sends its events, says "sent", and once stdin
// closes stops and says "done" with what it saw.
func procsChild(arg, dbURL, redisAddr string) error {
	var part procsPart
	if err := json.Unmarshal([]byte(arg), &part); err != nil {
		return fmt.Errorf("-procs-child: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: part.Schema})
	if err != nil {
		return err
	}
	sig := signals.Register[order](reg, "bench.order_placed")
	starts, runs := make([]atomic.Int64, part.Total), make([]atomic.Int32, part.Total)
	sig.Connect("noop", func(_ context.Context, e signals.Event[order]) error {
		now := time.Now().UnixNano()
		if s := e.Payload.Seq; s >= 0 && s < int64(part.Total) {
			starts[s].CompareAndSwap(0, now)
			runs[s].Add(1)
		}
		return nil
	}, signals.Queue(part.Queue))

	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	redisOpt := asynq.RedisClientOpt{Addr: redisAddr}
	var components []func(context.Context) error
	if part.Relay {
		d, err := signals.NewDispatcher(reg, pool, redisOpt, signals.DispatcherConfig{Logger: quiet})
		if err != nil {
			return err
		}
		components = append(components, d.Run)
	}
	w, err := signals.NewWorker(reg, pool, redisOpt, signals.WorkerConfig{Queues: map[string]int{part.Queue: 1}, Logger: quiet})
	if err != nil {
		return err
	}
	stopDelivery := runAll(ctx, append(components, w.Run)...)
	defer stopDelivery()

	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(procsMsg{State: "ready"}); err != nil {
		return err
	}
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return fmt.Errorf("read the go-ahead: %w", err)
	}
	res := &procsResult{SendStart: time.Now().UnixNano(), Commits: make([]int64, part.Count)}
	if err := part.send(ctx, dbURL, sig, res.Commits); err != nil {
		return err
	}
	if err := out.Encode(procsMsg{State: "sent"}); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, in) // until the parent closes it: stop
	stopDelivery()
	res.Starts, res.Runs = make([]int64, part.Total), make([]int32, part.Total)
	for i := range part.Total {
		res.Starts[i], res.Runs[i] = starts[i].Load(), runs[i].Load()
	}
	return out.Encode(procsMsg{State: "done", Result: res})
}

// send commits the part's events, each in a business transaction as
// scenario 2's (one order row, then SendReliable), and records in commits
// when each commit returned.
func (part procsPart) send(ctx context.Context, dbURL string, sig *signals.Signal[order], commits []int64) error {
	if part.Count == 0 {
		return nil
	}
	pool, err := newPool(ctx, dbURL, part.Senders)
	if err != nil {
		return err
	}
	defer pool.Close()
	insertOrder := `INSERT INTO ` + pgx.Identifier{part.Schema}.Sanitize() + `.orders (customer, cents) VALUES ($1, $2) RETURNING id`
	seqs := make(chan int, part.Count)
	if part.Rate == 0 {
		for i := range part.Count {
			seqs <- part.First + i
		}
		close(seqs)
	} else {
		// On schedule; a sender that falls behind delays sends, never the
		// measured pickup (taken after commit).
		go func() {
			defer close(seqs)
			start, interval := time.Now(), time.Second/time.Duration(part.Rate)
			for i := range part.Count {
				select {
				case <-time.After(time.Until(start.Add(time.Duration(i) * interval))):
				case <-ctx.Done():
					return
				}
				seqs <- part.First + i
			}
		}()
	}
	return parallel(part.Senders, func(int) error {
		for seq := range seqs {
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				o := order{Seq: int64(seq)}
				if err := tx.QueryRow(ctx, insertOrder, "customer", 1234).Scan(&o.OrderID); err != nil {
					return err
				}
				_, err := sig.SendReliable(ctx, tx, o)
				return err
			})
			if err != nil {
				return err
			}
			commits[seq-part.First] = time.Now().UnixNano()
		}
		return nil
	})
}

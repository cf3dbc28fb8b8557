// Command bench measures dj-signals against its baselines on local
// PostgreSQL and Redis: send overhead, end-to-end throughput, latency,
// backlog drain, many application processes on one outbox, per-key
// ordering, and the cost per event in WAL and CPU on servers of its own. It
// prints each table as it completes and, with -out, writes the whole report
// as markdown.
//
//	cd bench && go run . -out results.md   # 17–25 minutes on 2 cores (make bench)
//	cd bench && go run . -quick            # a few minutes, smoke run
//
// It exits 0 when every scenario measured, whatever the figures: missed
// targets, cleanup warnings and a loaded machine are stated in the report.
// It exits 1 when a scenario could not measure (the report names it and
// why), and 2 when the run could not start or the report not be written.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type options struct {
	duration     time.Duration // per send-overhead run
	reps         int
	events       int // e2e events per run
	rates        []int
	latencyDur   time.Duration
	rows         int // drain backlog
	drainTimeout time.Duration
	burnDown     int           // cost scenario's backlog
	held         time.Duration // how long the cost scenario holds a transaction open
}

type scenario struct {
	name string
	// run measures and adds its tables and targets to the report. An error
	// means it could not measure; cleanup problems are report warnings.
	run func(context.Context, *env, options, *report) error
}

var scenarios = []scenario{
	{"send", runSend},
	{"e2e", runE2E},
	{"latency", runLatency},
	{"drain", runDrain},
	{"procs", runProcs},
	{"ordering", runOrdering},
	{"cost", runCost},
	{"limits", runLimits},
}

func main() {
	var (
		o      options
		rates  string
		quick  bool
		only   string
		out    string
		dbURL  string
		redis  string
		child  string
		procs  string
		prof   string
		logErr = func(err error) { fmt.Fprintln(os.Stderr, "bench:", err); os.Exit(2) }
	)
	flag.DurationVar(&o.duration, "duration", 4*time.Second, "length of one send-overhead run")
	flag.IntVar(&o.reps, "reps", 3, "repetitions of the send-overhead, e2e and cost runs (the median is reported); e2e's dj-signals pair with and without OpenTelemetry runs 2×reps+1 times")
	flag.IntVar(&o.events, "events", 20_000, "events per end-to-end run (e2e and cost scenarios)")
	flag.StringVar(&rates, "rates", "200,2000", "latency send rates, events/s, comma-separated")
	flag.DurationVar(&o.latencyDur, "latency-duration", 10*time.Second, "length of one latency run (after 1s of warm-up)")
	flag.IntVar(&o.rows, "rows", 1_000_000, "outbox rows in the drain backlog")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", 4*time.Minute, "give up the drain after this long and report the rate so far")
	flag.IntVar(&o.burnDown, "burndown-events", 50_000, "events in the cost scenario's burn-down backlog")
	flag.DurationVar(&o.held, "held-duration", time.Minute, "how long the cost scenario holds a transaction open while events flow (and runs them without it)")
	flag.BoolVar(&quick, "quick", false, "smoke run of a few minutes: -duration 500ms -events 2000 -latency-duration 1s -rows 100000 -burndown-events 5000 (flags given explicitly win)")
	flag.StringVar(&only, "only", "send,e2e,latency,drain,procs,ordering,cost", "scenarios to run, comma-separated")
	flag.StringVar(&out, "out", "", "write the markdown report to this file")
	flag.StringVar(&dbURL, "db", getenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"), "PostgreSQL URL ($DATABASE_URL)")
	flag.StringVar(&redis, "redis", getenv("REDIS_ADDR", "127.0.0.1:6379"), "Redis address ($REDIS_ADDR)")
	flag.StringVar(&child, "relay-child", "", "internal: run one Dispatcher on this schema until SIGTERM (the drain scenario's relay process)")
	flag.StringVar(&prof, "cpuprofile", "", "write a CPU profile of this process (senders, relays and workers of the in-process systems) to this file")
	flag.StringVar(&procs, "procs-child", "", "internal: run one application process of the procs scenario, its part given as JSON")
	flag.Parse()

	if procs != "" {
		if err := procsChild(procs, dbURL, redis); err != nil {
			logErr(err)
		}
		return
	}
	if child != "" {
		if err := relayChild(child, dbURL, redis); err != nil {
			logErr(err)
		}
		return
	}
	if quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range map[string]string{"duration": "500ms", "events": "2000", "latency-duration": "1s", "rows": "100000", "burndown-events": "5000", "held-duration": "10s"} {
			if !set[name] {
				_ = flag.Set(name, v)
			}
		}
	}
	for _, s := range strings.Split(rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			logErr(fmt.Errorf("-rates: %q is not a positive rate", s))
		}
		o.rates = append(o.rates, n)
	}
	if o.reps < 1 || o.events < 1 || o.rows < 1 || o.burnDown < 1 {
		logErr(errors.New("-reps, -events, -rows and -burndown-events must be positive"))
	}
	selected, err := selectScenarios(only)
	if err != nil {
		logErr(err)
	}

	if prof != "" {
		f, err := os.Create(prof)
		if err != nil {
			logErr(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			logErr(err)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := newEnv(ctx, dbURL, redis)
	if err != nil {
		logErr(err)
	}
	defer e.close()

	r := &report{command: "cd bench && go run . " + strings.Join(os.Args[1:], " ")}
	r.machine = machine(ctx, e)
	fmt.Println("dj-signals benchmarks:", r.command)
	for _, kv := range r.machine {
		fmt.Printf("  %-22s %s\n", kv[0], kv[1])
	}
	r.notes = append(r.notes, "Every scenario works in its own fresh PostgreSQL schemas (the outbox's, and River's) and asynq queue, dropped at the end; "+
		"queues on the shared Redis are deleted in bounded steps (SCAN and UNLINK), and the drain scenario's backlog of tasks goes to a throwaway redis-server of its own. "+
		"The cost scenario runs on a throwaway PostgreSQL cluster and redis-server of its own, so that their CPU time is its systems' alone. "+
		"PostgreSQL, Redis, the senders and the delivery side all share this machine's cores, so figures are for comparison within one run: "+
		"each is also given as a ratio to the baselines measured in the same run.")

	start := time.Now()
	for _, s := range selected {
		if ctx.Err() != nil {
			r.skip(s.name)
			continue
		}
		fmt.Fprintf(os.Stderr, "scenario %s...\n", s.name)
		run := r.begin(s.name)
		mon := startLoadMonitor()
		t0 := time.Now()
		run.err = s.run(ctx, e, o, r)
		run.took = time.Since(t0)
		run.load = mon.stop()
		if run.err != nil {
			fmt.Fprintf(os.Stderr, "bench: scenario %s did not measure: %v\n", s.name, run.err)
		}
		fmt.Fprintf(os.Stderr, "scenario %s took %v; load average %s; other processes' CPU %s\n",
			s.name, run.took.Round(time.Second), run.load.loadAvg(), run.load.other())
	}
	r.machine = append(r.machine,
		[2]string{"load average at end", readTrim("/proc/loadavg")},
		[2]string{"total run time", time.Since(start).Round(time.Second).String()})
	r.printSummary(os.Stdout)

	if out != "" {
		var b bytes.Buffer
		r.markdown(&b)
		if err := os.WriteFile(out, b.Bytes(), 0o644); err != nil {
			logErr(err)
		}
		fmt.Println("\nwrote", out)
	}
	// Missed targets, cleanup warnings and a loaded machine are in the
	// report; only a scenario that did not measure fails the run.
	if len(r.failed()) > 0 {
		os.Exit(1)
	}
}

// selectScenarios returns the scenarios named in the comma-separated list,
// in the suite's order.
func selectScenarios(list string) ([]scenario, error) {
	want := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		if name = strings.TrimSpace(name); name != "" {
			want[name] = true
		}
	}
	var out []scenario
	for _, s := range scenarios {
		if want[s.name] {
			out = append(out, s)
			delete(want, s.name)
		}
	}
	if len(want) > 0 || len(out) == 0 {
		names := make([]string, len(scenarios))
		for i, s := range scenarios {
			names[i] = s.name
		}
		return nil, fmt.Errorf("-only %q: choose among %s", list, strings.Join(names, ","))
	}
	return out, nil
}

// machine describes where and with what the figures were taken.
func machine(ctx context.Context, e *env) [][2]string {
	m := [][2]string{
		{"date", time.Now().UTC().Format("2006-01-02 15:04 UTC")},
		{"nproc", fmt.Sprintf("%d (GOMAXPROCS %d)", runtime.NumCPU(), runtime.GOMAXPROCS(0))},
		{"CPU", procField("/proc/cpuinfo", "model name")},
		{"memory", memTotal()},
		{"load average at start", readTrim("/proc/loadavg")},
		{"kernel", readTrim("/proc/sys/kernel/osrelease")},
		{"Go", runtime.Version()},
	}
	var pg, settings string
	if err := e.admin.QueryRow(ctx, `SELECT current_setting('server_version'),
    format('shared_buffers %s, synchronous_commit %s, fsync %s, max_wal_size %s',
        current_setting('shared_buffers'), current_setting('synchronous_commit'),
        current_setting('fsync'), current_setting('max_wal_size'))`).Scan(&pg, &settings); err != nil {
		pg = "unknown: " + err.Error()
	}
	m = append(m, [2]string{"PostgreSQL", pg + " (" + settings + ")"})
	redisVersion := "unknown"
	if info, err := e.rdb.InfoMap(ctx, "server").Result(); err == nil {
		redisVersion = info["Server"]["redis_version"]
	}
	if cfg, err := e.rdb.ConfigGet(ctx, "appendonly").Result(); err == nil {
		redisVersion += " (appendonly " + cfg["appendonly"] + ")"
	}
	m = append(m, [2]string{"Redis", redisVersion})
	m = append(m, [2]string{"dj-signals", gitDescribe()})
	if bi, ok := debug.ReadBuildInfo(); ok {
		var deps []string
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/hibiken/asynq", "github.com/riverqueue/river", "github.com/jackc/pgx/v5", "github.com/redis/go-redis/v9":
				deps = append(deps, d.Path+" "+d.Version)
			}
		}
		m = append(m, [2]string{"libraries", strings.Join(deps, ", ")})
	}
	return m
}

func gitDescribe() string {
	out, err := exec.Command("git", "-C", "..", "describe", "--always", "--dirty", "--abbrev=12").Output()
	if err != nil {
		return "unknown (not a git checkout?)"
	}
	return "commit " + strings.TrimSpace(string(out))
}

func procField(path, field string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == field {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	kb, err := strconv.ParseFloat(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal"), " kB"), 64)
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.1f GiB", kb/(1<<20))
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func getenv(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

// parallel runs fn(0..n-1) in n goroutines and returns the first error.
func parallel(n int, fn func(i int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

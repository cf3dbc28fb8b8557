package signals_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/testenv"
)

// Four application processes share one outbox and one Redis, as the
// replicas of one service do: this test binary re-executed, each child
// running TestMultiProcessChild with its part in an environment variable.
const (
	multiProcessChildEnv = "SIGNALS_TEST_MULTIPROCESS_CHILD"
	multiProcesses       = 4
	// multiProcessDown is the process whose Dispatcher never runs: the
	// others' Dispatchers must relay its rows.
	multiProcessDown = 0
	// Each process commits multiProcessEvents events and rolls back
	// multiProcessRolledBack more, from multiProcessSenders goroutines.
	multiProcessEvents     = 160
	multiProcessRolledBack = 40
	multiProcessSenders    = 2
)

// multiProcessReceivers are connected to "order.placed" in every process.
var multiProcessReceivers = []string{"a", "b"}

// TestMultiProcessRunsEachDeliveryOnce runs four processes on one outbox
// and one Redis, each sending and working, all but one relaying, and requires
// that every receiver of every committed event ran (missing = 0), that no
// receiver of an event rolled back ran (phantom = 0), and that no receiver
// ran twice for one event. Delivery is at least once, and duplicates are
// allowed only after a failure (a crash, a Redis outage, a lease expiry);
// nothing fails here, so here a duplicate is a bug: two Dispatchers
// enqueueing one row, or a row acked late and relayed again. The rows of
// the process whose Dispatcher is down must be relayed by the others; the
// test logs how long they took, from commit to receiver start.
func TestMultiProcessRunsEachDeliveryOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ledger := newMultiProcessLedger(f.schema)
	_, err := f.pool.Exec(t.Context(), ledger.create)
	require.NoError(t, err)

	children := make([]*childProcess, multiProcesses)
	for i := range children {
		children[i] = startChild(t, multiProcessChild{
			Process: i, Schema: f.schema, Queue: f.queue,
			Events: multiProcessEvents, RolledBack: multiProcessRolledBack, Relay: i != multiProcessDown,
		})
	}
	countIs := func(sql string, want int) func() (bool, error) {
		return func() (bool, error) {
			var n int
			err := f.pool.QueryRow(context.Background(), sql).Scan(&n)
			return n == want, err
		}
	}
	waitFor(t, children, "every process ready", countIs(ledger.countReady, multiProcesses))
	start := time.Now()
	for _, c := range children {
		c.begin(t)
	}
	waitFor(t, children, "every event committed", countIs(ledger.countCommitted, multiProcesses*multiProcessEvents))
	waitFor(t, children, "every rollback done", countIs(ledger.countRolledBack, multiProcesses*multiProcessRolledBack))
	sent := time.Since(start)
	var counts store.Counts
	waitFor(t, children, "every outbox row done", func() (ok bool, err error) {
		counts, err = f.queries.Count(context.Background(), f.pool)
		return counts.Live == 0, err
	})
	require.Zero(t, counts.Dead, "dead letters")
	done := time.Since(start)
	for _, c := range children {
		c.stop(t)
	}

	var missing, phantom, twice int
	require.NoError(t, f.pool.QueryRow(t.Context(), ledger.check, multiProcessReceivers).Scan(&missing, &phantom, &twice))
	require.Zero(t, missing, "receivers of committed events that never ran")
	require.Zero(t, phantom, "runs of events that were rolled back")
	require.Zero(t, twice, "deliveries that ran more than once, with no failure to excuse them")

	var down, up []time.Duration
	rows, err := f.pool.Query(t.Context(), ledger.pickup)
	require.NoError(t, err)
	var process int
	var micros int64
	_, err = pgx.ForEachRow(rows, []any{&process, &micros}, func() error {
		if process == multiProcessDown {
			down = append(down, time.Duration(micros)*time.Microsecond)
		} else {
			up = append(up, time.Duration(micros)*time.Microsecond)
		}
		return nil
	})
	require.NoError(t, err)
	require.Len(t, down, multiProcessEvents*len(multiProcessReceivers))
	var perProcess []int64
	require.NoError(t, f.pool.QueryRow(t.Context(), ledger.runsPerProcess, multiProcesses).Scan(&perProcess))
	t.Logf("%d processes committed %d events (%d receivers each) in %v, all ran in %v; runs per process %v",
		multiProcesses, multiProcesses*multiProcessEvents, len(multiProcessReceivers), sent.Round(time.Millisecond), done.Round(time.Millisecond), perProcess)
	t.Logf("commit → receiver start, rows of the process whose Dispatcher is down (relayed by the others): %s", durations(down))
	t.Logf("commit → receiver start, rows of the processes relaying their own: %s", durations(up))
}

// TestMultiProcessChild is one process of
// TestMultiProcessRunsEachDeliveryOnce, run only in a child process. It
// starts its Dispatcher (unless its part says not to) and Worker, records
// itself ready, waits for a line on stdin, sends, and stops when stdin
// closes.
func TestMultiProcessChild(t *testing.T) {
	raw := os.Getenv(multiProcessChildEnv)
	if raw == "" {
		t.Skip("runs only as a child process of TestMultiProcessRunsEachDeliveryOnce")
	}
	var c multiProcessChild
	require.NoError(t, json.Unmarshal([]byte(raw), &c))
	ledger := newMultiProcessLedger(c.Schema)
	f := &testBundle{schema: c.Schema, queue: c.Queue, redis: asynq.RedisClientOpt{Addr: testenv.RedisAddr()}}
	f.pool = newPool(t, func(cfg *pgxpool.Config) { cfg.MaxConns = 6 })
	var err error
	f.reg, err = signals.NewRegistry(signals.RegistryConfig{Schema: c.Schema})
	require.NoError(t, err)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	for _, name := range multiProcessReceivers {
		sig.Connect(name, func(ctx context.Context, e signals.Event[orderPlaced]) error {
			_, err := f.pool.Exec(ctx, ledger.insertRun, e.ID.String(), e.Receiver, c.Process, time.Now())
			return err
		}, signals.Queue(c.Queue), fastRetry)
	}
	if c.Relay {
		f.runDispatcher(t, signals.DispatcherConfig{})
	}
	f.runWorker(t)
	_, err = f.pool.Exec(t.Context(), ledger.insertReady, c.Process)
	require.NoError(t, err)

	stdin := bufio.NewReader(os.Stdin)
	_, err = stdin.ReadString('\n')
	require.NoError(t, err, "the parent's go-ahead")
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for s := range multiProcessSenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.send(ctx, f.pool, sig, ledger, s); err != nil && ctx.Err() == nil {
				t.Errorf("process %d, sender %d: %v", c.Process, s, err)
			}
		}()
	}
	_, _ = io.Copy(io.Discard, stdin) // until the parent closes it: stop
	cancel()
	wg.Wait()
}

// multiProcessChild is one child's part, passed in multiProcessChildEnv.
type multiProcessChild struct {
	Process            int
	Schema, Queue      string
	Events, RolledBack int  // to commit and to roll back, in all
	Relay              bool // run a Dispatcher
}

// errRollback rolls a send's transaction back on purpose.
var errRollback = errors.New("rolled back on purpose")

// send is sender s's share of the child's events: each committed event is
// recorded in its own transaction, then its commit time after the commit;
// each rolled-back one after its rollback.
func (c multiProcessChild) send(ctx context.Context, pool *pgxpool.Pool, sig *signals.Signal[orderPlaced], ledger multiProcessLedger, s int) error {
	sendOne := func(i int, rollback bool) error {
		var id ulid.ULID
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
			id, err = sig.SendReliable(ctx, tx, orderPlaced{OrderID: fmt.Sprintf("p%d-s%d-%d", c.Process, s, i)})
			if err != nil {
				return err
			}
			if rollback {
				return errRollback
			}
			_, err = tx.Exec(ctx, ledger.insertSent, id.String(), c.Process)
			return err
		})
		switch {
		case rollback && errors.Is(err, errRollback):
			_, err = pool.Exec(ctx, ledger.insertRolledBack, id.String())
		case err == nil:
			_, err = pool.Exec(ctx, ledger.setCommitted, id.String(), time.Now())
		}
		return err
	}
	// The rollbacks are spread among the commits.
	commits, rollbacks := c.Events/multiProcessSenders, c.RolledBack/multiProcessSenders
	every, rolled := max(1, commits/max(1, rollbacks)), 0
	for i := range commits {
		if err := sendOne(i, false); err != nil {
			return err
		}
		if rolled < rollbacks && i%every == 0 {
			if err := sendOne(commits+rolled, true); err != nil {
				return err
			}
			rolled++
		}
	}
	for ; rolled < rollbacks; rolled++ {
		if err := sendOne(commits+rolled, true); err != nil {
			return err
		}
	}
	return nil
}

// multiProcessLedger is the SQL of the test's own record, in the test's
// schema beside the outbox: which events committed (written in the sending
// transaction, so only a commit keeps it) and when, which were rolled
// back, and every receiver run, in which process and when it started.
type multiProcessLedger struct {
	create, insertReady, insertSent, setCommitted, insertRolledBack, insertRun string
	countReady, countCommitted, countRolledBack                                string
	check, pickup, runsPerProcess                                              string
}

func newMultiProcessLedger(schema string) multiProcessLedger {
	s := pgx.Identifier{schema}.Sanitize()
	return multiProcessLedger{
		create: `
CREATE TABLE ` + s + `.ready_processes (process int PRIMARY KEY);
CREATE TABLE ` + s + `.sent_events (event_id text PRIMARY KEY, process int NOT NULL, committed_at timestamptz);
CREATE TABLE ` + s + `.rolled_back_events (event_id text PRIMARY KEY);
CREATE TABLE ` + s + `.receiver_runs (event_id text NOT NULL, receiver text NOT NULL, process int NOT NULL, started_at timestamptz NOT NULL)`,
		insertReady:      `INSERT INTO ` + s + `.ready_processes (process) VALUES ($1)`,
		insertSent:       `INSERT INTO ` + s + `.sent_events (event_id, process) VALUES ($1, $2)`,
		setCommitted:     `UPDATE ` + s + `.sent_events SET committed_at = $2 WHERE event_id = $1`,
		insertRolledBack: `INSERT INTO ` + s + `.rolled_back_events (event_id) VALUES ($1)`,
		insertRun:        `INSERT INTO ` + s + `.receiver_runs (event_id, receiver, process, started_at) VALUES ($1, $2, $3, $4)`,
		countReady:       `SELECT count(*) FROM ` + s + `.ready_processes`,
		countCommitted:   `SELECT count(*) FROM ` + s + `.sent_events WHERE committed_at IS NOT NULL`,
		countRolledBack:  `SELECT count(*) FROM ` + s + `.rolled_back_events`,
		// missing: (committed event, receiver) pairs with no run; phantom:
		// runs of events not committed; twice: pairs that ran more than once.
		check: `
SELECT
    (SELECT count(*) FROM ` + s + `.sent_events e CROSS JOIN unnest($1::text[]) AS rc(receiver)
        WHERE NOT EXISTS (SELECT FROM ` + s + `.receiver_runs r WHERE r.event_id = e.event_id AND r.receiver = rc.receiver)),
    (SELECT count(*) FROM ` + s + `.receiver_runs r
        WHERE NOT EXISTS (SELECT FROM ` + s + `.sent_events e WHERE e.event_id = r.event_id)),
    (SELECT count(*) FROM (SELECT FROM ` + s + `.receiver_runs GROUP BY event_id, receiver HAVING count(*) > 1) d)`,
		// Per delivery: the sending process, and commit → first start in µs.
		pickup: `
SELECT e.process, (extract(epoch FROM min(r.started_at) - e.committed_at) * 1e6)::bigint
FROM ` + s + `.sent_events e JOIN ` + s + `.receiver_runs r USING (event_id)
GROUP BY e.event_id, r.receiver`,
		runsPerProcess: `
SELECT array_agg((SELECT count(*) FROM ` + s + `.receiver_runs r WHERE r.process = p) ORDER BY p)
FROM generate_series(0, $1 - 1) AS p`,
	}
}

// durations summarizes commit → start times: median, p99 and max.
func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p int) time.Duration { return s[min(len(s)-1, len(s)*p/100)].Round(100 * time.Microsecond) }
	return fmt.Sprintf("%d deliveries, p50 %v, p99 %v, max %v", len(s), at(50), at(99), s[len(s)-1].Round(100*time.Microsecond))
}

// childProcess is this test binary re-executed as one process of a
// multi-process test.
type childProcess struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	output bytes.Buffer  // stdout and stderr; read only after done
	done   chan struct{} // closed once the process has exited
	err    error         // its exit status, once done
}

// startChild starts TestMultiProcessChild in a new process with part c.
// The process is killed when the test ends, if it has not exited by then.
func startChild(t *testing.T, c multiProcessChild) *childProcess {
	t.Helper()
	return startTestProcess(t, "TestMultiProcessChild", multiProcessChildEnv, c.Process, c)
}

// startTestProcess starts this test binary again, running only the test
// named test, with part as JSON in the environment variable env: process
// number process of a multi-process test. The process is killed when the
// test ends, if it has not exited by then.
func startTestProcess(t *testing.T, test, env string, process int, part any) *childProcess {
	t.Helper()
	raw, err := json.Marshal(part)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), env+"="+string(raw))
	p := &childProcess{name: fmt.Sprintf("process %d", process), cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.output, &p.output
	p.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// begin tells the child to start sending.
func (p *childProcess) begin(t *testing.T) {
	t.Helper()
	_, err := io.WriteString(p.stdin, "go\n")
	require.NoError(t, err, "%s: write its go-ahead", p.name)
}

// stop closes the child's stdin, which stops it, and requires that it
// exits cleanly: its Dispatcher and Worker returned nil and leaked no
// goroutine.
func (p *childProcess) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.stdin.Close())
	select {
	case <-p.done:
	case <-time.After(eventually):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not stop within %v of its stdin closing:\n%s", p.name, eventually, p.output.String())
	}
	require.NoError(t, p.err, "%s:\n%s", p.name, p.output.String())
}

// waitFor polls cond until it holds, failing the test if cond errs, if
// eventually passes first, or if a child exits meanwhile.
func waitFor(t *testing.T, children []*childProcess, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(eventually)
	poll := time.NewTicker(tick)
	defer poll.Stop()
	for {
		ok, err := cond()
		require.NoError(t, err, what)
		if ok {
			return
		}
		for _, c := range children {
			select {
			case <-c.done:
				t.Fatalf("waiting for %s: %s exited (%v):\n%s", what, c.name, c.err, c.output.String())
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, eventually)
		}
		<-poll.C
	}
}

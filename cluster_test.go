package signals_test

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// TestRedisClusterLosesNoEvent runs the relay and a worker against a Redis
// Cluster of three primaries, sends a stream of events, empties Redis
// mid-stream while tasks wait in the queue, and requires that every
// committed event's receiver ran (missing = 0) and nothing else did
// (phantom = 0). The ledger's marker is one key on one node: when every
// node loses its data the marker tells; when only the queue's node does,
// stale-row repair must find the lost tasks.
func TestRedisClusterLosesNoEvent(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		// lose empties the nodes that lose their data, and returns the
		// message the Dispatcher must log as it sends the lost tasks again.
		lose func(t *testing.T, cl *testenv.Cluster, queueNode *testenv.Redis) string
	}{
		{"FLUSHALL on every node", func(t *testing.T, cl *testenv.Cluster, _ *testenv.Redis) string {
			for _, n := range cl.Nodes {
				require.NoError(t, nodeClient(t, n).FlushAll(t.Context()).Err())
			}
			return logMarkerGone
		}},
		{"FLUSHALL on the queue's node alone", func(t *testing.T, _ *testenv.Cluster, queueNode *testenv.Redis) string {
			require.NoError(t, nodeClient(t, queueNode).FlushAll(t.Context()).Err())
			return logRepaired
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cl := testenv.StartCluster(t)
			f := setup(t)
			opt := asynq.RedisClusterClientOpt{Addrs: cl.Addrs}
			logs := &testenv.Logs{}
			markerNode := startedMarkerNode(t, f, cl, opt)

			// asynq keeps all of a queue's keys under the hash tag {queue},
			// so the whole queue lives on one node: pick a queue away from
			// the marker's.
			var queue string
			var queueNode *testenv.Redis
			for i := 0; queueNode == nil || queueNode == markerNode; i++ {
				queue = f.queue + "_" + strconv.Itoa(i)
				queueNode = cl.NodeOf(t, pendingKey(queue))
			}
			st := newStream(t, f, queue)
			runRelayAndWorker(t, f, opt, []string{queue}, 2*time.Second, slog.New(logs))

			began := time.Now()
			st.send(t, f.pool, 8, 100, 0)
			qc := nodeClient(t, queueNode)
			require.Eventually(t, func() bool {
				return st.committed.Load() >= 270 && qc.LLen(t.Context(), pendingKey(queue)).Val() >= 20
			}, eventually, tick, "a third of the stream is sent, and tasks wait in the queue")
			lostAt := time.Now()
			want := c.lose(t, cl, queueNode)
			st.wait()

			st.requireAllRan(t, f, 25*time.Second)
			require.NotEmpty(t, logs.Find(want), "the Dispatcher noticed the loss")
			d, err := signals.NewLedger(f.reg, f.pool, opt)
			require.NoError(t, err)
			stats, err := d.Stats(t.Context())
			require.NoError(t, err, "Stats reads asynq's view of the queues from a cluster")
			// asynq lists its queues in one plain key, asynq:queues, on one
			// node: a queue whose listing was lost shows no tasks in Stats
			// until a fresh asynq client enqueues to it, as the relay's does
			// after either kind of repair.
			ins := asynq.NewInspector(opt)
			t.Cleanup(func() { _ = ins.Close() })
			listed, err := ins.Queues()
			require.NoError(t, err)
			require.Contains(t, listed, queue, "the queue is listed again after the repair")
			for _, q := range stats.Queues {
				t.Logf("Stats: queue %s: served %v, %d completed, %d pending; listed in asynq:queues: %v",
					q.Queue, q.Served, q.Completed, q.Pending, slices.Contains(listed, q.Queue))
			}
			t.Logf("%d events committed, %d ran more than once; every row done %v after the loss, %v after the first send (marker renewals %d, repairs %d)",
				st.committed.Load(), st.twice(), since(lostAt), since(began), len(logs.Find(logMarkerGone)), len(logs.Find(logRepaired)))
		})
	}
}

// startedMarkerNode runs a Dispatcher until it has set the ledger's marker
// and clock keys, requires them on one node, and returns that node.
func startedMarkerNode(t *testing.T, f *testBundle, cl *testenv.Cluster, opt asynq.RedisConnOpt) *testenv.Redis {
	t.Helper()
	d, err := signals.NewDispatcher(f.reg, f.pool, opt, signals.DispatcherConfig{Logger: quietLogger()})
	require.NoError(t, err)
	stop := start(t, d.Run)
	defer stop(10 * time.Second)
	clients := make([]*redis.Client, len(cl.Nodes))
	for i, n := range cl.Nodes {
		clients[i] = nodeClient(t, n)
	}
	on := func(rc *redis.Client, pattern string) bool {
		keys, _, err := rc.Scan(t.Context(), 0, pattern, 1000).Result()
		return err == nil && len(keys) > 0
	}
	var markerAt, clockAt []*testenv.Redis
	require.Eventually(t, func() bool {
		markerAt, clockAt = nil, nil
		for i, rc := range clients {
			if on(rc, "signals:ledger:*") {
				markerAt = append(markerAt, cl.Nodes[i])
			}
			if on(rc, "{signals:ledger:*}:clock") {
				clockAt = append(clockAt, cl.Nodes[i])
			}
		}
		return len(markerAt) > 0 && len(clockAt) > 0
	}, eventually, tick, "the Dispatcher sets the ledger's marker and clock")
	require.Len(t, markerAt, 1, "one marker key")
	require.Equal(t, markerAt, clockAt, "the clock sits on the marker's node, so that a node losing its data loses both or neither")
	return markerAt[0]
}

func pendingKey(queue string) string { return fmt.Sprintf("asynq:{%s}:pending", queue) }

// nodeClient returns a client of one cluster node alone, closed when the
// test ends.
func nodeClient(t *testing.T, n *testenv.Redis) *redis.Client {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: n.Addr})
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

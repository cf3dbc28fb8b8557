package testenv

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterSlots is how many hash slots a Redis Cluster has.
const clusterSlots = 16384

// clusterReadyTimeout bounds waiting for a new cluster's nodes to agree on
// its slots, which gossip settles within a second or two.
const clusterReadyTimeout = 20 * time.Second

// Cluster is a throwaway Redis Cluster of three primaries and no replicas,
// on 127.0.0.1, keeping nothing on disk. Point an
// asynq.RedisClusterClientOpt at Addrs. Its nodes are killed when the test
// completes.
type Cluster struct {
	// Addrs are the nodes' host:port addresses, in the order of Nodes.
	Addrs []string
	// Nodes are the cluster's primaries. Node i serves the i-th third of
	// the hash slots.
	Nodes []*Redis
}

// StartCluster starts three cluster-enabled redis-servers, gives each a
// third of the hash slots, joins them, and waits until every node reports
// the cluster ok and knows every slot's owner.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	const nodes = 3
	c := &Cluster{}
	for i := range nodes {
		n := StartRedisWith(t, RedisOptions{Args: []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			// The bus's default port, the node's plus 10000, may be taken
			// or out of range.
			"--cluster-port", strconv.Itoa(freePort(t)),
			"--cluster-node-timeout", "5000",
		}})
		c.Nodes = append(c.Nodes, n)
		c.Addrs = append(c.Addrs, n.Addr)
		first, last := slotRange(i, nodes)
		if err := do(n.Addr, "CLUSTER", "ADDSLOTSRANGE", first, last); err != nil {
			t.Fatalf("testenv: giving slots %d-%d to %s: %v", first, last, n.Addr, err)
			return nil
		}
	}
	for _, n := range c.Nodes[1:] {
		bus, err := clusterBusPort(n.Addr)
		if err == nil {
			err = do(c.Addrs[0], "CLUSTER", "MEET", "127.0.0.1", portOf(n.Addr), bus)
		}
		if err != nil {
			t.Fatalf("testenv: joining %s to the cluster: %v", n.Addr, err)
			return nil
		}
	}
	var why string
	if !poll(clusterReadyTimeout, func() bool { why = c.notReady(); return why == "" }) {
		t.Fatalf("testenv: cluster not ready after %s: %s", clusterReadyTimeout, why)
	}
	return c
}

// notReady says which node does not yet see the whole cluster, or "".
func (c *Cluster) notReady() string {
	for _, addr := range c.Addrs {
		rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		info, err := rc.ClusterInfo(context.Background()).Result()
		var slots []redis.ClusterSlot
		if err == nil {
			slots, err = rc.ClusterSlots(context.Background()).Result()
		}
		_ = rc.Close()
		switch {
		case err != nil:
			return fmt.Sprintf("%s: %v", addr, err)
		case !strings.Contains(info, "cluster_state:ok"), !strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", len(c.Addrs))):
			return fmt.Sprintf("%s: %s", addr, info)
		case len(slots) != len(c.Addrs):
			return fmt.Sprintf("%s knows %d slot ranges", addr, len(slots))
		}
	}
	return ""
}

// NodeOf returns the node serving key's hash slot.
func (c *Cluster) NodeOf(t testing.TB, key string) *Redis {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: c.Addrs[0]})
	defer rc.Close()
	slot, err := rc.ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("testenv: finding the slot of %q: %v", key, err)
		return nil
	}
	for i, n := range c.Nodes {
		if first, last := slotRange(i, len(c.Nodes)); first <= int(slot) && int(slot) <= last {
			return n
		}
	}
	t.Fatalf("testenv: no node serves slot %d", slot)
	return nil
}

// slotRange returns the first and last hash slot of node i of n.
func slotRange(i, n int) (first, last int) {
	return i * clusterSlots / n, (i+1)*clusterSlots/n - 1
}

// clusterBusPort returns the cluster bus port of the node at addr.
func clusterBusPort(addr string) (int, error) {
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rc.Close()
	v, err := rc.ConfigGet(context.Background(), "cluster-port").Result()
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(v["cluster-port"])
}

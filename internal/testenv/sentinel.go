package testenv

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMasterName is the name StartSentinels' sentinels monitor their
// primary under.
const SentinelMasterName = "signals"

// The sentinels' settings: quorum 2 of 3, and a primary declared down after
// half a second without a reply, so that a failover completes within a few
// seconds of the primary's death.
const (
	sentinelCount     = 3
	sentinelQuorum    = 2
	sentinelDownAfter = 500 * time.Millisecond
	// sentinelFailoverTimeout also spaces a failed election from the next
	// try (twice this long): short, so that a split vote costs seconds.
	sentinelFailoverTimeout = 3 * time.Second
	// sentinelReadyTimeout covers the sentinels finding each other, which
	// they do through hello messages published every 2 seconds.
	sentinelReadyTimeout = 20 * time.Second
)

// replicationUser is the ACL user the replica replicates as, so that
// CutReplication can shut the replica out without touching other clients.
const (
	replicationUser     = "replicator"
	replicationPassword = "replicator-password"
)

// Sentinels is a throwaway Redis primary with one replica, watched by three
// Redis Sentinels (quorum 2) that promote the replica within a few seconds
// of the primary going down. Every process listens on 127.0.0.1, keeps
// nothing on disk, and is killed when the test completes. Point an
// asynq.RedisFailoverClientOpt at MasterName and Addrs.
type Sentinels struct {
	// MasterName is the name the sentinels monitor the primary under:
	// SentinelMasterName.
	MasterName string
	// Addrs are the sentinels' host:port addresses.
	Addrs []string
	// Primary is the server the sentinels start out with as the primary.
	// Stop it (SIGKILL) to make them fail over.
	Primary *Redis
	// Replica replicates Primary, and is the server promoted when Primary
	// fails.
	Replica *Redis

	sentinels []*Redis
}

// StartSentinels starts a primary, a replica in sync with it, and three
// sentinels monitoring them, and waits until every sentinel knows the
// replica and the other two sentinels, so that a failover can start as soon
// as the primary fails. That takes a few seconds: sentinels find each other
// through messages they publish every 2 seconds.
func StartSentinels(t testing.TB) *Sentinels {
	t.Helper()
	s := &Sentinels{MasterName: SentinelMasterName}
	s.Primary = StartRedisWith(t, RedisOptions{Args: []string{
		// Sync the replica at once, not after Redis's default 5 s wait
		// for more replicas.
		"--repl-diskless-sync-delay", "0",
	}})
	acl := []any{"ACL", "SETUSER", replicationUser, "on", ">" + replicationPassword, "~*", "&*", "+@all"}
	if err := do(s.Primary.Addr, acl...); err != nil {
		t.Fatalf("testenv: creating the replication user on %s: %v", s.Primary.Addr, err)
		return nil
	}
	host, port, _ := net.SplitHostPort(s.Primary.Addr)
	s.Replica = StartRedisWith(t, RedisOptions{Args: []string{
		"--replicaof", host, port,
		"--masteruser", replicationUser,
		"--masterauth", replicationPassword,
	}})
	Eventually(t, redisReadyTimeout, func() bool {
		return s.replicaLink() == "up"
	}, "testenv: replica %s never synced with primary %s", s.Replica.Addr, s.Primary.Addr)

	conf := fmt.Sprintf("sentinel monitor %[1]s %[2]s %[3]s %[4]d\n"+
		"sentinel down-after-milliseconds %[1]s %[5]d\n"+
		"sentinel failover-timeout %[1]s %[6]d\n"+
		"sentinel parallel-syncs %[1]s 1\n",
		s.MasterName, host, port, sentinelQuorum, sentinelDownAfter.Milliseconds(), sentinelFailoverTimeout.Milliseconds())
	for range sentinelCount {
		r := StartRedisWith(t, RedisOptions{Config: conf, Sentinel: true})
		s.sentinels = append(s.sentinels, r)
		s.Addrs = append(s.Addrs, r.Addr)
	}
	var why string
	if !poll(sentinelReadyTimeout, func() bool { why = s.notReady(); return why == "" }) {
		t.Fatalf("testenv: sentinels not ready after %s: %s", sentinelReadyTimeout, why)
	}
	return s
}

// notReady says what keeps a failover from starting, or "" when nothing
// does: every sentinel must know the replica (in sync) and the others.
func (s *Sentinels) notReady() string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, addr := range s.Addrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1})
		replicas, err := sc.Replicas(ctx, s.MasterName).Result()
		if err == nil && (len(replicas) != 1 || strings.Contains(replicas[0]["flags"], "disconnected") ||
			replicas[0]["master-link-status"] != "ok") {
			err = fmt.Errorf("knows replicas %v", replicas)
		}
		var others []map[string]string
		if err == nil {
			others, err = sc.Sentinels(ctx, s.MasterName).Result()
		}
		if err == nil && len(others) != sentinelCount-1 {
			err = fmt.Errorf("knows %d other sentinels", len(others))
		}
		_ = sc.Close()
		if err != nil {
			return fmt.Sprintf("sentinel %s: %v", addr, err)
		}
	}
	return ""
}

// MasterAddr returns the host:port of the primary as the first sentinel
// that answers names it: Primary.Addr until a failover, Replica.Addr after.
func (s *Sentinels) MasterAddr(ctx context.Context) (string, error) {
	var err error
	for _, addr := range s.Addrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1})
		var hostPort []string
		hostPort, err = sc.GetMasterAddrByName(ctx, s.MasterName).Result()
		_ = sc.Close()
		if err == nil && len(hostPort) == 2 {
			return net.JoinHostPort(hostPort[0], hostPort[1]), nil
		}
	}
	return "", fmt.Errorf("no sentinel names the primary of %s: %w", s.MasterName, err)
}

// CutReplication makes the replica fall behind, as a lagging replica does:
// the primary drops the replica's link and refuses it from then on, so
// whatever the primary takes afterwards never reaches the replica and is
// lost when the sentinels promote it. Clients of the primary are not
// affected, and the sentinels still find the replica fit for promotion for
// several seconds (ten times down-after-milliseconds).
func (s *Sentinels) CutReplication(t testing.TB) {
	t.Helper()
	for _, cmd := range [][]any{
		{"ACL", "SETUSER", replicationUser, "off"},
		{"CLIENT", "KILL", "USER", replicationUser},
	} {
		if err := do(s.Primary.Addr, cmd...); err != nil {
			t.Fatalf("testenv: cutting replication at %s: %v", s.Primary.Addr, err)
			return
		}
	}
	Eventually(t, redisReadyTimeout, func() bool {
		return s.replicaLink() == "down"
	}, "testenv: replica %s still replicates after the cut", s.Replica.Addr)
}

// replicaLink returns the replica's master_link_status: "up", "down", or
// "" if the replica cannot say.
func (s *Sentinels) replicaLink() string {
	rc := redis.NewClient(&redis.Options{Addr: s.Replica.Addr, MaxRetries: -1})
	defer rc.Close()
	info, err := rc.Info(context.Background(), "replication").Result()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "master_link_status:"); ok {
			return v
		}
	}
	return ""
}

// do sends one command to the server at addr.
func do(addr string, args ...any) error {
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), redisReadyTimeout)
	defer cancel()
	return rc.Do(ctx, args...).Err()
}

// portOf returns addr's port.
func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

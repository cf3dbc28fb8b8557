package main

// Redis housekeeping that never blocks the server for long: queues are
// deleted in bounded steps, and a scenario that leaves a million tasks
// behind runs on a throwaway redis-server that is simply stopped.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// deleteStep bounds the work of one Redis call while deleting a queue.
const deleteStep = 1000

// deleteQueue removes every key of asynq queue q: SCAN of its keys (all
// carry the {q} hash tag) and UNLINK of each step's keys, which frees large
// values off Redis's main thread. asynq's own DeleteQueue runs one Lua script
// over every task, which for a million tasks keeps Redis answering BUSY to
// everyone for seconds.
func deleteQueue(ctx context.Context, rdb *redis.Client, q string) error {
	if err := rdb.SRem(ctx, "asynq:queues", q).Err(); err != nil {
		return fmt.Errorf("deregister queue %s: %w", q, err)
	}
	keys := make([]string, 0, deleteStep)
	unlink := func() error {
		if len(keys) == 0 {
			return nil
		}
		err := rdb.Unlink(ctx, keys...).Err()
		keys = keys[:0]
		return err
	}
	it := rdb.Scan(ctx, 0, "asynq:{"+q+"}:*", deleteStep).Iterator()
	for it.Next(ctx) {
		if keys = append(keys, it.Val()); len(keys) == deleteStep {
			if err := unlink(); err != nil {
				return fmt.Errorf("delete keys of queue %s: %w", q, err)
			}
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("scan keys of queue %s: %w", q, err)
	}
	if err := unlink(); err != nil {
		return fmt.Errorf("delete keys of queue %s: %w", q, err)
	}
	return nil
}

// errNoRedisServer means no redis-server binary is on PATH.
var errNoRedisServer = errors.New("no redis-server on PATH")

// scratchRedis is a redis-server of the benchmark's own, on a free loopback
// port, without persistence, removed with everything in it by stop.
type scratchRedis struct {
	addr    string
	version string
	rdb     *redis.Client
	cmd     *exec.Cmd
	dir     string
	log     bytes.Buffer
	exited  chan struct{}
}

// startScratchRedis starts a throwaway redis-server and waits until it
// answers.
func startScratchRedis(ctx context.Context) (*scratchRedis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errNoRedisServer
	}
	var lastErr error
	for range 3 { // the free port may be taken before the server binds it
		s, err := launchScratchRedis(ctx, bin)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func launchScratchRedis(ctx context.Context, bin string) (*scratchRedis, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "bench-redis-")
	if err != nil {
		return nil, err
	}
	s := &scratchRedis{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", "")
	s.cmd.Stdout, s.cmd.Stderr = &s.log, &s.log
	// Dies with the benchmark, even if the benchmark is killed; its own
	// process group keeps a terminal's ^C away from it, so that an
	// interrupted run still cleans up through it before stopping it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	s.rdb = redis.NewClient(&redis.Options{Addr: s.addr})
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.rdb.Ping(ctx).Err()
		if err == nil {
			break
		}
		select {
		case <-s.exited:
			err = fmt.Errorf("redis-server on %s exited: %s", s.addr, lastLine(s.log.String()))
		default:
			if time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
		}
		_, _ = s.stop()
		return nil, fmt.Errorf("throwaway redis-server: %w", err)
	}
	if info, err := s.rdb.InfoMap(ctx, "server").Result(); err == nil {
		s.version = info["Server"]["redis_version"]
	}
	return s, nil
}

// stop ends the server (its data is discarded: no persistence) and removes
// its directory; it returns how long the server took to exit.
func (s *scratchRedis) stop() (time.Duration, error) {
	start := time.Now()
	_ = s.rdb.Close()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		err = fmt.Errorf("redis-server on %s ignored SIGTERM for 30s; killed", s.addr)
	}
	took := time.Since(start)
	if rerr := os.RemoveAll(s.dir); err == nil && rerr != nil {
		err = rerr
	}
	return took, err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisReadyTimeout bounds waiting for a redis-server to start or stop; it
// takes milliseconds unless the machine is badly overloaded.
const redisReadyTimeout = 10 * time.Second

// errExitedEarly reports that redis-server exited before answering, most
// likely because another process took its port.
var errExitedEarly = errors.New("redis-server exited early")

// Redis is a throwaway redis-server process started by StartRedis. It keeps no
// data on disk and listens on 127.0.0.1 only. Its methods are safe for
// concurrent use.
type Redis struct {
	// Addr is the host:port the server listens on. It does not change when
	// the server is stopped and started again.
	Addr string

	bin  string
	dir  string
	port int
	opts RedisOptions

	mu      sync.Mutex
	cmd     *exec.Cmd     // nil while stopped
	exited  chan struct{} // closed once cmd has been waited for
	waitErr error         // cmd.Wait's result, valid after exited is closed
}

// StartRedis starts a throwaway redis-server on a free 127.0.0.1 port, with
// persistence disabled and its working directory in t.TempDir(), and waits
// until it answers PING. The server is killed when the test completes. The
// test fails if redis-server is not on PATH.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	return StartRedisWith(t, RedisOptions{})
}

// RedisOptions configures a server started by StartRedisWith. The zero value
// starts what StartRedis starts.
type RedisOptions struct {
	// Args are extra redis-server arguments, given after testenv's own (port,
	// bind address, persistence off, directory, log file), one word each:
	// "--replicaof", "127.0.0.1", "6380", not "--replicaof", "127.0.0.1 6380".
	Args []string
	// Config, unless empty, is written to redis.conf in the server's
	// directory, which is given to redis-server as its config file. The
	// server may rewrite it: a sentinel records there what it learns, and
	// reads it back when started again.
	Config string
	// Sentinel runs the server as a Redis Sentinel (redis-server
	// --sentinel). A sentinel needs a Config with a "sentinel monitor" line.
	Sentinel bool
}

// StartRedisWith is StartRedis for a server configured by opts: a replica,
// a sentinel or a cluster node.
func StartRedisWith(t testing.TB, opts RedisOptions) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testenv: redis-server not found on PATH (install the redis-server package, e.g. apt-get install redis-server): %v", err)
		return nil // t may be a fake whose Fatalf returns
	}
	r := &Redis{bin: bin, dir: t.TempDir(), opts: opts}
	if opts.Config != "" {
		if err := os.WriteFile(r.configFile(), []byte(opts.Config), 0o600); err != nil {
			t.Fatalf("testenv: writing redis-server's config file: %v", err)
			return nil
		}
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("testenv: stopping redis-server at %s: %v", r.Addr, err)
		}
	})
	// Another process may take the free port before redis-server binds it;
	// then the server exits at once, and another port will do.
	for attempt := 1; ; attempt++ {
		r.port = freePort(t)
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
		err := r.start()
		if err == nil {
			return r
		}
		if attempt == 3 || !errors.Is(err, errExitedEarly) {
			t.Fatalf("testenv: starting redis-server at %s: %v", r.Addr, err)
			return nil
		}
	}
}

// Start starts the server again on the same address after Stop and waits
// until it answers PING. It fails the test if the server is already running
// or does not become ready within 10 seconds. The server comes back empty.
func (r *Redis) Start(t testing.TB) {
	t.Helper()
	if err := r.start(); err != nil {
		t.Fatalf("testenv: starting redis-server at %s: %v", r.Addr, err)
	}
}

// Stop kills the server (SIGKILL), waits for the process to exit and for its
// port to stop accepting connections. Stopping a stopped server does nothing.
func (r *Redis) Stop(t testing.TB) {
	t.Helper()
	if err := r.stop(); err != nil {
		t.Fatalf("testenv: stopping redis-server at %s: %v", r.Addr, err)
	}
}

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return errors.New("already running")
	}
	var args []string
	if r.opts.Config != "" {
		args = append(args, r.configFile()) // redis-server wants it first
	}
	if r.opts.Sentinel {
		args = append(args, "--sentinel")
	}
	args = append(args,
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--daemonize", "no",
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--logfile", r.logFile(),
	)
	cmd := exec.Command(r.bin, append(args, r.opts.Args...)...)
	cmd.Dir = r.dir
	// Stdin, Stdout and Stderr stay nil (/dev/null), so exec starts no
	// copying goroutines that could outlive the test; redis logs to logFile.
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	r.cmd, r.exited = cmd, exited
	go func() {
		r.waitErr = cmd.Wait()
		close(exited)
	}()

	exitedEarly, pingErr := awaitReady(redisReadyTimeout, exited, func() error { return ping(r.Addr) })
	switch {
	case pingErr == nil:
		return nil
	case exitedEarly:
		r.cmd, r.exited = nil, nil
		return fmt.Errorf("%w (%v); log:\n%s", errExitedEarly, r.waitErr, r.logTail())
	default:
		_ = cmd.Process.Kill()
		<-exited
		r.cmd, r.exited = nil, nil
		return fmt.Errorf("not ready after %s: %v; log:\n%s", redisReadyTimeout, pingErr, r.logTail())
	}
}

func (r *Redis) stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return nil
	}
	// Kill fails only if the process already exited, which Wait reports.
	_ = r.cmd.Process.Kill()
	<-r.exited
	r.cmd, r.exited = nil, nil

	// Callers expect an outage from the moment Stop returns, not from when
	// the kernel gets round to closing the listening socket.
	refused := poll(redisReadyTimeout, func() bool {
		conn, err := net.DialTimeout("tcp", r.Addr, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
	if !refused {
		return fmt.Errorf("%s still accepts connections %s after the process exited", r.Addr, redisReadyTimeout)
	}
	return nil
}

// ping reports whether a Redis server at addr answers PING.
func ping(addr string) error {
	// A client per call, without retries: poll is the retry, and a go-redis
	// pool whose dials keep failing stops dialing for a second.
	rdb := redis.NewClient(&redis.Options{
		Addr:         addr,
		MaxRetries:   -1,
		DialTimeout:  time.Second,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
	})
	defer rdb.Close()
	return rdb.Ping(context.Background()).Err()
}

func (r *Redis) logFile() string    { return filepath.Join(r.dir, "redis.log") }
func (r *Redis) configFile() string { return filepath.Join(r.dir, "redis.conf") }

// logTail returns the end of the server's log file, which says why a server
// did not start.
func (r *Redis) logTail() string {
	b, err := os.ReadFile(r.logFile())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// freePort returns a 127.0.0.1 TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: finding a free port: %v", err)
		return 0
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("testenv: finding a free port: %v", err)
	}
	return port
}

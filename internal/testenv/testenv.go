// Package testenv holds helpers shared by this repository's tests: access to
// the PostgreSQL and Redis instances the tests run against, unique schema and
// queue names that clean up after themselves, a throwaway redis-server that
// can be stopped and restarted, and a TCP proxy that can cut connections.
//
// It depends only on the standard library, pgx and ulid so that any test
// package can import it.
package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
)

// Environment variables read by this package.
const (
	// DatabaseURLEnv names the variable holding the PostgreSQL URL tests use.
	DatabaseURLEnv = "SIGNALS_TEST_DATABASE_URL"
	// RedisAddrEnv names the variable holding the Redis host:port tests use.
	RedisAddrEnv = "SIGNALS_TEST_REDIS_ADDR"
)

const (
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/test"
	defaultRedisAddr   = "127.0.0.1:6379"

	// connectTimeout bounds connecting to and pinging PostgreSQL or Redis.
	connectTimeout = 15 * time.Second
	// cleanupTimeout bounds the work done by a single cleanup function.
	cleanupTimeout = 30 * time.Second
	// redisReadyTimeout bounds waiting for a redis-server to start or stop.
	redisReadyTimeout = 10 * time.Second
	// pollTick is the interval used when polling for a condition.
	pollTick = 5 * time.Millisecond
)

// DatabaseURL returns the PostgreSQL connection URL tests run against: the
// value of SIGNALS_TEST_DATABASE_URL, or postgres://postgres@127.0.0.1:5432/test
// when it is unset or empty.
func DatabaseURL() string {
	if v := os.Getenv(DatabaseURLEnv); v != "" {
		return v
	}
	return defaultDatabaseURL
}

// RedisAddr returns the host:port of the Redis server tests run against: the
// value of SIGNALS_TEST_REDIS_ADDR, or 127.0.0.1:6379 when it is unset or
// empty.
func RedisAddr() string {
	if v := os.Getenv(RedisAddrEnv); v != "" {
		return v
	}
	return defaultRedisAddr
}

// Pool returns a new, pinged connection pool to DatabaseURL. The pool is
// closed when the test and its subtests complete. If PostgreSQL cannot be
// reached the test fails with a message naming SIGNALS_TEST_DATABASE_URL.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return PoolFor(t, DatabaseURL())
}

// PoolFor is like Pool but connects to the given URL, typically one returned
// by URLVia.
func PoolFor(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatalf("testenv: invalid PostgreSQL URL %q: %v (set %s to a valid postgres:// URL)",
			redactURL(url), err, DatabaseURLEnv)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		t.Fatalf("testenv: cannot reach PostgreSQL at %s: %v (start PostgreSQL or set %s; default %s)",
			redactURL(url), err, DatabaseURLEnv, defaultDatabaseURL)
		return nil
	}
	t.Cleanup(pool.Close)
	return pool
}

// Schema returns a fresh, unique PostgreSQL schema name of the form
// "t_<lowercase ULID>". It is a valid unquoted identifier (matching
// ^[a-z_][a-z0-9_]*$, well under 63 bytes). Schema does not create the
// schema; when the test completes it is dropped with DROP SCHEMA IF EXISTS
// ... CASCADE over a separate short-lived connection to DatabaseURL.
func Schema(t testing.TB) string {
	t.Helper()
	name := "t_" + newID()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		conn, err := pgx.Connect(ctx, DatabaseURL())
		if err != nil {
			t.Errorf("testenv: dropping schema %s: cannot connect to %s: %v (set %s)",
				name, redactURL(DatabaseURL()), err, DatabaseURLEnv)
			return
		}
		defer conn.Close(ctx)
		sql := "DROP SCHEMA IF EXISTS " + pgx.Identifier{name}.Sanitize() + " CASCADE"
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Errorf("testenv: %s: %v", sql, err)
		}
	})
	return name
}

// Queue returns a fresh, unique asynq queue name of the form
// "q_<lowercase ULID>". When the test completes, every key matching
// asynq:{<name>}:* is deleted from the Redis server at RedisAddr and the name
// is removed from the asynq:queues set.
func Queue(t testing.TB) string {
	t.Helper()
	name := "q_" + newID()
	t.Cleanup(func() {
		if err := deleteQueueKeys(RedisAddr(), name); err != nil {
			t.Errorf("testenv: deleting Redis keys of queue %s at %s: %v (set %s)",
				name, RedisAddr(), err, RedisAddrEnv)
		}
	})
	return name
}

func newID() string {
	return strings.ToLower(ulid.Make().String())
}

// deleteQueueKeys removes asynq's keys for queue qname from the Redis server
// at addr.
func deleteQueueKeys(addr, qname string) error {
	c, err := dialRESP(addr, cleanupTimeout)
	if err != nil {
		return err
	}
	defer c.Close()

	pattern := "asynq:{" + qname + "}:*"
	cursor := "0"
	for {
		reply, err := c.do("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
		if err != nil {
			return err
		}
		parts, ok := reply.([]any)
		if !ok || len(parts) != 2 {
			return fmt.Errorf("unexpected SCAN reply %#v", reply)
		}
		next, ok := parts[0].(string)
		if !ok {
			return fmt.Errorf("unexpected SCAN cursor %#v", parts[0])
		}
		keys, ok := parts[1].([]any)
		if !ok {
			return fmt.Errorf("unexpected SCAN keys %#v", parts[1])
		}
		if len(keys) > 0 {
			args := make([]string, 0, len(keys)+1)
			args = append(args, "DEL")
			for _, k := range keys {
				s, ok := k.(string)
				if !ok {
					return fmt.Errorf("unexpected SCAN key %#v", k)
				}
				args = append(args, s)
			}
			if _, err := c.do(args...); err != nil {
				return err
			}
		}
		cursor = next
		if cursor == "0" {
			break
		}
	}
	_, err = c.do("SREM", "asynq:queues", qname)
	return err
}

// respConn is a minimal RESP2 client, enough for cleanup and health checks.
type respConn struct {
	conn net.Conn
	r    *bufio.Reader
}

// respError is an error reply ("-ERR ...") from Redis.
type respError string

func (e respError) Error() string { return "redis: " + string(e) }

func dialRESP(addr string, timeout time.Duration) (*respConn, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		conn.Close()
		return nil, err
	}
	return &respConn{conn: conn, r: bufio.NewReader(conn)}, nil
}

func (c *respConn) Close() error { return c.conn.Close() }

// do sends one command and reads its reply. Replies decode to string (simple
// and bulk strings), int64, []any, nil (null), or a respError returned as the
// error.
func (c *respConn) do(args ...string) (any, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c.conn, b.String()); err != nil {
		return nil, err
	}
	v, err := c.read()
	if err != nil {
		return nil, err
	}
	if e, ok := v.(respError); ok {
		return nil, e
	}
	return v, nil
}

func (c *respConn) readLine() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(line, "\r\n") {
		return "", fmt.Errorf("redis: malformed line %q", line)
	}
	return line[:len(line)-2], nil
}

func (c *respConn) read() (any, error) {
	line, err := c.readLine()
	if err != nil {
		return nil, err
	}
	if line == "" {
		return nil, errors.New("redis: empty reply line")
	}
	switch prefix, rest := line[0], line[1:]; prefix {
	case '+':
		return rest, nil
	case '-':
		return respError(rest), nil
	case ':':
		return strconv.ParseInt(rest, 10, 64)
	case '$':
		n, err := strconv.Atoi(rest)
		if err != nil {
			return nil, fmt.Errorf("redis: bad bulk length %q", rest)
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(rest)
		if err != nil {
			return nil, fmt.Errorf("redis: bad array length %q", rest)
		}
		if n < 0 {
			return nil, nil
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = c.read(); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("redis: unexpected reply %q", line)
	}
}

// pingRedis reports whether a Redis server at addr answers PING with PONG.
func pingRedis(addr string, timeout time.Duration) error {
	c, err := dialRESP(addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	v, err := c.do("PING")
	if err != nil {
		return err
	}
	if v != "PONG" {
		return fmt.Errorf("redis: unexpected PING reply %#v", v)
	}
	return nil
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

// Redis is a throwaway redis-server process started by StartRedis. It keeps no
// data on disk and listens on 127.0.0.1 only.
type Redis struct {
	// Addr is the host:port the server listens on. It does not change when
	// the server is stopped and started again.
	Addr string

	bin  string
	dir  string
	port int

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has been waited for
	waitErr error         // cmd.Wait's result, valid after exited is closed
}

// StartRedis starts a throwaway redis-server on a free 127.0.0.1 port, with
// persistence disabled and its working directory in t.TempDir(), and waits
// until it answers PING. The server is killed when the test completes. The
// test fails if redis-server is not on PATH.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testenv: redis-server not found on PATH (install the redis-server package, e.g. apt-get install redis-server): %v", err)
		return nil
	}
	r := &Redis{bin: bin, dir: t.TempDir()}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("testenv: stopping redis-server at %s: %v", r.Addr, err)
		}
	})
	// The free port may be taken by someone else before redis-server binds
	// it; if the server exits right away, try another port.
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

// errExitedEarly reports that redis-server exited before becoming ready.
var errExitedEarly = errors.New("redis-server exited early")

// Start starts the server again on the same address after Stop and waits
// until it answers PING. It fails the test if the server is already running
// or does not become ready within 10 seconds.
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

func (r *Redis) logFile() string { return filepath.Join(r.dir, "redis.log") }

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return errors.New("already running")
	}
	cmd := exec.Command(r.bin,
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--daemonize", "no",
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--logfile", r.logFile(),
	)
	cmd.Dir = r.dir
	// Stdin, Stdout and Stderr stay nil (/dev/null), so exec starts no
	// copying goroutines; redis logs to logFile.
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	r.cmd, r.exited = cmd, exited
	go func() {
		r.waitErr = cmd.Wait()
		close(exited)
	}()

	deadline := time.Now().Add(redisReadyTimeout)
	tick := time.NewTicker(pollTick)
	defer tick.Stop()
	var lastErr error
	for {
		if lastErr = pingRedis(r.Addr, time.Second); lastErr == nil {
			return nil
		}
		select {
		case <-exited:
			r.cmd, r.exited = nil, nil
			return fmt.Errorf("%w (%v); log:\n%s", errExitedEarly, r.waitErr, r.logTail())
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			r.cmd, r.exited = nil, nil
			return fmt.Errorf("not ready after %s: %v; log:\n%s", redisReadyTimeout, lastErr, r.logTail())
		}
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

	deadline := time.Now().Add(redisReadyTimeout)
	for {
		conn, err := net.DialTimeout("tcp", r.Addr, time.Second)
		if err != nil {
			return nil
		}
		conn.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still accepts connections %s after the process exited", r.Addr, redisReadyTimeout)
		}
		time.Sleep(pollTick)
	}
}

// logTail returns the end of the server's log file, for error messages.
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

// Proxy is a TCP proxy started by StartProxy. It forwards every connection
// accepted on Addr to a fixed target and can cut or refuse connections to
// simulate network failures.
type Proxy struct {
	// Addr is the 127.0.0.1 host:port the proxy listens on.
	Addr string

	target string
	ln     net.Listener
	ctx    context.Context // canceled when the proxy is closed
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	blocked bool
	closed  bool
	conns   map[*proxyConn]struct{}
}

// proxyConn is one proxied connection: the accepted client side and, once
// dialed, the side connected to the target.
type proxyConn struct {
	client   net.Conn
	upstream net.Conn // nil until dialed
	cut      bool
}

// closeLocked closes both sides; p.mu must be held.
func (pc *proxyConn) closeLocked() {
	pc.cut = true
	pc.client.Close()
	if pc.upstream != nil {
		pc.upstream.Close()
	}
}

// StartProxy starts a TCP proxy on a free 127.0.0.1 port that forwards each
// connection to target (host:port). When the test completes the listener and
// all connections are closed and the proxy's goroutines have exited.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: starting proxy to %s: %v", target, err)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		Addr:   ln.Addr().String(),
		target: target,
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[*proxyConn]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.close)
	return p
}

// Cut closes every currently open proxied connection, both the client and the
// target side. New connections are still accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutLocked()
}

// Block closes every currently open proxied connection and closes new ones
// immediately after accepting them, until Unblock is called.
func (p *Proxy) Block() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = true
	p.cutLocked()
}

// Unblock makes the proxy forward new connections again after Block.
func (p *Proxy) Unblock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = false
}

func (p *Proxy) cutLocked() {
	for pc := range p.conns {
		pc.closeLocked()
		delete(p.conns, pc)
	}
}

func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.cutLocked()
	p.mu.Unlock()
	p.cancel()
	p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // listener closed
		}
		p.mu.Lock()
		if p.closed || p.blocked {
			p.mu.Unlock()
			client.Close()
			continue
		}
		pc := &proxyConn{client: client}
		p.conns[pc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(pc)
	}
}

func (p *Proxy) serve(pc *proxyConn) {
	defer p.wg.Done()
	defer p.forget(pc)

	var d net.Dialer
	dctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	upstream, err := d.DialContext(dctx, "tcp", p.target)
	cancel()
	if err != nil {
		return
	}
	p.mu.Lock()
	if pc.cut {
		// Cut, Block or close ran while dialing.
		p.mu.Unlock()
		upstream.Close()
		return
	}
	pc.upstream = upstream
	p.mu.Unlock()

	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(upstream, pc.client)
	go pipe(pc.client, upstream)
	<-done
	// One direction ended: tear down both so the other copy returns too.
	p.forget(pc)
	<-done
}

// forget closes pc and removes it from the set of open connections.
func (p *Proxy) forget(pc *proxyConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc.closeLocked()
	delete(p.conns, pc)
}

// URLVia returns DatabaseURL with its host and port replaced by the proxy's
// Addr, so that connections made with it can be cut with p.Cut or p.Block.
// DatabaseURL must be in URL form (postgres://...), not key=value form.
func URLVia(t testing.TB, p *Proxy) string {
	t.Helper()
	raw := DatabaseURL()
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("testenv: URLVia needs %s in postgres:// URL form, got %q", DatabaseURLEnv, redactURL(raw))
		return ""
	}
	u.Host = p.Addr
	// host and port query parameters would override the URL's host.
	q := u.Query()
	if q.Has("host") || q.Has("port") {
		q.Del("host")
		q.Del("port")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// Eventually calls cond every 5 ms until it returns true, and fails the test
// with the formatted message if it has not done so within timeout. cond is
// always called at least once.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollTick)
	defer tick.Stop()
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf(format, args...)
			return
		}
		<-tick.C
	}
}

// redactURL hides the password of a URL for messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return s
	}
	return u.Redacted()
}

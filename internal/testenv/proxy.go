package testenv

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy started by StartProxy. It forwards every connection
// accepted on Addr to a fixed target and can cut or refuse connections to
// simulate network failures. Its methods are safe for concurrent use.
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
		return nil // t may be a fake whose Fatalf returns
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

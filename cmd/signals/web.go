package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dj-signals/signals/dashboard"
)

// The environment variables that hold the dashboard's basic-auth
// credentials: kept out of the command line, which other users of the
// machine can read in the process list.
const (
	webUserEnv     = "SIGNALS_WEB_USER"
	webPasswordEnv = "SIGNALS_WEB_PASSWORD"
)

// webShutdownTimeout bounds the wait for requests in progress at SIGINT or
// SIGTERM.
const webShutdownTimeout = 10 * time.Second

// webCommand serves the dashboard until SIGINT or SIGTERM. It checks the
// servers and the schema before it listens, as relay does.
func webCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("web", "signals web [--addr HOST:PORT] [--read-only] [--trace-url URL] [--no-auth] [connection flags]", stdout)
	var c connection
	c.addFlags(fs)
	addr := fs.String("addr", "127.0.0.1:8080", "listen on `HOST:PORT`; an address other than loopback needs "+webUserEnv+" and "+webPasswordEnv+" (or --no-auth)")
	readOnly := fs.Bool("read-only", false, "serve the pages without the requeue and discard actions")
	traceURL := fs.String("trace-url", "", "link an event's trace: a `URL` with {trace_id} where the trace's ID goes")
	noAuth := fs.Bool("no-auth", false, "serve an address other than loopback without basic auth (behind a proxy that authenticates)")
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	user, password := os.Getenv(webUserEnv), os.Getenv(webPasswordEnv)
	if (user == "") != (password == "") {
		return usagef("set both %s and %s for basic auth, or neither", webUserEnv, webPasswordEnv)
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return usagef("--addr %q: want HOST:PORT, such as 127.0.0.1:8080: %v", *addr, err)
	}
	if !isLoopback(host) && user == "" && !*noAuth {
		return usagef("--addr %s is not a loopback address: set %s and %s for basic auth (or pass --no-auth behind a proxy that authenticates)", *addr, webUserEnv, webPasswordEnv)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, nil))

	s, err := c.open(ctx, true)
	if err != nil {
		return err
	}
	defer s.Close()
	checkCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := s.checkSchema(checkCtx); err != nil {
		return err
	}
	h, err := dashboard.New(s.ledger, dashboard.Config{ReadOnly: *readOnly, TraceURL: *traceURL, Logger: log})
	if err != nil {
		return usagef("%v", err)
	}
	h = withTimeout(h, c.timeout)
	if user != "" {
		h = withBasicAuth(h, user, password)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "signals web: the dashboard of schema %s is at http://%s/%s\n", c.schema, ln.Addr(), authNote(user, *readOnly))
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), webShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("stop the web server: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("signals web stopped", "schema", c.schema)
	return nil
}

// authNote says how the pages are protected, after their address.
func authNote(user string, readOnly bool) string {
	note := " (no auth"
	if user != "" {
		note = " (basic auth as " + user
	}
	if readOnly {
		note += ", read-only"
	}
	return note + ")"
}

// isLoopback reports whether host names only this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// webActionTimeout bounds a requeue or discard, which may work through
// many batches of letters.
const webActionTimeout = 5 * time.Minute

// withTimeout bounds each page's work by d, as --timeout bounds the other
// commands', and each action's by webActionTimeout.
func withTimeout(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := d
		if r.Method == http.MethodPost {
			limit = webActionTimeout
		}
		ctx, cancel := context.WithTimeout(r.Context(), limit)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// withBasicAuth lets through the requests that carry user and password,
// compared in constant time.
func withBasicAuth(h http.Handler, user, password string) http.Handler {
	wantUser, wantPassword := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		gotUser, gotPassword := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		if !ok || subtle.ConstantTimeCompare(gotUser[:], wantUser[:])&subtle.ConstantTimeCompare(gotPassword[:], wantPassword[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="signals", charset="UTF-8"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

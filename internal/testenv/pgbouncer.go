package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// pgbouncerReadyTimeout bounds waiting for a pgbouncer to answer or to
	// exit; it takes milliseconds unless the machine is badly overloaded.
	pgbouncerReadyTimeout = 10 * time.Second

	// PgBouncerPoolSize is how many server connections a PgBouncer started
	// by StartPgBouncer opens to PostgreSQL at most: fewer than its clients
	// usually hold, so that their transactions take turns on them.
	PgBouncerPoolSize = 4
)

// pgbouncerDirs are searched for pgbouncer after PATH: Debian installs it
// in /usr/sbin, which is not on an ordinary user's PATH.
var pgbouncerDirs = []string{"/usr/sbin", "/usr/local/sbin"}

// PgBouncer is a throwaway pgbouncer process started by StartPgBouncer, in
// transaction pooling mode in front of the test database. Its methods are
// safe for concurrent use.
type PgBouncer struct {
	// Addr is the 127.0.0.1 host:port PgBouncer listens on.
	Addr string

	dir      string
	database *pgconn.Config // the test database, as DatabaseURL names it

	mu      sync.Mutex
	cmd     *exec.Cmd     // nil once stopped
	exited  chan struct{} // closed once cmd has been waited for
	waitErr error         // cmd.Wait's result, valid after exited is closed
}

// StartPgBouncer starts a throwaway pgbouncer on a free 127.0.0.1 port, in
// transaction pooling mode (pool_mode = transaction) with at most
// PgBouncerPoolSize server connections, in front of the database
// DatabaseURL names, under that database's name; clients are trusted, as
// the URL's user. Its config, auth file and log are in t.TempDir(). It
// waits until a client can run a statement through it, and stops it when
// the test completes. The test fails if pgbouncer is not installed: it is
// looked for on PATH, then in /usr/sbin and /usr/local/sbin.
func StartPgBouncer(t testing.TB) *PgBouncer {
	t.Helper()
	bin, err := findPgBouncer(os.Getenv("PATH"), pgbouncerDirs)
	if err != nil {
		t.Fatalf("testenv: %v", err)
		return nil // t may be a fake whose Fatalf returns
	}
	database, err := pgconn.ParseConfig(DatabaseURL())
	if err != nil {
		t.Fatalf("testenv: invalid PostgreSQL URL %q: %v (set %s to a valid postgres:// URL)", redactURL(DatabaseURL()), err, DatabaseURLEnv)
		return nil
	}
	p := &PgBouncer{dir: t.TempDir(), database: database}
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Errorf("testenv: stopping pgbouncer at %s: %v", p.Addr, err)
		}
	})
	// Another process may take the free port before pgbouncer binds it;
	// then pgbouncer exits at once, and another port will do.
	for attempt := 1; ; attempt++ {
		p.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		err := p.start(bin)
		if err == nil {
			return p
		}
		if attempt == 3 || !errors.Is(err, errPgBouncerExited) {
			t.Fatalf("testenv: starting pgbouncer at %s: %v", p.Addr, err)
			return nil
		}
	}
}

// errPgBouncerExited reports that pgbouncer exited before answering, most
// likely because another process took its port.
var errPgBouncerExited = errors.New("pgbouncer exited early")

// findPgBouncer returns the path of the pgbouncer executable in the
// directories of path (a PATH value), else in dirs.
func findPgBouncer(path string, dirs []string) (string, error) {
	for _, dir := range append(filepath.SplitList(path), dirs...) {
		if dir == "" {
			continue
		}
		bin := filepath.Join(dir, "pgbouncer")
		if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return bin, nil
		}
	}
	return "", fmt.Errorf("pgbouncer not found on PATH or in %s: the PgBouncer tests need it (install the pgbouncer package, e.g. apt-get install pgbouncer; .ci/run installs it when missing)",
		strings.Join(dirs, ", "))
}

// URL returns a postgres:// URL of the test database through PgBouncer, as
// DatabaseURL's user, without TLS (PgBouncer offers none here). query, if
// not empty, is the URL's query string, such as
// "default_query_exec_mode=exec".
func (p *PgBouncer) URL(query string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(p.database.User),
		Host:     p.Addr,
		Path:     "/" + p.database.Database,
		RawQuery: "sslmode=disable",
	}
	if query != "" {
		u.RawQuery += "&" + query
	}
	return u.String()
}

// Log returns the end of PgBouncer's log, for a failure message.
func (p *PgBouncer) Log() string {
	b, err := os.ReadFile(p.logFile())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

func (p *PgBouncer) start(bin string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.writeConfig(); err != nil {
		return err
	}
	var args []string
	if os.Geteuid() == 0 {
		// pgbouncer refuses to run as root. It reads its config and auth
		// file before it switches user, and logs to the stderr it inherits.
		args = append(args, "-u", "nobody")
	}
	cmd := exec.Command(bin, append(args, p.configFile())...)
	cmd.Dir = p.dir
	// An *os.File as Stderr is handed to the process as it is: exec starts
	// no copying goroutine that could outlive the test.
	logFile, err := os.OpenFile(p.logFile(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		p.waitErr = cmd.Wait()
		close(exited)
	}()

	exitedEarly, connErr := awaitReady(pgbouncerReadyTimeout, exited, p.ping)
	switch {
	case connErr == nil:
		return nil
	case exitedEarly:
		p.cmd, p.exited = nil, nil
		return fmt.Errorf("%w (%v); log:\n%s", errPgBouncerExited, p.waitErr, p.Log())
	default:
		_ = cmd.Process.Kill()
		<-exited
		p.cmd, p.exited = nil, nil
		return fmt.Errorf("no statement ran through it within %s: %v; log:\n%s", pgbouncerReadyTimeout, connErr, p.Log())
	}
}

// ping runs an empty statement through PgBouncer, which connects it to
// PostgreSQL.
func (p *PgBouncer) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL(""))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

// stop asks pgbouncer for a fast shutdown (SIGTERM: it closes every
// connection at once), and kills it if it is still there after
// pgbouncerReadyTimeout.
func (p *PgBouncer) stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	// Signal fails only if the process already exited, which Wait reports.
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case <-p.exited:
	case <-time.After(pgbouncerReadyTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		err = fmt.Errorf("still running %s after SIGTERM, killed; log:\n%s", pgbouncerReadyTimeout, p.Log())
	}
	p.cmd, p.exited = nil, nil
	return err
}

// writeConfig writes pgbouncer.ini and the auth file it names, for Addr.
func (p *PgBouncer) writeConfig() error {
	host, port, err := net.SplitHostPort(p.Addr)
	if err != nil {
		return err
	}
	db := p.database
	server := fmt.Sprintf("host=%s port=%d dbname=%s user=%s", connValue(db.Host), db.Port, connValue(db.Database), connValue(db.User))
	if db.Password != "" {
		server += " password=" + connValue(db.Password)
	}
	config := fmt.Sprintf(`[databases]
%s = %s

[pgbouncer]
listen_addr = %s
listen_port = %s
unix_socket_dir =
pidfile =
logfile =
auth_type = trust
auth_file = %s
pool_mode = transaction
default_pool_size = %d
max_client_conn = 1000
log_connections = 0
log_disconnections = 0
`, connValue(db.Database), server, host, port, p.authFile(), PgBouncerPoolSize)
	if err := os.WriteFile(p.configFile(), []byte(config), 0o600); err != nil {
		return err
	}
	// Under auth_type = trust the user must still be listed.
	users := fmt.Sprintf("%q \"\"\n", db.User)
	return os.WriteFile(p.authFile(), []byte(users), 0o600)
}

// connValue quotes v for a libpq-style key=value string, as pgbouncer's
// [databases] section reads one.
func connValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " '\\=") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

func (p *PgBouncer) configFile() string { return filepath.Join(p.dir, "pgbouncer.ini") }
func (p *PgBouncer) authFile() string   { return filepath.Join(p.dir, "userlist.txt") }
func (p *PgBouncer) logFile() string    { return filepath.Join(p.dir, "pgbouncer.log") }

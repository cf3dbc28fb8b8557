package main

// A PostgreSQL cluster of the benchmark's own, for the scenario that reads
// the server's CPU time and WAL: initdb into a temporary directory, one
// postmaster on a free loopback port, gone with its directory after stop.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// errNoPostgres means no initdb and postgres binaries were found.
var errNoPostgres = errors.New("no PostgreSQL server binaries (initdb, postgres): looked in `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH")

// scratchPostgres is a throwaway PostgreSQL cluster: trust authentication,
// loopback only, its data and socket in dir.
type scratchPostgres struct {
	addr    string
	version string
	dir     string
	cmd     *exec.Cmd // the postmaster itself, not a wrapper
	exited  chan struct{}
}

// startScratchPostgres initdbs a cluster into a temporary directory and
// starts it with the given `-c name=value` settings, waiting until it
// accepts connections. PostgreSQL refuses to run as root, so as root both
// run as the postgres OS user, which is given the directory.
func startScratchPostgres(ctx context.Context, settings ...string) (*scratchPostgres, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "bench-postgres-")
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions")
	initdb.Dir, initdb.SysProcAttr = dir, &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w: %s", err, lastLine(string(out)))
	}
	var lastErr error
	for range 3 { // the free port may be taken before the postmaster binds it
		p, err := launchScratchPostgres(ctx, bin, dir, cred, settings)
		if err == nil {
			return p, nil
		}
		lastErr = err
	}
	_ = os.RemoveAll(dir)
	return nil, lastErr
}

func launchScratchPostgres(ctx context.Context, bin, dir string, cred *syscall.Credential, settings []string) (*scratchPostgres, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the postmaster holds its own descriptor
	args := []string{"-D", filepath.Join(dir, "data"), "-p", strconv.Itoa(port), "-k", dir, "-c", "listen_addresses=127.0.0.1"}
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	p := &scratchPostgres{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, exited: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(bin, "postgres"), args...)
	p.cmd.Dir, p.cmd.Stdout, p.cmd.Stderr = dir, logFile, logFile
	// Its own process group keeps a terminal's ^C away from it, so that an
	// interrupted run still stops it in order; Pdeathsig ends it with the
	// benchmark, even one that is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, p.url("postgres"))
		if err == nil {
			err = conn.QueryRow(ctx, `SELECT current_setting('server_version')`).Scan(&p.version)
			_ = conn.Close(ctx)
			if err == nil {
				return p, nil
			}
		}
		select {
		case <-p.exited:
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres on %s exited: %s", p.addr, lastLine(string(log)))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.halt()
			return nil, fmt.Errorf("postgres on %s did not accept connections: %w", p.addr, err)
		}
	}
}

// url returns the URL of database postgres on the cluster, as user.
func (p *scratchPostgres) url(user string) string {
	return fmt.Sprintf("postgres://%s@%s/postgres?sslmode=disable", user, p.addr)
}

// pid is the postmaster's process ID.
func (p *scratchPostgres) pid() int { return p.cmd.Process.Pid }

// stop shuts the cluster down (fast: sessions are ended) and removes its
// directory.
func (p *scratchPostgres) stop() error {
	err := p.halt()
	if rerr := os.RemoveAll(p.dir); err == nil && rerr != nil {
		err = rerr
	}
	return err
}

// halt ends the postmaster, killing it if it ignores a fast shutdown for a
// minute.
func (p *scratchPostgres) halt() error {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
		return nil
	case <-time.After(time.Minute):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("postgres on %s ignored a fast shutdown for 1m; killed", p.addr)
	}
}

// postgresBinDir finds the directory holding initdb and postgres.
func postgresBinDir() (string, error) {
	var dirs []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	versioned, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(versioned, func(a, b string) int { return majorOf(b) - majorOf(a) }) // newest first
	dirs = append(dirs, versioned...)
	if path, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(path))
	}
	for _, d := range dirs {
		if isFile(filepath.Join(d, "initdb")) && isFile(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errNoPostgres
}

// majorOf reads the major version from /usr/lib/postgresql/<major>/bin.
func majorOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// postgresCredential is nil when the benchmark is not root, and otherwise
// the postgres OS user's, which initdb and postgres run as.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as another user, and there is no postgres OS user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

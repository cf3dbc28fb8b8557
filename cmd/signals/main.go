package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals"
)

// usage is the command's help, also shown by go doc (doc.go holds a copy,
// which a test keeps in step).
const usage = `signals operates a dj-signals outbox: its health, its dead letters, its
schema and its relay.

Usage:

	signals status [--json] [--max-pending-age D] [--max-in-flight-age D] [--max-due-ahead D]
	signals dead list [FILTERS] [--limit N] [--json]
	signals dead show [--json] ID|EVENT_ID
	signals dead requeue|discard ID...
	signals dead requeue|discard FILTERS|--all [--limit N] [--yes]
	signals inbox prune --older-than D
	signals migrate [--sql]
	signals relay
	signals web [--addr HOST:PORT] [--read-only] [--trace-url URL]

status prints, per signal and receiver, the rows pending, in flight and
dead with the oldest pending and in-flight ages, and per asynq queue the
tasks in each state and whether a worker serves it; then the problems:
dead letters, a pending row older than --max-pending-age (default 1m), an
in-flight row older than --max-in-flight-age (default off), a row due more
than --max-due-ahead ahead (default 8760h, a year), tasks in a queue no
worker serves, retrying tasks no worker knows the receiver of.

dead lists dead letters, shows one in full, or requeues or discards them.
A dead letter's ID is its delivery's: the ID column of dead list, id in
JSON, task_id in the logs. show takes one, or an event's ID (event_id) to
show the event's letters, one per receiver that failed. Given IDs,
requeue and discard act on them. Given filters (or --all, for every dead
letter) they only show what they would do, unless --yes.

inbox prune removes the inbox rows signals.Once recorded at least D ago,
in chunks of 10,000 rows (signals.Consume keeps no inbox).

migrate creates or upgrades the schema's tables, idempotently, and lists
the migrations it applied; with --sql it prints the migrations instead,
in order, for goose or golang-migrate.

relay runs a Dispatcher, which moves committed outbox rows into asynq,
until SIGINT or SIGTERM, logging to stderr.

web serves the dashboard, the pages of the ledger (dead letters to
requeue or discard, an event and its cascade), at http://127.0.0.1:8080/
by default, until SIGINT or SIGTERM. It takes basic-auth credentials from
SIGNALS_WEB_USER and SIGNALS_WEB_PASSWORD, and refuses an --addr other
than loopback without them (or --no-auth). See package dashboard to mount
the same pages in an application.

Connection flags, for every command:

	--database-url URL  PostgreSQL, postgres://user:password@host:port/database;
	                    defaults to $DATABASE_URL, one of which is required
	--redis-addr ADDR   Redis, host:port or a redis://, rediss:// or
	                    redis-sentinel:// URL, or a cluster's nodes as
	                    redis-cluster://host:port,host:port; defaults to
	                    $REDIS_ADDR, else 127.0.0.1:6379
	--schema NAME       PostgreSQL schema of the outbox (default "signals")
	--timeout D         bound on connecting, on status and dead, and on a page of web (default 10s)

Filters, for dead list, requeue and discard; a letter matches all given:

	--signal NAME       signal name
	--receiver NAME     receiver name
	--older-than D      dead for at least D (30m, 24h)
	--since WHEN        dead at or after WHEN: an RFC 3339 time or a duration ago
	--error TEXT        error contains TEXT, ignoring case

Exit codes:

	0  success; for status, healthy
	1  status: unhealthy, a problem is listed; other commands: failed
	2  usage: unknown command or flag, bad argument
	3  could not check: PostgreSQL or Redis unreachable, or the schema
	   not migrated (run signals migrate --schema NAME)

Run 'signals COMMAND -h' for a command's flags.
`

// Exit codes; see usage.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitCannotCheck = 3
)

var (
	// errUnhealthy ends a status that found problems; it has printed them.
	errUnhealthy = errors.New("unhealthy")
)

// usageError is a mistake in the command line of command ("dead list"),
// or of the command run names when command is empty.
type usageError struct{ command, msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{msg: fmt.Sprintf(format, args...)} }

// schemaError is the usage error of a --schema the library refused; its
// message drops the library's "signals: ", which the command's own prefix
// already says.
func schemaError(err error) error {
	return usagef("--schema: %s", strings.TrimPrefix(err.Error(), "signals: "))
}

// cannotCheckError means a server could not be reached or read.
type cannotCheckError struct{ err error }

func (e cannotCheckError) Error() string { return e.err.Error() }
func (e cannotCheckError) Unwrap() error { return e.err }

// command runs one subcommand with its arguments.
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

var commands = map[string]command{
	"status":  statusCommand,
	"dead":    deadCommand,
	"inbox":   inboxCommand,
	"migrate": migrateCommand,
	"relay":   relayCommand,
	"web":     webCommand,
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && commands[args[1]] != nil {
			return run(ctx, []string{args[1], "-h"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	cmd := commands[args[0]]
	if cmd == nil {
		fmt.Fprintf(stderr, "signals: unknown command %q%s\nrun 'signals -h' for the list\n",
			args[0], didYouMean(suggest(args[0], slices.Sorted(maps.Keys(commands)))))
		return exitUsage
	}
	err := cmd(ctx, args[1:], stdout, stderr)
	var usageErr usageError
	var cannotCheck cannotCheckError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUnhealthy):
		return exitFailed
	case errors.As(err, &usageErr):
		name := cmp.Or(usageErr.command, args[0])
		fmt.Fprintf(stderr, "signals %s: %s\nrun 'signals %s -h' for help\n", name, usageErr.msg, name)
		return exitUsage
	case errors.As(err, &cannotCheck):
		fmt.Fprintf(stderr, "signals %s: %s\n", args[0], message(err))
		return exitCannotCheck
	default:
		fmt.Fprintf(stderr, "signals %s: %s\n", args[0], message(err))
		return exitFailed
	}
}

// message is err's text with each line once. pgx tries each address of a
// server twice under the default sslmode=prefer, with TLS and without, and
// lists both attempts' errors, which for a refused connection are the same.
func message(err error) string {
	var lines []string
	for line := range strings.SplitSeq(err.Error(), "\n") {
		if !slices.Contains(lines, line) {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "\n")
}

// connection is where the outbox lives, from the connection flags.
type connection struct {
	databaseURL, redisAddr, schema string
	timeout                        time.Duration
}

func (c *connection) addFlags(fs *flagSet) {
	fs.StringVar(&c.databaseURL, "database-url", "", "PostgreSQL at `URL`, postgres://user:password@host:port/database (default $DATABASE_URL; one is required)")
	fs.StringVar(&c.redisAddr, "redis-addr", "", "Redis at `ADDR`, a host:port, a redis://, rediss:// or redis-sentinel:// URL, or redis-cluster://host:port,... (default $REDIS_ADDR, else 127.0.0.1:6379)")
	fs.StringVar(&c.schema, "schema", signals.DefaultRegistry.Schema(), "the outbox's PostgreSQL schema `NAME`")
	fs.durationVar(&c.timeout, "timeout", 10*time.Second, "wait at most `D` to connect, for status and dead, and for a page of web")
}

// session is an open connection to the outbox: a pool, the Redis to use,
// a registry without signals on the outbox's schema, and its ledger, which
// is all that reading and repairing the ledger needs.
type session struct {
	conn   *connection
	pool   *pgxpool.Pool
	redis  asynq.RedisConnOpt // nil unless opened withRedis
	reg    *signals.Registry
	ledger *signals.Ledger
}

// open checks the flags, connects to PostgreSQL and, if withRedis, pings
// Redis, so that an unreachable server is named before any work starts.
// The ledger reads Redis only when opened withRedis. The caller closes the
// session.
func (c *connection) open(ctx context.Context, withRedis bool) (*session, error) {
	c.databaseURL = cmp.Or(c.databaseURL, os.Getenv("DATABASE_URL"))
	if c.databaseURL == "" {
		return nil, usagef("no database: set --database-url or DATABASE_URL (as postgres://user:password@host:5432/database)")
	}
	c.redisAddr = cmp.Or(c.redisAddr, os.Getenv("REDIS_ADDR"), "127.0.0.1:6379")
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: c.schema})
	if err != nil {
		return nil, schemaError(err)
	}
	redisOpt, err := c.redisOpt()
	if err != nil {
		return nil, err
	}
	pgCfg, err := pgxpool.ParseConfig(c.databaseURL)
	if err != nil {
		return nil, usagef("--database-url: %v", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pgCfg)
	if err != nil {
		return nil, usagef("--database-url: %v", err)
	}
	s := &session{conn: c, pool: pool, reg: reg}
	pingCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, cannotCheckError{fmt.Errorf("cannot connect to PostgreSQL at %s: %w\n"+
			"check that PostgreSQL runs there and accepts this user and database, and that --database-url or DATABASE_URL is right",
			c.postgresAddr(pgCfg), err)}
	}
	if withRedis {
		s.redis = redisOpt
		if err := s.pingRedis(pingCtx); err != nil {
			pool.Close()
			return nil, err
		}
	}
	s.ledger, err = signals.NewLedger(reg, pool, s.redis)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func (s *session) Close() { s.pool.Close() }

// clusterScheme starts a Redis Cluster's --redis-addr, which asynq's URLs
// cannot name: redis-cluster://[user:password@]host:port[,host:port...].
const clusterScheme = "redis-cluster://"

// redisOpt reads --redis-addr: a host:port, a URL asynq understands
// (redis://, rediss://, redis-socket://, redis-sentinel://), or a cluster's
// nodes after redis-cluster://.
func (c *connection) redisOpt() (asynq.RedisConnOpt, error) {
	if nodes, ok := strings.CutPrefix(c.redisAddr, clusterScheme); ok {
		var opt asynq.RedisClusterClientOpt
		if i := strings.LastIndex(nodes, "@"); i >= 0 {
			opt.Username, opt.Password, _ = strings.Cut(nodes[:i], ":")
			nodes = nodes[i+1:]
		}
		for _, addr := range strings.Split(nodes, ",") {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return nil, usagef("--redis-addr: %s wants host:port nodes separated by commas: %v", clusterScheme, err)
			}
			opt.Addrs = append(opt.Addrs, addr)
		}
		return opt, nil
	}
	if !strings.Contains(c.redisAddr, "://") {
		return asynq.RedisClientOpt{Addr: c.redisAddr}, nil
	}
	opt, err := asynq.ParseRedisURI(c.redisAddr)
	if err != nil {
		return nil, usagef("--redis-addr: %v", err)
	}
	return opt, nil
}

func (s *session) pingRedis(ctx context.Context) error {
	rc, ok := s.redis.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return fmt.Errorf("--redis-addr %s does not make a go-redis client", s.conn.redisLabel())
	}
	defer rc.Close()
	if err := rc.Ping(ctx).Err(); err != nil {
		return cannotCheckError{fmt.Errorf("cannot reach Redis at %s: %w\n"+
			"check that Redis runs there, and that --redis-addr or REDIS_ADDR is right", s.conn.redisLabel(), err)}
	}
	return nil
}

// postgresAddr names the server and database of cfg, without the password.
func (c *connection) postgresAddr(cfg *pgxpool.Config) string {
	cc := cfg.ConnConfig
	return fmt.Sprintf("%s:%d (database %q, user %q)", cc.Host, cc.Port, cc.Database, cc.User)
}

// redisLabel is --redis-addr without a password.
func (c *connection) redisLabel() string {
	if nodes, ok := strings.CutPrefix(c.redisAddr, clusterScheme); ok {
		if i := strings.LastIndex(nodes, "@"); i >= 0 {
			user, _, _ := strings.Cut(nodes[:i], ":")
			return clusterScheme + user + ":xxxxx@" + nodes[i+1:]
		}
		return c.redisAddr
	}
	if u, err := url.Parse(c.redisAddr); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return c.redisAddr
}

// explain turns an error that says the outbox tables are missing or out of
// date into one that says how to fix it, and an error that says a server
// went away into a cannotCheckError.
func (s *session) explain(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "3F000", "42P01", "42703": // invalid_schema_name, undefined_table, undefined_column
			return cannotCheckError{fmt.Errorf("schema %q is not migrated (PostgreSQL says: %s): run signals migrate --schema %s",
				s.conn.schema, pgErr.Message, s.conn.schema)}
		}
		return err
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) || pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) {
		return cannotCheckError{err}
	}
	return err
}

// checkSchema fails with the fix when the schema's tables are missing or
// behind. Reading one dead letter is cheap on any ledger and reads every
// column of the table the latest migrations built on.
func (s *session) checkSchema(ctx context.Context) error {
	_, err := s.ledger.DeadLetters(ctx, signals.DeadFilter{Limit: 1})
	return s.explain(err)
}

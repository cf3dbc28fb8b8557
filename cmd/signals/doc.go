// Command signals operates a dj-signals outbox: its health, its dead letters,
// its schema and its relay. Install it with
//
//	go install github.com/dj-signals/signals/cmd/signals@latest
//
// Usage:
//
//	signals status [--json] [--max-pending-age D] [--max-in-flight-age D] [--max-due-ahead D]
//	signals dead list [FILTERS] [--limit N] [--json]
//	signals dead show [--json] ID|EVENT_ID
//	signals dead requeue|discard ID...
//	signals dead requeue|discard FILTERS|--all [--limit N] [--yes]
//	signals inbox prune --older-than D
//	signals migrate [--sql]
//	signals relay
//	signals web [--addr HOST:PORT] [--read-only] [--trace-url URL]
//
// status prints, per signal and receiver, the rows pending, in flight and
// dead with the oldest pending and in-flight ages, and per asynq queue the
// tasks in each state and whether a worker serves it; then the problems:
// dead letters, a pending row older than --max-pending-age (default 1m), an
// in-flight row older than --max-in-flight-age (default off), a row due more
// than --max-due-ahead ahead (default 8760h, a year), tasks in a queue no
// worker serves, retrying tasks no worker knows the receiver of.
//
// dead lists dead letters, shows one in full, or requeues or discards them.
// A dead letter's ID is its delivery's: the ID column of dead list, id in
// JSON, task_id in the logs. show takes one, or an event's ID (event_id) to
// show the event's letters, one per receiver that failed. Given IDs,
// requeue and discard act on them. Given filters (or --all, for every dead
// letter) they only show what they would do, unless --yes.
//
// inbox prune removes the inbox rows signals.Once recorded at least D ago,
// in chunks of 10,000 rows (signals.Consume keeps no inbox).
//
// migrate creates or upgrades the schema's tables, idempotently, and lists
// the migrations it applied; with --sql it prints the migrations instead,
// in order, for goose or golang-migrate.
//
// relay runs a Dispatcher, which moves committed outbox rows into asynq,
// until SIGINT or SIGTERM, logging to stderr.
//
// web serves the dashboard, the pages of the ledger (dead letters to
// requeue or discard, an event and its cascade), at http://127.0.0.1:8080/
// by default, until SIGINT or SIGTERM. It takes basic-auth credentials from
// SIGNALS_WEB_USER and SIGNALS_WEB_PASSWORD, and refuses an --addr other
// than loopback without them (or --no-auth). See package dashboard to mount
// the same pages in an application.
//
// Connection flags, for every command:
//
//	--database-url URL  PostgreSQL, postgres://user:password@host:port/database;
//	                    defaults to $DATABASE_URL, one of which is required
//	--redis-addr ADDR   Redis, host:port or a redis://, rediss:// or
//	                    redis-sentinel:// URL, or a cluster's nodes as
//	                    redis-cluster://host:port,host:port; defaults to
//	                    $REDIS_ADDR, else 127.0.0.1:6379
//	--schema NAME       PostgreSQL schema of the outbox (default "signals")
//	--timeout D         bound on connecting, on status and dead, and on a page of web (default 10s)
//
// Filters, for dead list, requeue and discard; a letter matches all given:
//
//	--signal NAME       signal name
//	--receiver NAME     receiver name
//	--older-than D      dead for at least D (30m, 24h)
//	--since WHEN        dead at or after WHEN: an RFC 3339 time or a duration ago
//	--error TEXT        error contains TEXT, ignoring case
//
// Exit codes:
//
//	0  success; for status, healthy
//	1  status: unhealthy, a problem is listed; other commands: failed
//	2  usage: unknown command or flag, bad argument
//	3  could not check: PostgreSQL or Redis unreachable, or the schema
//	   not migrated (run signals migrate --schema NAME)
//
// Run 'signals COMMAND -h' for a command's flags.
package main

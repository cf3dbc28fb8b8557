// Package signals makes the side effects of a PostgreSQL transaction
// reliable: a typed [Signal] is sent inside the caller's pgx transaction, and
// every receiver connected to it runs, at least once, if and only if that
// transaction commits.
//
// # Guarantees
//
// PostgreSQL is the ledger and Redis the transport: an outbox row lives
// until its receiver has succeeded or it is recorded as dead. On the happy
// path each event's row is written twice in PostgreSQL, the sender's INSERT
// and the ack's DELETE: which rows are enqueued follows from the
// Dispatchers' position over the sending transactions, kept in Redis beside
// the tasks it accounts for.
//
//   - The sending transaction, or a savepoint around [Signal.SendReliable],
//     rolls back: no receiver ever runs.
//   - The transaction commits: every receiver connected at send time runs at
//     least once.
//   - The process dies right after commit: the rows wait in the outbox and
//     the next [Dispatcher] delivers them.
//   - Redis is down: senders are unaffected, rows accumulate, the Dispatcher
//     backs off and resumes by itself.
//   - Redis loses its data (flushed, restarted empty, failed over): the
//     Dispatcher notices within a second and sends every unfinished event
//     again; a failover to a replica that missed the latest writes is
//     noticed within a second too (Redis went back in time), and the
//     events enqueued since are sent again; a task lost any other way is
//     found after [DispatcherConfig].RepairAge.
//   - The Dispatcher dies between enqueue and recording it: the re-enqueue
//     is recognized as a duplicate by its asynq task ID.
//   - One row cannot be enqueued: it alone waits, then is dead; the others
//     flow.
//   - A receiver fails: only that receiver is retried, with backoff.
//   - A receiver fails for good or its payload cannot be decoded: the
//     delivery is recorded as dead in PostgreSQL with its reason
//     ([Ledger.DeadLetters]), never trimmed.
//   - A worker does not know the signal or receiver: the task is retried,
//     for a newer worker to take, and dead only when its retries run out.
//   - A worker dies mid-receiver: the receiver runs again, whatever its
//     retry budget, about 20 s later ([DispatcherConfig].RecoverAfter),
//     so receivers must be idempotent.
//   - Events are not ordered with respect to each other, unless they carry
//     an ordering key ([OrderingKey], [OrderBy]): then, for each receiver,
//     the events of one key run one at a time in commit order, also while
//     Redis loses its data, and a failing one holds back only its key.
//
// # An event's trip
//
// The package's files follow one event:
//
//   - signal.go: [New] or [Register] declares a [Signal] in a [Registry];
//     [Signal.Connect] wires its receivers.
//   - outbox.go: [Signal.SendReliable] writes one outbox row per connected
//     receiver, with a single statement, in the caller's transaction (the
//     transactional outbox pattern).
//   - dispatcher.go: a [Dispatcher] reads the committed rows past its
//     position through transaction snapshots (so a transaction that commits
//     late is still found), enqueues each as an asynq task whose ID is the
//     row's ID and moves the position past them; it sends again what Redis
//     lost.
//   - worker.go: a [Worker], an asynq server, takes the task from Redis,
//     and afterwards deletes the row (the receiver succeeded) or moves it to
//     the dead letters (dead.go).
//   - deliverer.go: the Worker's deliverer decodes the task, waits for the
//     receiver's limits ([ConcurrencyLimit], [RateLimit]), finds the
//     receiver, calls it inside the middleware and classifies its error:
//     retry with the receiver's backoff, or dead-letter.
//   - receiver.go: the receiver gets an [Event] with the payload and the IDs
//     that make it idempotent; [Consume] and [Once] (once.go) make its
//     effects in PostgreSQL exactly once; signals it sends carry the event
//     as their cause (cascade.go).
//
// registry.go holds who listens to what and the settings all of these share,
// codec.go the [Codec] a registry may encode payloads with (package aesgcm
// is one); middleware.go the hooks around send, enqueue and receive that
// tracing and metrics plug into (the otelsignals module is the
// OpenTelemetry one); ledger.go the operator's view of the outbox: stats.go
// the snapshot an operator reads ([Ledger.Stats], and the signals command's
// status), dead.go the dead letters an operator lists, requeues or
// discards; migrations.go the tables; errors.go every sentinel error.
// Package dashboard serves the Ledger as web pages, with an event's rows
// and its cascade besides.
//
// # Wiring
//
// Define signals as package-level variables with [New], connect receivers in
// init functions with [Signal.Connect], call [Registry.Migrate] once at
// start-up, and run a Dispatcher and a Worker beside the application, all
// on the same Registry ([DefaultRegistry] for signals made with New):
//
//	var OrderPlaced = signals.New[OrderPlacedPayload]("order.placed")
//
//	func init() { OrderPlaced.Connect("email-receipt", emailReceipt) }
//
// Every binary that sends a signal must connect the same receivers: the
// receivers connected at send time are the ones that run.
//
// # Panics and errors
//
// Declaring signals and connecting receivers ([New], [Register],
// [Signal.Connect]) panics on a programmer error, as http.Handle does,
// since it runs at init where an error has nowhere to go; each has a twin
// named ...Safely that returns the error instead ([RegisterSafely],
// [Signal.ConnectSafely]), for wiring done at run time. Everything else,
// constructors included, returns an error. A panic's value is an error
// too: both wrap the sentinels of errors.go, so errors.Is tells them
// apart.
package signals

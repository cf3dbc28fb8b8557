// Package signals makes the side effects of a PostgreSQL transaction
// reliable: a typed [Signal] is sent inside the caller's pgx transaction, and
// every receiver connected to it runs, at least once, if and only if that
// transaction commits.
//
// # Guarantees
//
//   - The sending transaction, or a savepoint around [Signal.SendReliable],
//     rolls back: no receiver ever runs.
//   - The transaction commits: every receiver connected at send time runs at
//     least once.
//   - The process dies right after commit: the rows wait in the outbox and
//     the next [Dispatcher] delivers them.
//   - Redis is down: senders are unaffected, rows accumulate, the Dispatcher
//     backs off and resumes by itself.
//   - The Dispatcher dies between enqueue and delete: the re-enqueue is
//     recognized as a duplicate by its asynq task ID.
//   - A receiver fails: only that receiver is retried, with backoff.
//   - A receiver fails for good, its payload cannot be decoded, or it is
//     unknown: the task is dead-lettered (archived in asynq) with its reason.
//   - A worker dies mid-receiver: asynq's lease expires and the receiver runs
//     again, so receivers must be idempotent.
//   - Events are not ordered with respect to each other.
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
//   - dispatcher.go: a [Dispatcher] claims committed rows with SELECT ...
//     FOR UPDATE SKIP LOCKED, enqueues each as an asynq task whose ID is the
//     row's ID, deletes them and commits.
//   - worker.go: a [Worker], an asynq server, takes the task from Redis.
//   - delivery.go: [Registry.ProcessTask] decodes it, finds the receiver,
//     calls it and classifies its error: retry with the receiver's backoff,
//     or dead-letter.
//   - receiver.go: the receiver gets an [Event] with the payload and the IDs
//     that make it idempotent; [Once] helps with that.
//
// registry.go holds who listens to what and the settings all of these share;
// migrations.go the tables; errors.go every sentinel error.
//
// # Wiring
//
// Define signals as package-level variables with [New], connect receivers in
// init functions with [Signal.Connect], call [Migrate] once at start-up, and
// run a Dispatcher and a Worker beside the application, both built on the
// same Registry ([DefaultRegistry] for signals made with New):
//
//	var OrderPlaced = signals.New[OrderPlacedPayload]("order.placed")
//
//	func init() { OrderPlaced.Connect("email-receipt", emailReceipt) }
//
// Every binary that sends a signal must connect the same receivers: the
// receivers connected at send time are the ones that run.
package signals

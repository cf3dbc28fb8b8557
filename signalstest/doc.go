// Package signalstest helps test code that sends signals and the receivers
// that handle them. It reports through the standard testing package alone,
// with no assertion library of its own, so it fits any.
//
//   - [RequireSent] and [RequireNotSent] check what a transaction sent,
//     before any relay moves it.
//   - [Eager] runs receivers in-process right after each commit, only those
//     of the events its own transactions sent and of their cascade, and
//     returns their errors from Commit, so a failing receiver fails the
//     test.
//   - [Drain] runs a real relay and worker until its registry's outbox rows
//     and tasks are done, for deterministic end-to-end tests, and says what
//     it still waits for when they are not.
//   - [RequireIdempotent] runs a receiver twice with the same event and then
//     the caller's check that the effect happened once.
//
// # Parallel tests
//
// Signals made with signals.New at package level all live in
// signals.DefaultRegistry, on the schema "signals", and every test of the
// binary shares them. What keeps such tests apart when they run with
// t.Parallel:
//
//   - An [Eager] runs the events sent through its own transactions and the
//     signals their receivers send with the ctx they were given, and
//     nothing else: it neither runs nor removes rows that other tests, or
//     the code under test through a plain pool, committed. Give each test
//     its own Eager, or share one: each Commit runs its own events.
//   - [Drain] waits only for the work of its registry's signals, and not
//     for leftovers of an earlier run, so a task of another application in
//     the same queue, or one left retrying by an earlier run, does not hold
//     it.
//
// What does not keep them apart:
//
//   - [Drain] runs a real Dispatcher, which moves every row of the schema
//     to Redis, and a real Worker, which runs every task of its queues: it
//     takes other tests' work, and on a shared registry waits for it too.
//     Drain from tests that do not run in parallel with others on the same
//     schema and queues; use Eager in the parallel ones.
//   - [RequireSent] and [RequireNotSent] through a pool, or through a
//     transaction, see every committed row of the signal, other tests'
//     too: match on the test's own payloads (an ID it made up), or read
//     through the test's transaction before it commits.
//   - A signal a receiver sends with a ctx not derived from its own starts
//     a new cascade that no Eager runs; it stays in the outbox.
//   - Receivers' own effects, in tables or elsewhere, are as shared as the
//     database they write to.
//
// Tests that need none of this sharing give each test its own registry on
// its own schema (signals.NewRegistry, then Registry.Migrate) and its
// own queue names.
package signalstest

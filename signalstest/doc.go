// Package signalstest helps test code that sends signals and the receivers
// that handle them. It depends on the standard testing package only, so it
// fits any assertion library.
//
//   - RequireSent and RequireNotSent check what a transaction sent, before
//     any relay moves it.
//   - Eager runs receivers in-process right after each commit and returns
//     their errors from Commit, so a failing receiver fails the test.
//   - Drain runs a real relay and worker until the outbox and the queues are
//     empty, for deterministic end-to-end tests.
//   - RequireIdempotent runs a receiver twice with the same event and then
//     the caller's check that the effect happened once.
package signalstest

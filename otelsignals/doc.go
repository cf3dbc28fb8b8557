// Package otelsignals is the OpenTelemetry adapter of dj-signals: a
// [signals.Middleware] that traces and counts every send, enqueue and
// receive, and asynchronous gauges that read a Dispatcher's ledger.
//
// It lives in a module of its own, so that the core,
// github.com/dj-signals/signals, keeps no dependency on OpenTelemetry.
//
// # Traces
//
// One trace follows an event from the request that sent it to every
// receiver that ran it. The middleware [New] returns starts a producer span
// at send, as a child of the sender's ctx, and writes its context into the
// event's headers, which are stored with the outbox rows and carried in the
// asynq tasks' headers. It continues that context at enqueue in the
// Dispatcher, and at receive in the Worker, where the receive span's context
// becomes the receiver's ctx: a signal the receiver sends with it (a
// cascade) is a child of the receive span, in the same trace.
//
// # Metrics
//
// The middleware counts deliveries sent, enqueued, turned away as
// duplicates, succeeded, failed and dead, and records the delivery lag and
// the receivers' durations. [ObserveStats] adds gauges of the backlog, its
// oldest ages and the dead letters, read with [signals.Ledger.Stats]
// when the metrics are collected.
//
// The README lists every span, attribute and instrument.
package otelsignals

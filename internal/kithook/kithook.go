// Package kithook connects the module's other packages to what package
// signals keeps unexported: for signalstest, which events a transaction
// sent, running one delivery in-process, reading a payload its Codec
// encoded, a signal's registry and a registry's signals; for ledgerview
// (the dashboard's reads), what a Ledger reads through. None of it belongs
// in the public API.
package kithook

import (
	"context"

	"github.com/hibiken/asynq"

	"github.com/dj-signals/signals/internal/store"
)

// Recorder is implemented by a pgx.Tx wrapper that wants to know what
// SendReliable wrote through it: signalstest.Eager runs exactly the events
// its own transactions sent, and nothing another test or process committed.
// SendReliable calls Sent after its insert succeeded, with the new event's
// ID.
type Recorder interface {
	Sent(eventID [16]byte)
}

// Deliver runs one delivery of task, whose ID is taskID, from queue, with
// the receivers of reg, a *signals.Registry, as a Worker runs it: attempt
// is 1 on the first run, and the run after maxRetry retries is the last. It
// logs nothing, and returns the error as a Worker hands it to asynq, with
// why the delivery is dead if this run's failure is final ("" if a retry
// may succeed). Package signals sets it at initialization.
var Deliver func(ctx context.Context, reg any, task *asynq.Task, taskID, queue string, attempt, maxRetry int) (dead string, err error)

// DecodePayload returns the JSON of a payload as reg, a *signals.Registry,
// stored it: decoded with its Codec when one encoded it. Package signals
// sets it at initialization.
var DecodePayload func(reg any, stored []byte) ([]byte, error)

// RegistryOf returns the registry, a *signals.Registry, of signal, a
// *signals.Signal[T]. Package signals sets it at initialization.
var RegistryOf func(signal any) any

// SignalNames returns the sorted names of the signals of reg, a
// *signals.Registry. Package signals sets it at initialization.
var SignalNames func(reg any) []string

// Ledger is what a *signals.Ledger reads through.
type Ledger struct {
	// Queries are the statements of the ledger's schema; DB its pool.
	Queries *store.Queries
	DB      store.DB
	// Position reads the Dispatchers' position, which tells pending rows
	// from rows in flight: store.Start, and an error, without Redis.
	Position func(context.Context) (store.Position, error)
	// Payload returns a stored payload's JSON, decoded with the registry's
	// Codec, or nil and true when it is encoded and cannot be decoded.
	Payload func(stored []byte) (json []byte, encoded bool)
	// Explain adds the fix to an error that says the tables are missing.
	Explain func(error) error
	// DeadFilter returns f, a signals.DeadFilter, as the store takes it, or
	// an error for an After that no DeadLetter.Cursor returned.
	DeadFilter func(f any) (store.DeadFilter, error)
}

// LedgerOf returns what ledger, a *signals.Ledger, reads through. Package
// signals sets it at initialization.
var LedgerOf func(ledger any) Ledger

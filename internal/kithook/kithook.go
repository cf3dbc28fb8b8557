// Package kithook connects package signalstest to what package signals
// keeps unexported: which events a transaction sent, running one delivery
// in-process, reading a payload its Codec encoded, a signal's registry and
// a registry's signals. None of it belongs in the public API.
package kithook

import (
	"context"

	"github.com/hibiken/asynq"
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

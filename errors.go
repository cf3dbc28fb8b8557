package signals

import (
	"errors"
	"fmt"

	"github.com/dj-signals/signals/internal/envelope"
)

// Wiring errors: the panics of [New], [Register] and [Signal.Connect] wrap
// them, and so do the errors of the constructors ([NewRegistry],
// [NewDispatcher], [NewWorker], [NewLedger]). The message says what was
// wrong and how to fix it.
var (
	// ErrInvalidName is the error of a signal, receiver, queue or schema
	// name that breaks the naming rules; the message says which rule.
	ErrInvalidName = envelope.ErrInvalidName
	// ErrDuplicateName is the error of a signal name a registry already
	// has, or of a receiver name a signal already has.
	ErrDuplicateName = errors.New("signals: duplicate name")
	// ErrInvalidConfig is the error of a config field or option out of
	// range, or of a missing argument; the message names it.
	ErrInvalidConfig = errors.New("signals: invalid config")
)

// Send errors, returned by [Signal.SendReliable]. Each means nothing was
// written.
var (
	// ErrTxUnusable is returned when the transaction cannot take the
	// write: it is nil, already committed or rolled back (the error then
	// also wraps pgx.ErrTxClosed), or aborted by an earlier failed
	// statement, when it only accepts a rollback. The message says which.
	// [Once] and [Consume] return it too.
	ErrTxUnusable = errors.New("signals: transaction unusable")
	// ErrNoReceivers is returned when a signal is sent while no receiver is
	// connected to it, which usually means the package that connects the
	// receivers was not imported by this binary. No statement is sent, so the
	// transaction stays usable; callers that mean to send into the void can
	// check for it with errors.Is and carry on.
	ErrNoReceivers = errors.New("signals: signal has no connected receivers")
	// ErrInvalidEvent is returned when the event cannot be sent as given:
	// its payload cannot be encoded as JSON (channels, funcs, NaN or
	// infinite floats, cyclic values; the error also wraps encoding/json's)
	// or by the registry's [Codec], its JSON exceeds the registry's
	// [RegistryConfig].MaxPayloadBytes, or its ordering key ([OrderingKey],
	// [OrderBy]) is longer than 512 bytes, holds a NUL byte or is not valid
	// UTF-8, or, sent by a receiver, it would take its cascade past the
	// registry's [RegistryConfig].MaxDepth (a signal loop: that delivery
	// is then dead, [ReasonCascadeTooDeep]). The message says which and
	// what to do. [Once] and [Consume] return it for an Event that lacks
	// the IDs a delivery carries.
	ErrInvalidEvent = errors.New("signals: invalid event")
)

// errCascadeTooDeep, wrapped with ErrInvalidEvent, marks a send past
// MaxDepth, for the Worker to bury the sending delivery at once.
var errCascadeTooDeep = errors.New("cascade too deep")

// errNilTx is SendReliable's, Once's and Consume's answer to a nil tx.
var errNilTx = fmt.Errorf("%w: nil transaction: pass the caller's pgx.Tx", ErrTxUnusable)

// Receiver errors. A delivery failing with ErrPermanent (or a send past
// MaxDepth, from a receiver's own send) is dead at once: a retry is bound
// to fail the same way. Every other error is retried, a receiver's panic
// included (its error reads "signals: receiver panicked: ...").
var (
	// ErrPermanent marks a receiver error that retrying cannot fix; see
	// [Permanent].
	ErrPermanent = errors.New("signals: permanent failure")
)

// errReceiverPanic is the error a receiver's recovered panic is turned
// into; it counts as a failed attempt and is retried like any error.
var errReceiverPanic = errors.New("signals: receiver panicked")

// The errors of deliveries the Worker cannot hand to a receiver, which a
// user meets as the reason of a dead letter ([ReasonUndecodable],
// [ReasonUnknownReceiver]) and as its Error text.
var (
	// errUndecodable is the error of a task whose metadata or payload cannot
	// be decoded into the signal's payload type: dead at once.
	errUndecodable = errors.New("signals: task cannot be decoded")
	// errUnknownReceiver is the error of a delivery whose signal or receiver
	// is not in the worker's registry: retried, for a newer worker to take,
	// and dead only when the retries run out.
	errUnknownReceiver = errors.New("signals: unknown signal or receiver")
)

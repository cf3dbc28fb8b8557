package signals

import (
	"errors"
	"fmt"

	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/store"
)

// Wiring errors, returned (or panicked with, by [New], [Signal.Connect] and
// the Must constructors) while signals and receivers are being registered
// and components built.
var (
	// ErrInvalidName is returned for a signal, receiver or queue name that
	// breaks the naming rules; the message says which rule.
	ErrInvalidName = envelope.ErrInvalidName
	// ErrDuplicateSignal is returned when a registry already has a signal
	// with the same name.
	ErrDuplicateSignal = errors.New("signals: duplicate signal name")
	// ErrDuplicateReceiver is returned when a signal already has a receiver
	// with the same name.
	ErrDuplicateReceiver = errors.New("signals: duplicate receiver name")
	// ErrInvalidSchema is returned for a schema name that is not 1 to 63
	// lowercase letters, digits or underscores.
	ErrInvalidSchema = store.ErrInvalidSchema
	// ErrInvalidConfig is returned by constructors for a config field out
	// of range; the message names the field.
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
	// ErrInvalidPayload is returned when the payload cannot be encoded as
	// JSON (channels, funcs, NaN or infinite floats, cyclic values). The
	// error also wraps encoding/json's own error.
	ErrInvalidPayload = errors.New("signals: payload cannot be encoded as JSON")
	// ErrPayloadTooLarge is returned when the encoded payload exceeds the
	// registry's [RegistryConfig].MaxPayloadBytes.
	ErrPayloadTooLarge = errors.New("signals: payload too large")
	// ErrCascadeTooDeep is returned when a receiver's signal would exceed the
	// registry's [RegistryConfig].MaxDepth, which stops an endless loop of
	// signals sending signals.
	ErrCascadeTooDeep = errors.New("signals: cascade too deep")
	// ErrInvalidOrderingKey is returned for an ordering key ([OrderingKey],
	// [OrderBy]) longer than 512 bytes, holding a NUL byte or
	// not valid UTF-8.
	ErrInvalidOrderingKey = errors.New("signals: invalid ordering key")
)

// errNilTx is SendReliable's, Once's and Consume's answer to a nil tx.
var errNilTx = fmt.Errorf("%w: nil transaction: pass the caller's pgx.Tx", ErrTxUnusable)

// Delivery errors, recorded as a dead letter's error. A delivery failing
// with ErrPermanent or ErrUndecodable (or [ErrCascadeTooDeep], from a
// receiver's own send) is not retried: a retry is bound to fail the same
// way. ErrUnknownReceiver is retried, for a newer worker to take, and dead
// only when the retries run out.
var (
	// ErrPermanent marks a receiver error that retrying cannot fix; see
	// [Permanent].
	ErrPermanent = errors.New("signals: permanent failure")
	// ErrUnknownReceiver is the error of a delivery whose signal or
	// receiver is not in the worker's registry.
	ErrUnknownReceiver = errors.New("signals: unknown signal or receiver")
	// ErrUndecodable is the error of a task whose metadata or payload cannot
	// be decoded into the signal's payload type.
	ErrUndecodable = errors.New("signals: task cannot be decoded")
)

// Receiver-side errors.
var (
	// ErrReceiverPanic is the error a receiver's recovered panic is turned
	// into; it counts as a failed attempt and is retried like any error.
	ErrReceiverPanic = errors.New("signals: receiver panicked")
	// ErrInvalidEvent is returned by [Once] for an Event that lacks the IDs
	// a delivery carries.
	ErrInvalidEvent = errors.New("signals: invalid event")
)

// Package envelope is the wire format between the relay and the workers: the
// asynq task type names the signal and receiver, headers carry the event's
// metadata, and the task payload is the sender's JSON, untouched.
package envelope

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// TypePrefix starts the asynq task type of every signal task.
const TypePrefix = "signals:"

// ReservedPrefix starts the headers the library writes; an event's own
// headers (a middleware's trace context) must not use it.
const ReservedPrefix = "signals-"

const (
	headerTaskID        = "signals-task-id"
	headerEventID       = "signals-event-id"
	headerCorrelationID = "signals-correlation-id"
	headerCausationID   = "signals-causation-id"
	headerDepth         = "signals-depth"
	headerTimeout       = "signals-timeout-ms"
	headerOrderingKey   = "signals-ordering-key"
	headerSchema        = "signals-schema"
	headerXID           = "signals-xid"
	headerEnqueuedAt    = "signals-enqueued-ms"
)

// legacyXID is the transaction ID of rows written before tasks carried
// one: the migration that added it gave them all xid 1.
const legacyXID = 1

// Meta is everything a worker needs besides the payload.
type Meta struct {
	Schema        string // the outbox's schema: a worker runs only its own registry's tasks; "" in tasks of older relays
	Signal        string
	Receiver      string
	XID           uint64 // the sending transaction's ID: with TaskID, the row's key
	TaskID        ulid.ULID
	EventID       ulid.ULID
	CorrelationID ulid.ULID
	CausationID   ulid.ULID // zero for a root event
	Depth         int
	Timeout       time.Duration
	OrderingKey   string            // "" for none
	EnqueuedAt    time.Time         // the relay's enqueue; zero in tasks of older relays
	Headers       map[string]string // the event's own, set by middleware at send
}

// TaskType returns the asynq task type for a signal's receiver.
func TaskType(signal, receiver string) string {
	return TypePrefix + signal + ":" + receiver
}

// Headers encodes m's event metadata, and the event's own headers beside
// it, as asynq task headers.
func Headers(m Meta) map[string]string {
	h := map[string]string{
		headerTaskID:        m.TaskID.String(),
		headerEventID:       m.EventID.String(),
		headerCorrelationID: m.CorrelationID.String(),
		headerDepth:         strconv.Itoa(m.Depth),
		headerTimeout:       strconv.FormatInt(m.Timeout.Milliseconds(), 10),
	}
	if m.Schema != "" {
		h[headerSchema] = m.Schema
	}
	if m.XID != 0 {
		h[headerXID] = strconv.FormatUint(m.XID, 10)
	}
	if !m.EnqueuedAt.IsZero() {
		h[headerEnqueuedAt] = strconv.FormatInt(m.EnqueuedAt.UnixMilli(), 10)
	}
	if m.CausationID != (ulid.ULID{}) {
		h[headerCausationID] = m.CausationID.String()
	}
	if m.OrderingKey != "" {
		h[headerOrderingKey] = m.OrderingKey
	}
	for k, v := range m.Headers {
		if !strings.HasPrefix(k, ReservedPrefix) {
			h[k] = v
		}
	}
	return h
}

// SplitType returns the signal and receiver a task type addresses, or false
// if it is not a signal task's type.
func SplitType(taskType string) (signal, receiver string, ok bool) {
	rest, ok := strings.CutPrefix(taskType, TypePrefix)
	if !ok {
		return "", "", false
	}
	signal, receiver, ok = strings.Cut(rest, ":")
	return signal, receiver, ok && signal != "" && receiver != ""
}

// ErrMalformed reports a task this package did not write, or wrote differently.
var ErrMalformed = errors.New("malformed signal task")

// Decode reads the metadata back from a task's type and headers.
func Decode(taskType string, headers map[string]string) (Meta, error) {
	var m Meta
	var ok bool
	if m.Signal, m.Receiver, ok = SplitType(taskType); !ok {
		return m, fmt.Errorf("%w: task type %q is not %q", ErrMalformed, taskType, TypePrefix+"<signal>:<receiver>")
	}
	var err error
	if m.TaskID, err = ulid.ParseStrict(headers[headerTaskID]); err != nil {
		return m, fmt.Errorf("%w: header %s: %v", ErrMalformed, headerTaskID, err)
	}
	if m.EventID, err = ulid.ParseStrict(headers[headerEventID]); err != nil {
		return m, fmt.Errorf("%w: header %s: %v", ErrMalformed, headerEventID, err)
	}
	if m.CorrelationID, err = ulid.ParseStrict(headers[headerCorrelationID]); err != nil {
		return m, fmt.Errorf("%w: header %s: %v", ErrMalformed, headerCorrelationID, err)
	}
	if v, ok := headers[headerCausationID]; ok {
		if m.CausationID, err = ulid.ParseStrict(v); err != nil {
			return m, fmt.Errorf("%w: header %s: %v", ErrMalformed, headerCausationID, err)
		}
	}
	if m.Depth, err = strconv.Atoi(headers[headerDepth]); err != nil || m.Depth < 0 {
		return m, fmt.Errorf("%w: header %s: %q", ErrMalformed, headerDepth, headers[headerDepth])
	}
	ms, err := strconv.ParseInt(headers[headerTimeout], 10, 64)
	if err != nil || ms <= 0 {
		return m, fmt.Errorf("%w: header %s: %q", ErrMalformed, headerTimeout, headers[headerTimeout])
	}
	m.Timeout = time.Duration(ms) * time.Millisecond
	m.OrderingKey = headers[headerOrderingKey]
	m.Schema = headers[headerSchema]
	if v, ok := headers[headerEnqueuedAt]; ok {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return m, fmt.Errorf("%w: header %s: %q", ErrMalformed, headerEnqueuedAt, v)
		}
		m.EnqueuedAt = time.UnixMilli(ms)
	}
	m.XID = legacyXID
	if v, ok := headers[headerXID]; ok {
		if m.XID, err = strconv.ParseUint(v, 10, 64); err != nil || m.XID == 0 {
			return m, fmt.Errorf("%w: header %s: %q", ErrMalformed, headerXID, v)
		}
	}
	for k, v := range headers {
		if !strings.HasPrefix(k, ReservedPrefix) {
			if m.Headers == nil {
				m.Headers = map[string]string{}
			}
			m.Headers[k] = v
		}
	}
	return m, nil
}

// TaskID returns the asynq task ID of an outbox row: the row's ID, with the
// row's generation appended once a requeue from dead gave it a fresh one
// (asynq refuses an ID its archive still holds).
func TaskID(rowID ulid.ULID, generation int) string {
	if generation == 0 {
		return rowID.String()
	}
	return rowID.String() + "-" + strconv.Itoa(generation)
}

// RowID reads the outbox row's ID back from an asynq task ID made by TaskID.
func RowID(taskID string) (ulid.ULID, bool) {
	if len(taskID) < ulid.EncodedSize {
		return ulid.ULID{}, false
	}
	id, err := ulid.ParseStrict(taskID[:ulid.EncodedSize])
	return id, err == nil
}

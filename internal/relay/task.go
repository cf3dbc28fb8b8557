package relay

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/store"
)

// errInvalidRow marks a row that no retry can enqueue.
var errInvalidRow = errors.New("row cannot be enqueued")

// maxTimeoutMS is the largest timeout_ms a time.Duration can hold.
const maxTimeoutMS = math.MaxInt64 / int64(time.Millisecond)

// Task turns an outbox row of schema into its asynq task and enqueue
// options, or explains why no retry could ever enqueue it.
func Task(row store.Row, schema string, retention time.Duration) (*asynq.Task, []asynq.Option, error) {
	if row.TimeoutMS <= 0 || row.TimeoutMS > maxTimeoutMS || row.MaxRetry < 0 || row.Depth < 0 {
		return nil, nil, fmt.Errorf("%w: timeout_ms %d (1 to %d), max_retry %d, depth %d out of range",
			errInvalidRow, row.TimeoutMS, maxTimeoutMS, row.MaxRetry, row.Depth)
	}
	for _, err := range []error{
		envelope.ValidateSignal(row.Signal),
		envelope.ValidateReceiver(row.Receiver),
		envelope.ValidateQueue(row.Queue),
	} {
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", errInvalidRow, err)
		}
	}
	meta := envelope.Meta{
		Schema:        schema,
		Signal:        row.Signal,
		Receiver:      row.Receiver,
		XID:           row.XID,
		TaskID:        row.ID,
		EventID:       row.EventID,
		CorrelationID: row.CorrelationID,
		Depth:         row.Depth,
		Timeout:       time.Duration(row.TimeoutMS) * time.Millisecond,
		Headers:       row.Headers,
		EnqueuedAt:    time.Now(),
	}
	if row.OrderingKey != nil {
		meta.OrderingKey = *row.OrderingKey
	}
	if row.CausationID != nil {
		meta.CausationID = *row.CausationID
	}
	// asynq keeps timeouts in whole seconds; the worker enforces the exact
	// value from the header, asynq only needs a lease at least that long.
	seconds := time.Duration(math.Ceil(meta.Timeout.Seconds())) * time.Second
	opts := []asynq.Option{
		asynq.TaskID(envelope.TaskID(ulid.ULID(row.ID), row.Generation)),
		asynq.Queue(row.Queue),
		asynq.MaxRetry(row.MaxRetry),
		asynq.Timeout(seconds),
		asynq.Retention(retention),
	}
	if row.ProcessAt != nil {
		// asynq schedules in whole Unix seconds and forwards a task once the
		// clock's second reaches it: round up so it never runs early.
		opts = append(opts, asynq.ProcessAt(ceilSecond(*row.ProcessAt)))
	}
	return asynq.NewTaskWithHeaders(envelope.TaskType(row.Signal, row.Receiver), row.Payload, envelope.Headers(meta)), opts, nil
}

func ceilSecond(t time.Time) time.Time {
	if s := t.Truncate(time.Second); !s.Equal(t) {
		return s.Add(time.Second)
	}
	return t
}

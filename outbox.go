package signals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/kithook"
	"github.com/dj-signals/signals/internal/store"
	"github.com/dj-signals/signals/internal/wake"
)

// SendOption tunes one [Signal.SendReliable] call.
type SendOption func(*sendOptions)

type sendOptions struct {
	processAt   time.Time
	orderingKey string
}

// At delivers the event no earlier than t; for a delay d, pass
// time.Now().Add(d). A time in the past means at once. asynq schedules to
// the whole second, so the receivers start within about a second plus
// [WorkerConfig].DelayedTaskCheckInterval after t.
func At(t time.Time) SendOption {
	return func(o *sendOptions) { o.processAt = t }
}

// maxOrderingKeyBytes is the longest ordering key SendReliable accepts.
const maxOrderingKeyBytes = 512

// OrderingKey gives the event an ordering key for every receiver: each
// receiver runs the events of one key one at a time, in commit order,
// while events of different keys run in parallel. It takes precedence over
// a receiver's [OrderBy]; "" gives no key of its own and leaves OrderBy's
// in effect. Keys are UTF-8 text of at most 512 bytes, without NUL.
//
// "Commit order" is the order in which the senders' SendReliable calls
// drew a number from the database. For transactions that lock what they
// change (the order, the customer) before they send, that is the order
// they committed in. Two transactions sending the same key without a
// common lock have no order between them to keep: each event still runs
// alone, but either may run first.
func OrderingKey(key string) SendOption {
	return func(o *sendOptions) { o.orderingKey = key }
}

// SendReliable writes one outbox row per connected receiver inside tx, with
// a single statement, and returns the new event's ID. If tx (or a savepoint
// around the call) rolls back, no receiver ever runs; once it commits, every
// receiver connected at this moment runs at least once.
//
// Validation comes first and sends nothing, leaving tx usable: a nil tx
// ([ErrTxUnusable]), a payload JSON (or the registry's [Codec]) cannot
// encode, a payload above the registry's MaxPayloadBytes, or an ordering
// key that is too long, holds a NUL or is not UTF-8 ([ErrInvalidEvent] for
// these three), no connected receiver ([ErrNoReceivers]), a cascade beyond
// MaxDepth ([ErrInvalidEvent]). A finished or aborted tx yields
// [ErrTxUnusable] too.
//
// Called from inside a receiver (with the receiver's ctx), the new event
// records the receiver's event as its cause.
func (s *Signal[T]) SendReliable(ctx context.Context, tx pgx.Tx, payload T, opts ...SendOption) (ulid.ULID, error) {
	if tx == nil {
		return ulid.ULID{}, errNilTx
	}
	var so sendOptions
	for _, opt := range opts {
		opt(&so)
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return ulid.ULID{}, fmt.Errorf("%w: signal %q: the payload cannot be encoded as JSON: %w", ErrInvalidEvent, s.name, err)
	}
	if len(body) > s.reg.cfg.MaxPayloadBytes {
		return ulid.ULID{}, fmt.Errorf("%w: signal %q: the payload's %d bytes of JSON exceed the limit of %d: send IDs, not documents, or raise RegistryConfig.MaxPayloadBytes",
			ErrInvalidEvent, s.name, len(body), s.reg.cfg.MaxPayloadBytes)
	}

	s.mu.RLock()
	targets := make([]store.Target, len(s.targets))
	copy(targets, s.targets)
	keyOf := s.keyOf // Connect only appends: these entries never change
	s.mu.RUnlock()
	if len(targets) == 0 {
		return ulid.ULID{}, fmt.Errorf("%w: %q: import the package that connects its receivers (init wiring) in this binary", ErrNoReceivers, s.name)
	}

	stored, err := s.reg.encodePayload(body)
	if err != nil {
		return ulid.ULID{}, fmt.Errorf("%w: signal %q: %w", ErrInvalidEvent, s.name, err)
	}
	event := store.Event{ID: ulid.Make(), Signal: s.name, Payload: stored}
	event.CorrelationID = event.ID
	if cause, ok := causeFrom(ctx); ok {
		event.Depth = cause.Depth + 1
		if event.Depth > s.reg.cfg.MaxDepth {
			return ulid.ULID{}, fmt.Errorf("%w: %w: sending %q from receiver %q of %q would reach depth %d, above MaxDepth %d: a signal loop?",
				ErrInvalidEvent, errCascadeTooDeep, s.name, cause.Receiver, cause.Signal, event.Depth, s.reg.cfg.MaxDepth)
		}
		event.CorrelationID = cause.CorrelationID
		causation := [16]byte(cause.EventID)
		event.CausationID = &causation
	}
	if !so.processAt.IsZero() && so.processAt.After(time.Now()) {
		event.ProcessAt = &so.processAt
	}
	keyed := false
	for i := range targets {
		targets[i].TaskID = ulid.Make()
		switch {
		case so.orderingKey != "":
			targets[i].OrderingKey = so.orderingKey
		case keyOf[i] != nil:
			targets[i].OrderingKey = keyOf[i](payload)
		}
		keyed = keyed || targets[i].OrderingKey != ""
		if err := validOrderingKey(targets[i].OrderingKey); err != nil {
			return ulid.ULID{}, fmt.Errorf("%w: signal %q, receiver %q: %s", ErrInvalidEvent, s.name, targets[i].Receiver, err)
		}
	}

	write := func(ctx context.Context) error { return s.reg.queries.Insert(ctx, tx, event, targets) }
	if mws := s.reg.wraps(); len(mws) > 0 {
		info := &SendInfo{Signal: s.name, EventID: event.ID, CorrelationID: event.CorrelationID, Depth: event.Depth}
		if event.CausationID != nil {
			info.CausationID = *event.CausationID
		}
		for _, t := range targets {
			info.Receivers = append(info.Receivers, t.Receiver)
		}
		err = wrap(ctx, mws, Middleware.sendHook, info, func(ctx context.Context) error {
			for k := range info.Headers {
				if strings.HasPrefix(k, envelope.ReservedPrefix) {
					return fmt.Errorf("%w: a middleware set header %q, whose prefix %q the library keeps for itself", ErrInvalidConfig, k, envelope.ReservedPrefix)
				}
			}
			event.Headers = info.Headers
			return write(ctx)
		})
	} else {
		err = write(ctx)
	}
	if err != nil {
		return ulid.ULID{}, s.sendError(err)
	}
	if r, ok := tx.(kithook.Recorder); ok {
		r.Sent(event.ID)
	}
	if keyed {
		wake.NotifyKeyed(s.reg.Schema())
	} else {
		wake.Notify(s.reg.Schema())
	}
	return event.ID, nil
}

// validOrderingKey says what is wrong with key, if anything: PostgreSQL's
// text holds no NUL, and a key is an index entry, which must stay small.
func validOrderingKey(key string) error {
	if len(key) > maxOrderingKeyBytes {
		return fmt.Errorf("ordering key of %d bytes is longer than %d: use an ID, not a document", len(key), maxOrderingKeyBytes)
	}
	if strings.IndexByte(key, 0) >= 0 {
		return errors.New("ordering key holds a NUL byte, which PostgreSQL text cannot store")
	}
	if !utf8.ValidString(key) {
		return errors.New("ordering key is not valid UTF-8, which PostgreSQL text cannot store: encode binary IDs, in hex say")
	}
	return nil
}

func (s *Signal[T]) sendError(err error) error {
	if errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("%w: send %q: it was already committed or rolled back: %w", ErrTxUnusable, s.name, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "25P02" { // in_failed_sql_transaction
		return fmt.Errorf("%w: send %q: an earlier statement failed and aborted it; roll it back: %w", ErrTxUnusable, s.name, err)
	}
	if store.TablesMissing(err) {
		return fmt.Errorf("signals: send %q: %w", s.name, missingTables(s.reg.Schema(), err))
	}
	return fmt.Errorf("signals: send %q: write outbox rows: %w", s.name, err)
}

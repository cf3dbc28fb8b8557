package signals

import (
	"context"

	"github.com/dj-signals/signals/internal/envelope"
)

// causeKey carries, in a receiver's ctx, the event being handled.
type causeKey struct{}

// withCause records the event being handled so that signals sent by its
// receiver carry causation, correlation and depth.
func withCause(ctx context.Context, m envelope.Meta) context.Context {
	return context.WithValue(ctx, causeKey{}, m)
}

// causeFrom returns the event whose receiver runs with ctx, if any: the
// cause of the signals it sends.
func causeFrom(ctx context.Context) (envelope.Meta, bool) {
	m, ok := ctx.Value(causeKey{}).(envelope.Meta)
	return m, ok
}
